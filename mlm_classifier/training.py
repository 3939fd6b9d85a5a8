"""Answer Token Prediction, prepared: a training run's settings, its examples checked and tokenized once, its metrics.

Examples are encoded exactly as MLMClassifier encodes what it classifies (classifier.plan_scoring, encode_views), so
a trained folder answers as it was taught. Training itself (transformers' Trainer, slow to import) is trainer.fit.

    from mlm_classifier import TrainSettings, prepare, fit
    data = prepare("answerdotai/ModernBERT-Large-Instruct", prompt, "my prompt", label_map, "my labels", splits, 512)
    metrics = fit(data, TrainSettings(output_dir="my-classifier", num_train_epochs=1))
"""

import math
from collections import namedtuple
from dataclasses import dataclass
from functools import partial
from typing import Literal

from transformers.hf_argparser import HfArg

from .classifier import encode_views, plan_scoring
from .cli import check_positive
from .data import accuracy_table, say
from .errors import InputError
from .models import load_tokenizer
from .multilabel import ANSWERS, THRESHOLD, check_multi_label_prompt, question_template
from .prompts import mask_answers, parse_prompt, placeholder_list
from .scoring import first_max, slot_probabilities
from .spec import ClassifierSpec
from .splits import check_labels


@dataclass
class TrainSettings:
    """One training run's settings: train.py's flags, and what a notebook or the sweep passes to fit."""
    model: str = HfArg(default="answerdotai/ModernBERT-Large-Instruct", help="hub name or local folder")
    output_dir: str = HfArg(default="./finetuned_model_agn", help="where the model, files and checkpoints go")
    max_length: int = HfArg(default=512, help="tokens per example; only the text is cut to fit")
    num_train_epochs: float = HfArg(default=2, help="passes over the training rows")
    max_steps: int = HfArg(default=-1, help="stop after this many optimizer steps (-1: epochs decide)")
    per_device_train_batch_size: int = HfArg(default=8, help="at most this many examples per batch")
    per_device_eval_batch_size: int = HfArg(default=8, help="evaluation batches hold up to this x --max_length "
                                                            "padded tokens")
    max_batch_tokens: int | None = HfArg(default=None, help="padded tokens per training batch (unset: "
                                                            "per_device_train_batch_size x max_length)")
    pad_to_multiple_of: int | None = HfArg(default=None, help="batch width rounding (unset: 64 on a GPU, 8 on the CPU)")
    gradient_accumulation_steps: int = HfArg(default=1, help="batches per optimizer step")
    learning_rate: float = HfArg(default=2e-5, help="peak learning rate (linear decay)")
    weight_decay: float = HfArg(default=0.01, help="AdamW weight decay")
    warmup_ratio: float = HfArg(default=0.0, help="share of the steps spent warming up")
    logging_steps: int = HfArg(default=10, help="log the training loss every N steps")
    eval_strategy: Literal["auto", "no", "steps", "epoch"] = HfArg(default="auto", help="auto: steps with a "
                                                                                        "validation set, else no")
    eval_steps: int = HfArg(default=500, help="evaluate every N steps")
    save_strategy: Literal["auto", "no", "steps", "epoch", "best"] = HfArg(default="auto", help="auto: best when "
                                                                                               "evaluating, else no")
    save_steps: int = HfArg(default=500, help="save a checkpoint every N steps")
    save_total_limit: int = HfArg(default=1, help="checkpoints kept (the best one is always kept)")
    seed: int = HfArg(default=42, help="seeds the model init, sampling, shuffles and held-out rows")
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = HfArg(
        default="auto", help="auto: flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa")
    mlm_proportion: float = HfArg(default=0.0, help="share of training examples with standard MLM")
    dummy_mlm_proportion: float = HfArg(default=0.0, help="share with dummy MLM (every target the [MASK] id)")
    mlm_probability: float = HfArg(default=0.3, help="share of tokens masked in (dummy) MLM examples: the paper's 30%%")
    resume_from_checkpoint: str | None = HfArg(default=None, help="a checkpoint folder, or `last` for the newest "
                                                                  "complete one under --output_dir")
    keep_checkpoints: bool = HfArg(default=False, help="keep the checkpoint-<step>/ folders (optimizer state, "
                                   "several times the model's size) after the run; otherwise they are removed once "
                                   "the final model is saved")

    def __post_init__(self):
        check_positive(per_device_train_batch_size=self.per_device_train_batch_size,
                       per_device_eval_batch_size=self.per_device_eval_batch_size,
                       gradient_accumulation_steps=self.gradient_accumulation_steps, max_length=self.max_length,
                       max_batch_tokens=self.max_batch_tokens, pad_to_multiple_of=self.pad_to_multiple_of,
                       learning_rate=self.learning_rate, logging_steps=self.logging_steps, eval_steps=self.eval_steps,
                       save_steps=self.save_steps, save_total_limit=self.save_total_limit)
        if self.max_steps == 0 or self.max_steps < -1:
            raise InputError(f"--max_steps {self.max_steps} must be a positive number, or -1 to let epochs decide")
        if self.max_steps == -1:
            check_positive(num_train_epochs=self.num_train_epochs)
        if self.weight_decay < 0:
            raise InputError(f"--weight_decay {self.weight_decay} must not be negative")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError(f"--warmup_ratio {self.warmup_ratio} must be in [0, 1)")
        if not 0 < self.mlm_probability <= 1:
            raise InputError(f"--mlm_probability {self.mlm_probability} must be in (0, 1]")
        mlm, dummy = self.mlm_proportion, self.dummy_mlm_proportion
        if not (0 <= mlm <= 1 and 0 <= dummy <= 1 and mlm + dummy <= 1):
            raise InputError(f"--mlm_proportion + --dummy_mlm_proportion must be shares in [0, 1] summing to at most "
                             f"1, got {mlm} and {dummy}")


