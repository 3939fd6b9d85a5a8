"""The paper's fine-tuning sweep (its Table 3): the MLM head against a classification head, on its seven tasks.

    python sweep.py                                    # all seven tasks from the hub, the paper's grid
    python sweep.py --tasks ag_news sst2 --data_dir ~/table3   # local copies: ~/table3/ag_news/train.jsonl, ...
    python sweep.py --tasks mnli --head mlm --learning_rates 3e-5 --epochs 1 --max_train_samples 2000

Each task is a recipe (mlm_classifier/recipes.py): MNLI, Yahoo! Answers, 20 Newsgroups, AG News, SST-2, IMDB and
SST-5. The MLM head (ModernBERT-Large-Instruct, Answer Token Prediction) answers after `[unused0]` in the task's
prompt; the classification head (ModernBERT-Large) reads the raw text. Each run writes
`<output_dir>/<task>/<run>/metrics.json` when it ends, and a finished run is skipped, so an interrupted sweep resumes.
Validation accuracy (a stratified slice of train) selects the best run of each head; test accuracy is never used to
choose. `<output_dir>/table3.md` puts the selected runs beside the paper's figures.
"""

from dataclasses import dataclass

from transformers.hf_argparser import HfArg

from mlm_classifier.cli import make_parser, parse, run_command
from mlm_classifier.recipes import RECIPES
from mlm_classifier.sweeps import run_sweep
from mlm_classifier.table3 import SweepSettings, unique


@dataclass
class Tasks:
    tasks: list[str] = HfArg(default_factory=lambda: list(RECIPES), help="the tasks to run, each a recipe (all "
                             "seven unless given, in Table 3's order)", metadata={"choices": list(RECIPES)})


def build_parser():
    return make_parser(__doc__, Tasks, SweepSettings)


def main(argv=None):
    """Run the sweep; returns {task: {run name: metrics}}."""
    tasks, settings = parse(build_parser(), argv)
    return run_sweep(settings, [RECIPES[name] for name in unique(tasks.tasks)])


if __name__ == "__main__":
    run_command(main)
