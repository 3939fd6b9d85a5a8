"""The paper's 20 Newsgroups sweep: fine-tuning through the MLM head against a classification head.

    python sweep_20newsgroups.py                       # SetFit/20_newsgroups from the hub
    python sweep_20newsgroups.py --data_dir ~/20newsgroups --strip_headers   # local train.jsonl and test.jsonl
    python sweep_20newsgroups.py --head mlm --learning_rates 3e-5 --epochs 1 --max_train_samples 2000

sweep.py's sweep of one task, 20 Newsgroups (`python sweep.py --tasks 20newsgroups` runs the same grid), with its
files where this command always put them: the runs directly under --output_dir and --data_dir holding train.jsonl
and test.jsonl. The MLM head (ModernBERT-Large-Instruct, Answer Token Prediction through train.py) answers with a
letter A-T after `[unused0]`, in the published sweep's prompt unless --prompt_file gives another; the
classification head (`AutoModelForSequenceClassification` on ModernBERT-Large) reads the raw text. Each
run starts from its base model and writes `<output_dir>/<run>/metrics.json` when it ends; a run whose
metrics exist is skipped, so an interrupted sweep resumes where it stopped. Validation accuracy (a
stratified slice of train) selects the best run; test accuracy is reported for every run and never used
to choose.
"""

import mlm_classifier as mc
import sweep
from mlm_classifier.recipes import NEWSGROUPS, RECIPES, load_rows, strip_post  # noqa: F401
from sweep import (accumulation_steps, load_finished, make_grid, metrics_path, seeded_sample,  # noqa: F401
                   select_best, stratified_split, summary_rows, unique)

RECIPE = RECIPES["20newsgroups"]
LABEL_MAP = RECIPE.label_map  # A to T, in NEWSGROUPS' order
PROMPT = RECIPE.prompt  # the published sweep's template, character for character
PROMPT_SOURCE = RECIPE.prompt_source  # "the published 20 Newsgroups prompt"


def load_newsgroups(data_dir, strip_headers):
    """(train rows, test rows) from local JSONL files (optionally stripped) or the hub's SetFit/20_newsgroups; each
    row {"text": the post, "label_text": its newsgroup}, checked."""
    rows = load_rows(RECIPE, data_dir, strip_headers and bool(data_dir))
    return rows["train"], rows["test"]


def to_splits(samples, prompt=PROMPT):
    """{name: mlm_classifier.Split} from {name: rows}, each post stripped as the published template strips it."""
    return sweep.to_splits(samples, mc.parse_prompt(prompt), RECIPE)


def run_settings(args, head, prompt=None):
    """What defines a run's result besides its grid point (sweep.run_settings for 20 Newsgroups)."""
    return sweep.run_settings(args, head, prompt, RECIPE, args.data_dir)


def build_parser():
    return sweep.build_parser(RECIPE, __doc__)


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    """Run the 20 Newsgroups sweep; returns {run name: metrics}."""
    return sweep.main(argv, task=RECIPE, doc=__doc__)


if __name__ == "__main__":
    mc.run_command(main)
