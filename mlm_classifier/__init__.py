"""The MLM head as a generative classifier (Clavié, Cooper, Warner, 2025, *It's All in The [MASK]*).

A prompt ends with `Answer: [unused0] [MASK]`, and a masked LM's plain MLM head, read at that [MASK] over the
option tokens (letters `A`, `B`, ... or single-token label words), picks the answer in one forward pass.
minimal.py and minimal_train.py show the method on one screen; this package is the same method, batched and checked.
Its modules, each importing only those above it in this list:

- errors.py: InputError, the one error of bad input;
- the method: anchor.py ([unused0]), scoring.py (answer tokens, batches, `head_logits`: the MLM head at [MASK] only),
  prompts.py (templates, filling, cutting only the text), objectives.py (ATP and (dummy) MLM, the loss at the
  labelled rows), multilabel.py (a yes/no question per label);
- reading and writing: data.py (files, tables, records, the rules of outputs), splits.py (a table's texts, labels
  and ids, checked row by row), stream.py (tables a chunk at a time), partial.py (an output written as it goes,
  resumable), models.py (devices, loading), checkpoints.py (resuming a training run);
- tasks: mmlu.py (MMLU and MMLU-Pro), recipes.py (the seven tasks of Table 3), table3.py (the sweep: its grid, runs
  and reports);
- the API: spec.py and classifier.py (MLMClassifier), training.py (TrainSettings, prepare), trainer.py (fit, with
  transformers' Trainer), harness.py (the lm-evaluation-harness backend), cli.py (the scripts' command lines).

    from mlm_classifier import MLMClassifier
    clf = MLMClassifier.from_pretrained("answerdotai/ModernBERT-Large-Instruct", labels=["spam", "not spam"])
    clf("Win a free cruise!")  # {"label": "spam", "probabilities": {"spam": 0.93, "not spam": 0.07}}
"""

from .classifier import MLMClassifier
from .data import read_table
from .errors import InputError
from .models import load_tokenizer
from .multilabel import MULTI_LABEL_PROMPT
from .objectives import labelled_loss
from .prompts import ZERO_SHOT_PROMPT, parse_prompt
from .recipes import RECIPES, load_rows
from .scoring import head_logits, score_sequences
from .splits import Split, load_splits, take_columns
from .training import TrainSettings, prepare

_TRAINER = ("fit", "fit_classifier")  # in trainer.py, which imports transformers' Trainer: seconds, so on first use


def __getattr__(name):
    if name in _TRAINER:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'mlm_classifier' has no attribute {name!r}")


__all__ = ["MLMClassifier", "InputError", "TrainSettings", "prepare", "fit", "fit_classifier", "RECIPES", "load_rows",
           "load_splits", "Split", "read_table", "take_columns", "parse_prompt", "ZERO_SHOT_PROMPT",
           "MULTI_LABEL_PROMPT", "load_tokenizer", "head_logits", "labelled_loss", "score_sequences"]
