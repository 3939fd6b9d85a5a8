"""Fine-tune a masked LM as a generative classifier through its MLM head: Answer Token Prediction.

The method of *It's All in The [MASK]* (Clavié, Cooper, Warner, 2025): the prompt ends with
`Answer: [unused0] {label}`, the label's verbalizer (one token, e.g. ` Business` or ` A`) is replaced by
[MASK], and the model learns to predict it with the MLM head it already has; no new classification head.
Optionally a share of the training examples gets standard MLM (30% of the tokens masked) or dummy MLM
(the same masking, every target the [MASK] id itself), as in the paper.

    python train.py                                   # AG News from the hub, the published prompt and label map
    python train.py --label_map labels.json --prompt_file prompt.txt \\
        --train_file train.csv --test_file test.csv --text_column text --label_column label_text
    torchrun --nproc_per_node 2 train.py ...          # data-parallel (transformers' Trainer)

The saved folder is a plain masked LM with `label_map.json`, `prompt.txt` and `classifier.json` (what
classify.py and `MLMClassifier` need to use it), `metrics.json`, `trainer_state.json` and a model card.
With --multi_label each text has any number of labels, and every label is a yes/no question of its own.
Read top to bottom: the settings, `prepare` (checks, then token ids), `fit` (build, train, evaluate, save),
the flags. The objectives, prompt rules and scoring are the core's (mlm_classifier/); Trainer's subclass is
mlm_classifier/trainer.py, imported only once the flags are checked, since Trainer takes seconds to import.
"""

from dataclasses import dataclass, fields

import torch

from mlm_classifier.checkpoints import (check_inputs_are_spared, checkpoint_global_step, loss_since_resume,
                                        resolve_checkpoint, whole_run_loss)
from mlm_classifier.cli import (InputError, add_flag, check_output_path, check_positive, make_parser, on_interrupt,
                                run_command, say)
from mlm_classifier.data import read_label_map, read_prompt
from mlm_classifier.models import (batch_defaults, check_max_length, check_model_source, end_distributed,
                                   load_masked_lm, load_tokenizer, resolve_attn_implementation)
from mlm_classifier.multilabel import (ANSWERS, MULTI_LABEL_PROMPT, OPTIONS, check_multi_label_prompt, encode_pairs,
                                       multi_label_metrics, pair_answers, plan_questions, question_template)
from mlm_classifier.objectives import ObjectiveCollator
from mlm_classifier.prompts import (answer_token_ids, check_fixed_length, encode_prompts, mask_answers, options_block,
                                    parse_prompt, placeholder_list, template_columns)
from mlm_classifier.recipes import AG_NEWS_LABEL_MAP, AG_NEWS_PROMPT
from mlm_classifier.splits import check_labels, load_splits

# The published AG News prompt and label map (AnswerDotAI's ModernBERT-Instruct mini cookbook), character for
# character, trailing spaces on the first line included: the AG News recipe's, in mlm_classifier/recipes.py.
# `{txt}` is the published spelling of `{text}`; the map goes from SetFit/ag_news's label_text to the verbalizer.
PUBLISHED_PROMPT = AG_NEWS_PROMPT
PUBLISHED_LABEL_MAP = AG_NEWS_LABEL_MAP


