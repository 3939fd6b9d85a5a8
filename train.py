"""Fine-tune a masked LM as a generative classifier through its MLM head: Answer Token Prediction.

The method of *It's All in The [MASK]* (Clavié, Cooper, Warner, 2025): the prompt ends with `Answer: [unused0]
{label}`, the label's verbalizer (one token) is replaced by [MASK], and the model learns to predict it with the MLM
head it already has. Optionally a share of the examples gets standard or dummy MLM, as in the paper.

    python train.py                                   # AG News from the hub, the published prompt and label map
    python train.py --label_map labels.json --prompt_file prompt.txt \\
        --train_file train.csv --test_file test.csv --text_column text --label_column label_text
    torchrun --nproc_per_node 2 train.py ...          # data-parallel (transformers' Trainer)

The saved folder is a plain masked LM with `label_map.json`, `prompt.txt` and `classifier.json` (what
classify.py and `MLMClassifier` need to use it), `metrics.json`, `trainer_state.json` and a model card.
With --multi_label each text has any number of labels, and every label is a yes/no question of its own.
"""

from dataclasses import dataclass

from transformers.hf_argparser import HfArg

import mlm_classifier as mc
from mlm_classifier.checkpoints import (check_inputs_are_spared, earlier_run, remove_earlier_run,
                                        resolve_checkpoint)
from mlm_classifier.cli import check_positive, make_parser, on_interrupt, parse, run_command
from mlm_classifier.data import check_output_path, read_label_map, read_prompt
from mlm_classifier.errors import InputError
from mlm_classifier.models import check_model_source, end_distributed
from mlm_classifier.multilabel import MULTI_LABEL_PROMPT
from mlm_classifier.prompts import template_columns
from mlm_classifier.recipes import AG_NEWS_LABEL_MAP, AG_NEWS_PROMPT
from mlm_classifier.splits import load_splits
from mlm_classifier.training import TrainSettings, prepare, training_template


@dataclass
class DataArguments:
    """train.py's data, prompt and label flags; the training flags are TrainSettings'."""
    dataset: str = HfArg(default="SetFit/ag_news", help="hub dataset (its train and test splits), used without "
                                                        "--train_file")
    train_file: str | None = HfArg(default=None, help="csv, json, jsonl or parquet")
    validation_file: str | None = HfArg(default=None, help="picks the best checkpoint by accuracy")
    test_file: str | None = HfArg(default=None, help="replaces the hub's test split")
    predict_file: str | None = HfArg(default=None, help="texts to label: writes predictions.jsonl")
    text_column: str = HfArg(default="text", help="the column that fills {text}; a prompt's other {name} "
                                                  "placeholders name columns themselves")
    label_column: str = HfArg(default="label_text", help="the column holding the raw labels")
    multi_label: bool = HfArg(default=False, help="each text has any number of labels (a list, or a string split at "
                              "--label_separator): every label becomes a yes/no question, one example per (text, "
                              "label)")
    label_separator: str = HfArg(default=",", help="splits a multi-label string cell into labels")
    max_train_samples: int | None = HfArg(default=None, help="at most this many training rows, seeded")
    max_eval_samples: int | None = HfArg(default=None, help="at most this many validation and test rows, seeded")
    validation_fraction: float = HfArg(default=0.0, help="hold out this share of the training rows")
    label_map: str | None = HfArg(default=None, help="JSON {raw label: verbalizer} (unset: the published AG News map)")
    prompt_file: str | None = HfArg(default=None, help="template with {text} (or {txt}) or placeholders naming "
                                    "columns ({premise}, {hypothesis}), optional {options}, ending in `[unused0] "
                                    "{label}` (unset: the published AG News prompt)")
    true_mlm_proportion: float | None = HfArg(default=None, help="published spelling: this share gets standard "
                                              "MLM, or dummy MLM with --dummy_examples")
    dummy_examples: bool = HfArg(default=False, help="published: --true_mlm_proportion means dummy MLM")
    overwrite_output_dir: bool = HfArg(default=False, help="replace the trained folder and checkpoints an earlier run "
                                       "left in --output_dir")

    def __post_init__(self):
        check_positive(max_train_samples=self.max_train_samples, max_eval_samples=self.max_eval_samples)
        if self.validation_file and self.validation_fraction:
            raise InputError("give --validation_file or --validation_fraction, not both")
        if not 0 <= self.validation_fraction < 1:
            raise InputError(f"--validation_fraction {self.validation_fraction} must be in [0, 1)")
        if self.dummy_examples and self.true_mlm_proportion is None:
            raise InputError("--dummy_examples needs --true_mlm_proportion, the share of dummy MLM examples")
        if self.multi_label and not self.label_map:
            raise InputError("--multi_label needs --label_map: {raw label: the name its yes/no question shows}")
        if self.multi_label and not self.label_separator:
            raise InputError("--label_separator is empty; a multi-label string cell is split at it (e.g. ',')")

    def objectives(self, settings):
        """The settings with the published --true_mlm_proportion (and --dummy_examples) put into the two shares."""
        if self.true_mlm_proportion is None:
            return settings
        if settings.mlm_proportion or settings.dummy_mlm_proportion:
            raise InputError("--true_mlm_proportion/--dummy_examples (the published flags) cannot be combined with "
                             "--mlm_proportion/--dummy_mlm_proportion; use one pair")
        share = "dummy_mlm_proportion" if self.dummy_examples else "mlm_proportion"
        return TrainSettings(**{**vars(settings), share: self.true_mlm_proportion})