# A split's ATP token ids, and `metrics`, which turns their scores into the split's metrics (None: unlabelled).
EvalSet = namedtuple("EvalSet", "sequences metrics")


@dataclass
class TrainingData:
    """What a training run needs beyond its hyperparameters: `encoded[name]` is a split's (token ids, answer positions),
    multi-label text-major (example t * labels + v asks text t about label v)."""
    tokenizer: object
    prompt: str
    template: object  # the parsed prompt: its fields, the columns it needs
    label_map: dict  # raw label -> verbalizer; multi-label, raw label -> the name its question shows
    plan: object
    splits: dict  # name -> Split
    encoded: dict
    truncated: dict  # name -> number of examples cut to fit
    multi_label: bool = False

    @property
    def class_names(self):
        return list(self.label_map)

    @property
    def answer_ids(self):
        """Each label's answer token; multi-label, yes and no."""
        return self.plan.answer_ids[0]

    def eval_set(self, name):
        sequences, positions = self.encoded[name]
        labels, names, metrics = self.splits[name].labels, self.class_names, None
        if labels is not None:
            metrics = (partial(multi_label_metrics, gold_sets=labels, class_names=names) if self.multi_label else
                       partial(classification_metrics, gold=[names.index(g) for g in labels], class_names=names))
        return EvalSet(mask_answers(sequences, positions, self.tokenizer.mask_token_id), metrics)


def training_template(prompt, prompt_source, multi_label=False):
    """The parsed prompt; multi-label, its question about a label, whose name is only text in it."""
    if not multi_label:
        return parse_prompt(prompt, prompt_source)
    check_multi_label_prompt(prompt, prompt_source)
    template = parse_prompt(question_template(prompt, "label"), prompt_source)
    if not template.text_only:
        raise InputError(f"--multi_label: {prompt_source} names columns; a multi-label prompt takes {{text}} only")
    return template