@dataclass
class TrainSettings:
    """One training run's settings and their defaults, in one place: train.py's flags take their defaults from
    here, and a notebook or the sweep passes values, e.g. `fit(data, TrainSettings(output_dir="run", seed=1))`."""
    model: str = "answerdotai/ModernBERT-Large-Instruct"
    output_dir: str = "./finetuned_model_agn"
    max_length: int = 512  # tokens per example; only the text is cut to fit
    num_train_epochs: float = 2
    max_steps: int = -1  # -1: the epochs decide
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8  # evaluation batches hold up to this x max_length padded tokens
    max_batch_tokens: int | None = None  # padded tokens per training batch; None: batch size x max_length
    pad_to_multiple_of: int | None = None  # None: 64 on a GPU, 8 on the CPU
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-5  # peak; linear decay
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    logging_steps: int = 10
    eval_strategy: str = "auto"  # auto: steps with a validation set, else no
    eval_steps: int = 500
    save_strategy: str = "auto"  # auto: best when evaluating, else no
    save_steps: int = 500
    save_total_limit: int = 1
    seed: int = 42
    attn_implementation: str = "auto"
    mlm_proportion: float = 0.0  # share of examples with standard MLM
    dummy_mlm_proportion: float = 0.0  # share with dummy MLM
    mlm_probability: float = 0.3  # share of tokens masked in (dummy) MLM examples: the paper's 30%
    resume_from_checkpoint: str | None = None  # a complete checkpoint folder (see resolve_checkpoint)
    keep_checkpoints: bool = False  # False: checkpoint-<step>/ folders are removed once the model is saved


DEFAULTS = TrainSettings()


# -----------------------------------------------------------------------------
# prepare: everything that does not depend on the hyperparameters, checked and tokenized once


@dataclass
class EvalSet:
    """One split ready to score: ATP token ids (the answer replaced by [MASK]), and `metrics`, which turns their
    scores into the split's metrics (None for a split without labels)."""
    sequences: list
    metrics: object = None


@dataclass
class TrainingData:
    """Everything one training run needs that does not depend on its hyperparameters: checked and tokenized once.
    Multi-label, every (text, label) pair is one example, text-major, that answers yes or no."""
    model: str  # whose tokenizer made the token ids
    tokenizer: object
    prompt: str
    before: str | None  # the halves around {text}; None for a template that names columns (see template)
    after: str | None
    options: str
    label_map: dict  # raw label -> verbalizer; multi-label, raw label -> the name its question shows
    answer_ids: list  # each label's answer token; multi-label, yes and no
    splits: dict  # name -> Split
    encoded: dict  # name -> (token id lists, answer positions)
    truncated: dict  # name -> number of examples cut to fit
    template: object = None  # the parsed prompt (mlm_classifier.Template): its fields, the columns it needs
    multi_label: bool = False
    halves: list = None  # multi-label: each label's question template

    @property
    def class_names(self):
        return list(self.label_map)

    def eval_set(self, name):
        """The split's ATP inputs (answer replaced by [MASK]) and how their scores become its metrics."""
        from functools import partial

        sequences, positions = self.encoded[name]
        labels, metrics = self.splits[name].labels, None
        if labels is not None and self.multi_label:
            metrics = partial(multi_label_metrics, gold_sets=labels, class_names=self.class_names)
        elif labels is not None:
            from mlm_classifier.trainer import classification_metrics

            gold = [self.class_names.index(label) for label in labels]
            metrics = partial(classification_metrics, gold=gold, class_names=self.class_names)
        return EvalSet(mask_answers(sequences, positions, self.tokenizer.mask_token_id), metrics)


def check_fields(split, template):
    """An InputError when a split's texts are not what the template fills: one string each for a {text} template, a
    dict holding every field for one that names columns (as take_columns reads them)."""
    for row, text in zip(split.rows, split.texts):
        if template.text_only and not isinstance(text, str):
            raise InputError(f"{split.source}: row {row}: a {type(text).__name__}, where {template.source} takes one "
                             "text ({text})")
        if not template.text_only and (not isinstance(text, dict) or set(template.fields) - set(text)):
            raise InputError(f"{split.source}: row {row}: {template.source} fills {placeholder_list(template.fields)}, "
                             f"which the row does not hold ({text!r:.60})")