def build_parser():
    return make_parser(__doc__, DataArguments, TrainSettings)


def main(argv=None):
    """Train, evaluate and save; returns the metrics written to metrics.json."""
    args, settings = parse(build_parser(), argv)
    settings = args.objectives(settings)
    # 0. Before anything loads: the flags together, the output folder (never over an input), the checkpoint.
    if settings.eval_strategy not in ("auto", "no") and not (args.validation_file or args.validation_fraction):
        raise InputError(f"--eval_strategy {settings.eval_strategy} needs a validation set: give --validation_file or "
                         "--validation_fraction (the test set is never used to pick a checkpoint)")
    check_output_path(settings.output_dir, "--output_dir", folder=True)
    check_inputs_are_spared(settings.output_dir, [("--model", settings.model)] + [
        (f"--{name}", getattr(args, name))
        for name in ("train_file", "validation_file", "test_file", "predict_file", "label_map", "prompt_file")])
    check_model_source(settings.model)
    settings.resume_from_checkpoint = resolve_checkpoint(settings.resume_from_checkpoint, settings.output_dir)
    earlier = earlier_run(settings.output_dir, settings.resume_from_checkpoint, args.overwrite_output_dir)
    on_interrupt(f"interrupted: no model saved; any checkpoint-<step>/ saved so far is under {settings.output_dir}, "
                 "from which the same command with --resume_from_checkpoint last carries on")

    # 1. The prompt (a bad one fails before the data loads), the label map and the rows, each checked.
    prompt = (read_prompt(args.prompt_file, "--prompt_file") if args.prompt_file
              else MULTI_LABEL_PROMPT if args.multi_label else AG_NEWS_PROMPT)
    prompt_source = f"--prompt_file {args.prompt_file}" if args.prompt_file else "the default prompt"
    template = training_template(prompt, prompt_source, args.multi_label)
    columns = None if template.text_only else template_columns(template, args.text_column)
    label_map = read_label_map(args.label_map, "--label_map") if args.label_map else dict(AG_NEWS_LABEL_MAP)
    splits = load_splits(args.dataset, args.train_file, args.validation_file, args.test_file, args.predict_file,
                         args.text_column, args.label_column, args.validation_fraction, args.max_train_samples,
                         args.max_eval_samples, settings.seed, args.label_separator if args.multi_label else None,
                         columns, prompt_source)
    label_map_source = f"--label_map {args.label_map}" if args.label_map else "the default AG News label map"

    # 2. Token ids, then train, evaluate and save: mc.fit imports Trainer (seconds) once every check has passed.
    data = prepare(settings.model, prompt, prompt_source, label_map, label_map_source, splits, settings.max_length,
                   args.multi_label)
    remove_earlier_run(settings.output_dir, earlier)
    metrics = mc.fit(data, settings)
    end_distributed()
    return metrics


if __name__ == "__main__":
    run_command(main)