def prepare(model_name, prompt, prompt_source, label_map, label_map_source, splits, max_length, multi_label=False):
    """Check the prompt, labels and answers against the data and tokenizer, then tokenize every split, gold filled."""
    template = training_template(prompt, prompt_source, multi_label)
    for split in splits.values():  # a {text} template fills one string per row, else a dict holding every field
        for row, text in zip(split.rows, split.texts):
            if template.text_only and not isinstance(text, str):
                raise InputError(f"{split.source}: row {row}: a {type(text).__name__}, where {template.source} takes "
                                 "one text ({text})")
            if not template.text_only and (not isinstance(text, dict) or set(template.fields) - set(text)):
                raise InputError(f"{split.source}: row {row}: {template.source} fills "
                                 f"{placeholder_list(template.fields)}, which the row does not hold ({text!r:.60})")
        if split.labels is not None:
            check_labels(split, label_map, label_map_source)
    tokenizer = load_tokenizer(model_name)
    spec = ClassifierSpec(model_name, list(label_map), prompt, list(label_map.values()), max_length, "training",
                          multi_label=multi_label, threshold=THRESHOLD if multi_label else None,
                          prompt_source=prompt_source)
    plan = plan_scoring(spec, tokenizer)
    encoded, truncated = {}, {}
    for name, split in splits.items():
        # Rows without a label (--predict_file) are filled with any answer: it is masked anyway.
        if multi_label:
            golds = split.labels if split.labels is not None else [[]] * len(split)
            answers = [[ANSWERS["yes" if label in gold else "no"] for gold in golds] for label in label_map]
        else:
            answers = [[label_map[label] for label in split.labels]] if split.labels is not None else None
        sequences, positions, cut = encode_views(tokenizer, plan, split.texts, answers, split.rows, split.source)
        if multi_label:  # text-major: example t * labels + v asks text t about label v
            order = [v * len(split) + t for t in range(len(split)) for v in range(len(label_map))]
            sequences, positions = [sequences[i] for i in order], [positions[i] for i in order]
        encoded[name], truncated[name] = (sequences, positions), max(cut)
        empty = "".join(f", {n} with {{{field}}} empty" for field, n in split.empty_fields().items())
        say(f"{name}: {len(split)} examples from {split.source}, {truncated[name]} cut to fit --max_length "
            f"{max_length}{empty}")
    answers = ANSWERS if multi_label else label_map
    say("answer tokens: " + ", ".join(f"{answer} -> {token!r}" for answer, token in
                                      zip(answers, tokenizer.convert_ids_to_tokens(plan.answer_ids[0]))))
    return TrainingData(tokenizer, prompt, template, label_map, plan, splits, encoded, truncated, multi_label)


def classification_metrics(scores, gold, class_names):
    """Accuracy, macro-F1, the ATP loss, per-class accuracy and the confusion matrix (rows gold, columns predicted)
    from each example's log P per label and the gold label's index; ties go to the earlier label."""
    from sklearn.metrics import confusion_matrix, f1_score

    predicted = [first_max(s[: len(class_names)]) for s in scores]
    correct = [p == g for p, g in zip(predicted, gold)]
    return {
        "accuracy": sum(correct) / len(correct),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "loss": -sum(s[g] for s, g in zip(scores, gold)) / len(gold),
        "n": len(gold),
        "per_class": accuracy_table(correct, [class_names[g] for g in gold]),
        "confusion_matrix": confusion_matrix(gold, predicted, labels=list(range(len(class_names)))).tolist(),
    }


def yes_probabilities(scores, n_labels):
    """[[P(yes) per label] per text] from the pairs' [log P(yes), log P(no)], text-major."""
    values = [slot_probabilities(s[:2])[0] for s in scores]
    return [values[k:k + n_labels] for k in range(0, len(values), n_labels)]


def multi_label_metrics(scores, gold_sets, class_names, threshold=THRESHOLD):
    """Micro/macro-F1, exact match, per-label P/R/F1 and the ATP loss from the text-major pairs' log P(yes, no)."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    predicted = [[int(p >= threshold) for p in row] for row in yes_probabilities(scores, len(class_names))]
    gold = [[int(name in labels) for name in class_names] for labels in gold_sets]
    n = len(gold)
    right = [s[0] if g else s[1] for s, g in zip(scores, (g for row in gold for g in row))]
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, average=None, zero_division=0)
    return {
        "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "exact_match": sum(p == g for p, g in zip(predicted, gold)) / n,
        "loss": -sum(right) / len(right) if right and not any(map(math.isinf, right)) else float("inf"),
        "n": n,
        "threshold": threshold,
        "per_label": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for name, p, r, f, s in zip(class_names, precision, recall, f1, support)},
    }