def prepare(model_name, prompt, prompt_source, label_map, label_map_source, splits, max_length, multi_label=False):
    """Check the prompt, labels and verbalizers against the data and the tokenizer, then tokenize every split."""
    if multi_label:  # each label's question is an ordinary template; the label's name is only text in it
        check_multi_label_prompt(prompt, prompt_source)
    template = parse_prompt(question_template(prompt, "label") if multi_label else prompt, prompt_source)
    if multi_label and not template.text_only:
        raise InputError(f"--multi_label: {prompt_source} names columns; a multi-label prompt takes {{text}} only")
    for split in splits.values():
        check_fields(split, template)
        if split.labels is not None:
            check_labels(split, label_map, label_map_source)
    tokenizer = load_tokenizer(model_name)
    check_max_length(model_name, tokenizer, max_length)
    if multi_label:  # one yes/no question per label
        halves, answer_ids = plan_questions(tokenizer, prompt, list(label_map.values()), max_length, prompt_source)
        options, answers = OPTIONS, ANSWERS
    else:
        halves, options, answers = None, options_block(label_map), label_map
        answer_ids = answer_token_ids(tokenizer, template, None, label_map, options)
        check_fixed_length(tokenizer, template, None, label_map, options, max_length)
    encoded, truncated = {}, {}
    for name, split in splits.items():
        # Rows without a label (--predict_file) are filled with any answer: it is masked anyway.
        if multi_label:
            fills = pair_answers(split.labels or [[]] * len(split), list(label_map))
            sequences, positions, truncated[name] = encode_pairs(tokenizer, halves, split.texts, fills, max_length,
                                                                 split.rows, split.source)
        else:
            fills = ([label_map[label] for label in split.labels] if split.labels is not None
                     else [next(iter(label_map.values()))] * len(split))
            sequences, positions, truncated[name] = encode_prompts(
                tokenizer, template, None, split.texts, fills, options, max_length, split.rows, split.source)
        encoded[name] = (sequences, positions)
        empty = split.empty_fields()
        empty_note = "".join(f", {n} with {{{field}}} empty" for field, n in empty.items())
        say(f"{name}: {len(split)} examples from {split.source}, "
            f"{truncated[name]} cut to fit --max_length {max_length}{empty_note}")
    say("answer tokens: " + ", ".join(f"{answer} -> {token!r}" for answer, token in
                                      zip(answers, tokenizer.convert_ids_to_tokens(answer_ids))))
    before, after = tuple(template) if template.text_only else (None, None)
    return TrainingData(model_name, tokenizer, prompt, before, after, options, label_map, answer_ids, splits, encoded,
                        truncated, template, multi_label, halves)


# -----------------------------------------------------------------------------
# fit: build the trainer, train, evaluate, save


