"""The paper's 20 Newsgroups sweep: fine-tuning through the MLM head against a classification head.

    python sweep_20newsgroups.py                       # SetFit/20_newsgroups from the hub
    python sweep_20newsgroups.py --data_dir ~/20newsgroups --strip_headers   # local train.jsonl and test.jsonl
    python sweep_20newsgroups.py --head mlm --learning_rates 3e-5 --epochs 1 --max_train_samples 2000

The sweep of sweep.py for one task (`python sweep.py --tasks 20newsgroups` runs the same grid), with the runs
directly under --output_dir and --data_dir holding train.jsonl and test.jsonl. The MLM head answers with a letter
A-T in the published sweep's prompt unless --prompt_file gives another; the classification head reads the raw text.
"""

from mlm_classifier.cli import make_parser, parse, run_command
from mlm_classifier.recipes import RECIPES
from mlm_classifier.sweeps import run_sweep
from mlm_classifier.table3 import SweepSettings

RECIPE = RECIPES["20newsgroups"]


def build_parser():
    return make_parser(__doc__, SweepSettings)


def main(argv=None):
    """Run the 20 Newsgroups sweep; returns {run name: metrics}."""
    settings, = parse(build_parser(), argv)
    return run_sweep(settings, [RECIPE], single=True)[RECIPE.name]


if __name__ == "__main__":
    run_command(main)