def build_trainer(data, settings):
    """An ATPTrainer for `settings` on prepared data: the model as it is (no new head), token-budget batches, and
    each example's objective drawn at batch time."""
    from mlm_classifier.trainer import ATPTrainer, TokenBudgetBatchSampler, bf16_available, training_arguments

    bf16 = bf16_available()
    training_args = training_arguments(settings, "validation" in data.splits, bf16,
                                       best_metric="micro_f1" if data.multi_label else "accuracy")
    # Several GPUs in one process would get Trainer's DataParallel, which splits each batch under the rows that
    # head_logits' hook selects: one process per GPU instead.
    if training_args.n_gpu > 1:
        raise InputError(f"{training_args.n_gpu} GPUs in one process: run `torchrun --nproc_per_node "
                         f"{training_args.n_gpu} train.py ...` (one process per GPU), or pick one GPU with "
                         "CUDA_VISIBLE_DEVICES")
    _, pad_to_multiple_of = batch_defaults(training_args.device, pad_to_multiple_of=settings.pad_to_multiple_of)
    tokenizer = data.tokenizer
    mask_token_id = tokenizer.mask_token_id
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else mask_token_id  # masked out anyway

    # The model, untouched: ATPTrainer.compute_loss runs its head only at the labelled positions, so every saved
    # folder is the plain masked LM it was, for fill-mask too. Float32 master weights, bf16 autocast on a GPU.
    attn_implementation = resolve_attn_implementation(settings.attn_implementation, training_args.device,
                                                      torch.bfloat16 if bf16 else torch.float32)
    model = load_masked_lm(settings.model, torch.float32, attn_implementation, training_args.device)

    train_sequences, train_positions = data.encoded["train"]
    batch_sampler = TokenBudgetBatchSampler(
        [len(ids) for ids in train_sequences], settings.per_device_train_batch_size,
        settings.max_batch_tokens or settings.per_device_train_batch_size * settings.max_length, pad_to_multiple_of,
        settings.seed)
    collator = ObjectiveCollator(mask_token_id, pad_token_id, frozenset(tokenizer.all_special_ids),
                                 settings.mlm_proportion, settings.dummy_mlm_proportion, settings.mlm_probability,
                                 pad_to_multiple_of)
    scoring = dict(answer_ids=data.answer_ids, mask_token_id=mask_token_id, pad_token_id=pad_token_id,
                   batch_tokens=settings.per_device_eval_batch_size * settings.max_length,
                   pad_to_multiple_of=pad_to_multiple_of)
    trainer = ATPTrainer(
        model=model, args=training_args, data_collator=collator, processing_class=tokenizer,
        train_dataset=[{"input_ids": ids, "answer_position": p} for ids, p in zip(train_sequences, train_positions)],
        eval_dataset=data.eval_set("validation") if "validation" in data.splits else None,
        batch_sampler=batch_sampler, scoring=scoring)
    say(f"objectives: {1 - settings.mlm_proportion - settings.dummy_mlm_proportion:.0%} ATP, "
        f"{settings.mlm_proportion:.0%} MLM, {settings.dummy_mlm_proportion:.0%} dummy MLM; {len(batch_sampler)} "
        f"batches per epoch per {training_args.world_size} process(es); {'bf16' if bf16 else 'float32'}, "
        f"{attn_implementation}")
    return trainer


def train_model(trainer, data, settings):
    """Train (resuming if asked); with a validation set, Trainer reloads the best checkpoint at the end. Returns the
    training half of metrics.json."""
    import transformers

    resumed_step = checkpoint_global_step(settings.resume_from_checkpoint)
    result = trainer.train(resume_from_checkpoint=settings.resume_from_checkpoint)
    since_resume = loss_since_resume(result.training_loss, resumed_step, result.global_step, transformers.__version__)
    metrics = {"labels": data.class_names,
               "train_loss": whole_run_loss(trainer.state.log_history, resumed_step, since_resume, result.global_step),
               "global_step": result.global_step, "train_runtime": result.metrics.get("train_runtime"),
               "truncated": data.truncated}
    if data.template is not None and data.template.columns:  # the rows' empty fields, per split (filled as "")
        metrics["empty_fields"] = {name: split.empty_fields() for name, split in data.splits.items()}
    if resumed_step:
        metrics["resumed_from_step"] = resumed_step
    if trainer.args.load_best_model_at_end and trainer.state.best_global_step:
        metrics["best_step"] = trainer.state.best_global_step
    return metrics


def evaluate_splits(trainer, data, metrics):
    """Add validation and test metrics to `metrics`; return the predict split's scores (None without one). Every
    process scores a share under torchrun."""
    for name in ("validation", "test"):
        if name in data.splits:
            examples = data.eval_set(name)
            for key, value in examples.metrics(trainer.score(examples.sequences)).items():
                metrics[f"{name}_{key}"] = value
    return trainer.score(data.eval_set("predict").sequences) if "predict" in data.splits else None


def fit(data, settings):
    """Train `settings.model` on prepared data, evaluate, and save to `settings.output_dir`; returns metrics.json's
    dict. The sweep calls this once per run with the same `data`."""
    from mlm_classifier.trainer import save_trained_folder

    trainer = build_trainer(data, settings)
    metrics = train_model(trainer, data, settings)
    prediction_scores = evaluate_splits(trainer, data, metrics)
    save_trained_folder(trainer, data, settings, metrics, prediction_scores)
    return metrics


# -----------------------------------------------------------------------------
# Flags


def build_parser():
    """The command line, every default in view; each flag also takes hyphens (--eval-steps), as published."""
    p = make_parser(__doc__)
    d = DEFAULTS  # the training settings' defaults live in TrainSettings
    # Data
    add_flag(p, "dataset", default="SetFit/ag_news",
             help="hub dataset (its train and test splits), used without --train_file")
    add_flag(p, "train_file", default=None, help="csv, json, jsonl or parquet")
    add_flag(p, "validation_file", default=None, help="picks the best checkpoint by accuracy")
    add_flag(p, "test_file", default=None, help="replaces the hub's test split")
    add_flag(p, "predict_file", default=None, help="texts to label: writes predictions.jsonl")
    add_flag(p, "text_column", default="text",
             help="the column that fills {text}; a prompt's other {name} placeholders name columns themselves")
    add_flag(p, "label_column", default="label_text", help="the column holding the raw labels")
    add_flag(p, "multi_label", action="store_true",
             help="each text has any number of labels (a list, or a string split at --label_separator): every label "
                  "becomes a yes/no question, one example per (text, label)")
    add_flag(p, "label_separator", default=",", help="splits a multi-label string cell into labels")
    add_flag(p, "max_train_samples", type=int, default=None, help="at most this many training rows, seeded")
    add_flag(p, "max_eval_samples", type=int, default=None, help="at most this many validation and test rows, seeded")
    add_flag(p, "validation_fraction", type=float, default=0.0, help="hold out this share of the training rows")
    # Prompt and labels
    add_flag(p, "label_map", default=None, help="JSON {raw label: verbalizer} (default: the published AG News map)")
    add_flag(p, "prompt_file", default=None,
             help="template with {text} (or {txt}) or placeholders naming columns ({premise}, {hypothesis}), "
                  "optional {options}, ending in `[unused0] {label}` (default: the published AG News prompt)")
    add_flag(p, "max_length", type=int, default=d.max_length, help="tokens per example; only the text is cut to fit")
    # Objective
    add_flag(p, "mlm_proportion", type=float, default=None,
             help="share of training examples with standard MLM (default: 0)")
    add_flag(p, "dummy_mlm_proportion", type=float, default=None, help="share with dummy MLM (default: 0)")
    add_flag(p, "mlm_probability", type=float, default=d.mlm_probability,
             help="share of tokens masked in (dummy) MLM examples")
    add_flag(p, "true_mlm_proportion", type=float, default=None,
             help="published spelling: this share gets standard MLM, or dummy MLM with --dummy_examples")
    add_flag(p, "dummy_examples", action="store_true", help="published: --true_mlm_proportion means dummy MLM")
    # Model and training
    add_flag(p, "model", default=d.model, help="hub name or local folder")
    add_flag(p, "attn_implementation", default=d.attn_implementation,
             choices=["auto", "sdpa", "flash_attention_2", "eager"],
             help="auto: flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa")
    add_flag(p, "num_train_epochs", type=float, default=d.num_train_epochs, help="passes over the training rows")
    add_flag(p, "max_steps", type=int, default=d.max_steps,
             help="stop after this many optimizer steps (-1: epochs decide)")
    add_flag(p, "per_device_train_batch_size", type=int, default=d.per_device_train_batch_size,
             help="at most this many examples per batch")
    add_flag(p, "per_device_eval_batch_size", type=int, default=d.per_device_eval_batch_size,
             help="evaluation batches hold up to this x --max_length padded tokens")
    add_flag(p, "max_batch_tokens", type=int, default=None,
             help="padded tokens per training batch (default: per_device_train_batch_size x max_length)")
    add_flag(p, "pad_to_multiple_of", type=int, default=None,
             help="batch width rounding (default: 64 on a GPU, 8 on the CPU)")
    add_flag(p, "gradient_accumulation_steps", type=int, default=d.gradient_accumulation_steps,
             help="batches per optimizer step")
    add_flag(p, "learning_rate", type=float, default=d.learning_rate, help="peak learning rate (linear decay)")
    add_flag(p, "weight_decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    add_flag(p, "warmup_ratio", type=float, default=d.warmup_ratio, help="share of the steps spent warming up")
    add_flag(p, "logging_steps", type=int, default=d.logging_steps, help="log the training loss every N steps")
    add_flag(p, "eval_strategy", default=d.eval_strategy, choices=["auto", "no", "steps", "epoch"],
             help="auto: steps with a validation set, else no (default: auto)")
    add_flag(p, "eval_steps", type=int, default=d.eval_steps, help="evaluate every N steps")
    add_flag(p, "save_strategy", default=d.save_strategy, choices=["auto", "no", "steps", "epoch", "best"],
             help="auto: best when evaluating, else no (default: auto)")
    add_flag(p, "save_steps", type=int, default=d.save_steps, help="save a checkpoint every N steps")
    add_flag(p, "save_total_limit", type=int, default=d.save_total_limit,
             help="checkpoints kept (the best one is always kept)")
    add_flag(p, "seed", type=int, default=d.seed, help="seeds the model init, sampling, shuffles and held-out rows")
    add_flag(p, "output_dir", default=d.output_dir, help="where the model, files and checkpoints go")
    add_flag(p, "resume_from_checkpoint", default=None,
             help="a checkpoint folder, or `last` for the newest complete one under --output_dir")
    add_flag(p, "keep_checkpoints", action="store_true",
             help="keep the checkpoint-<step>/ folders (optimizer state, several times the model's size) after the "
                  "run; without it they are removed once the final model is saved")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def objective_proportions(mlm_proportion, dummy_mlm_proportion, true_mlm_proportion, dummy_examples):
    """(standard MLM share, dummy MLM share) from the new flags or the published ones, never both."""
    published = true_mlm_proportion is not None or dummy_examples
    if published and (mlm_proportion is not None or dummy_mlm_proportion is not None):
        raise InputError("--true_mlm_proportion/--dummy_examples (the published flags) cannot be combined with "
                         "--mlm_proportion/--dummy_mlm_proportion; use one pair")
    if published:
        if true_mlm_proportion is None:
            raise InputError("--dummy_examples needs --true_mlm_proportion, the share of dummy MLM examples")
        mlm, dummy = (0.0, true_mlm_proportion) if dummy_examples else (true_mlm_proportion, 0.0)
        flags = "--true_mlm_proportion"
    else:
        mlm, dummy = mlm_proportion or 0.0, dummy_mlm_proportion or 0.0
        flags = "--mlm_proportion + --dummy_mlm_proportion"
    if not (0 <= mlm <= 1 and 0 <= dummy <= 1 and mlm + dummy <= 1):
        raise InputError(f"{flags} must be shares in [0, 1] summing to at most 1, got {mlm} and {dummy}")
    return mlm, dummy


def check_flags(args):
    """InputErrors for flags out of range or that cannot work together, before anything is loaded."""
    check_positive(per_device_train_batch_size=args.per_device_train_batch_size,
                   per_device_eval_batch_size=args.per_device_eval_batch_size,
                   gradient_accumulation_steps=args.gradient_accumulation_steps, max_length=args.max_length,
                   max_batch_tokens=args.max_batch_tokens, pad_to_multiple_of=args.pad_to_multiple_of,
                   learning_rate=args.learning_rate, logging_steps=args.logging_steps, eval_steps=args.eval_steps,
                   save_steps=args.save_steps, save_total_limit=args.save_total_limit,
                   max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples)
    if args.max_steps == 0 or args.max_steps < -1:
        raise InputError(f"--max_steps {args.max_steps} must be a positive number, or -1 to let epochs decide")
    if args.max_steps == -1:
        check_positive(num_train_epochs=args.num_train_epochs)
    if args.weight_decay < 0:
        raise InputError(f"--weight_decay {args.weight_decay} must not be negative")
    if args.validation_file and args.validation_fraction:
        raise InputError("give --validation_file or --validation_fraction, not both")
    if not 0 <= args.validation_fraction < 1:
        raise InputError(f"--validation_fraction {args.validation_fraction} must be in [0, 1)")
    if not 0 <= args.warmup_ratio < 1:
        raise InputError(f"--warmup_ratio {args.warmup_ratio} must be in [0, 1)")
    if not 0 < args.mlm_probability <= 1:
        raise InputError(f"--mlm_probability {args.mlm_probability} must be in (0, 1]")
    validating = bool(args.validation_file or args.validation_fraction)
    if args.eval_strategy not in ("auto", "no") and not validating:
        raise InputError(f"--eval_strategy {args.eval_strategy} needs a validation set: give --validation_file or "
                         "--validation_fraction (the test set is never used to pick a checkpoint)")
    check_output_path(args.output_dir, "--output_dir", folder=True)
    check_inputs_are_spared(args.output_dir, [("--model", args.model)] + [
        (f"--{name}", getattr(args, name))
        for name in ("train_file", "validation_file", "test_file", "predict_file", "label_map", "prompt_file")])


def settings_from_args(args, mlm_proportion, dummy_mlm_proportion):
    """TrainSettings from the parsed flags (every field has a flag of its name) and the resolved objective shares."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainSettings)}
    return TrainSettings(**{**values, "mlm_proportion": mlm_proportion, "dummy_mlm_proportion": dummy_mlm_proportion})


def main(argv=None):
    """Train, evaluate and save; returns the metrics written to metrics.json."""
    args = parse_args(argv)
    check_flags(args)
    check_model_source(args.model)
    args.resume_from_checkpoint = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    on_interrupt(f"interrupted: no model saved; any checkpoint-<step>/ saved so far is under {args.output_dir}, "
                 "from which the same command with --resume_from_checkpoint last carries on")
    settings = settings_from_args(args, *objective_proportions(args.mlm_proportion, args.dummy_mlm_proportion,
                                                               args.true_mlm_proportion, args.dummy_examples))

    # 1. The prompt, the label map and the rows, each checked before anything heavy; then token ids.
    if args.multi_label and not args.label_map:
        raise InputError("--multi_label needs --label_map: {raw label: the name its yes/no question shows}")
    default_prompt = MULTI_LABEL_PROMPT if args.multi_label else PUBLISHED_PROMPT
    prompt = read_prompt(args.prompt_file, "--prompt_file") if args.prompt_file else default_prompt
    prompt_source = f"--prompt_file {args.prompt_file}" if args.prompt_file else "the default prompt"
    # a bad prompt fails before the data loads
    if args.multi_label:
        check_multi_label_prompt(prompt, prompt_source)
    template = parse_prompt(question_template(prompt, "label") if args.multi_label else prompt, prompt_source)
    # {text} is --text_column; any other placeholder names a column, which every file must have.
    columns = None if template.text_only else template_columns(template, args.text_column)
    label_map = read_label_map(args.label_map, "--label_map") if args.label_map else dict(PUBLISHED_LABEL_MAP)
    splits = load_splits(args.dataset, args.train_file, args.validation_file, args.test_file, args.predict_file,
                         args.text_column, args.label_column, args.validation_fraction, args.max_train_samples,
                         args.max_eval_samples, args.seed, args.label_separator if args.multi_label else None, columns,
                         prompt_source)
    label_map_source = f"--label_map {args.label_map}" if args.label_map else "the default AG News label map"
    data = prepare(args.model, prompt, prompt_source, label_map, label_map_source, splits, args.max_length,
                   args.multi_label)

    # 2. Train, evaluate, save.
    metrics = fit(data, settings)
    end_distributed()
    return metrics


if __name__ == "__main__":
    run_command(main)
