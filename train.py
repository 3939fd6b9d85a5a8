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
The prompt rules, the cutting of long texts and the scoring live in mlm_classifier.py; this file holds
what is training's own. Every function takes explicit arguments so it can be pasted into a notebook;
sweep_20newsgroups.py imports them.
"""

import json
import os
import random
import time
from dataclasses import dataclass

import torch
import transformers
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments

from mlm_classifier import (ANCHOR, SETTINGS_FILE, WEIGHT_FILES, InputError, accuracy_table, add_flag, answer_token_ids,
                            batch_defaults, check_fixed_length, check_model_source, check_output_path, check_positive,
                            current_shard, encode_prompts, end_distributed, fill_prompt, gather_scores, head_logits,
                            length_sorted_batches, load_hub_dataset, load_masked_lm, load_tokenizer, make_parser,
                            mask_answers, max_positions, options_block, pad_batch, padded_width, parse_prompt, predict_option,
                            prediction_record, read_label_map, read_prompt, read_table, records_to_jsonl,
                            resolve_attn_implementation, run_command, say, score_sequences, take_columns, write_atomic)

# The published AG News prompt (AnswerDotAI's ModernBERT-Instruct mini cookbook), character for character,
# trailing spaces on the first line included. `{txt}` is the published spelling of `{text}`.
PUBLISHED_PROMPT = (
    "** Instructions **    \n"
    "Given a short news report, determine which news category it belongs to.\n"
    "** Content **\n"
    "What is the category of the following news report?\n"
    "News Report: {txt}\n"
    "** Options **\n"
    "- Business: It is about business or financial news.\n"
    "- World: It's about world news.\n"
    "- Sports: It's about sports.\n"
    "- Tech: It's about Science or Technology, or related companies.\n"
    "** Answer **\n"
    "Answer: [unused0] {label}"
)
# The published agnews_label_map.json: SetFit/ag_news's label_text -> verbalizer.
PUBLISHED_LABEL_MAP = {"Business": "Business", "World": "World", "Sports": "Sports", "Sci/Tech": "Tech"}



# -----------------------------------------------------------------------------
# Rows: texts and raw labels of one split, with their row numbers for error messages


def check_labels(split, label_map, label_map_source):
    """An InputError naming each label of `split` that the label map lacks, with a row where it occurs."""
    unknown = {}
    for row, label in zip(split.rows, split.labels):
        if label not in label_map:
            unknown.setdefault(label, row)
    if unknown:
        found = "; ".join(f"{label!r} (row {row})" for label, row in unknown.items())
        raise InputError(f"{split.source}: labels missing from {label_map_source}: {found}. "
                         f"The map has {', '.join(repr(k) for k in label_map)}")


def subsample(split, max_samples, seed):
    """At most `max_samples` rows, drawn by a seeded shuffle, kept in file order."""
    if not max_samples or max_samples >= len(split):
        return split
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    return split.select(sorted(order[:max_samples]))


def hold_out(split, fraction, seed):
    """(train, validation): a seeded `fraction` of the rows held out for validation.

    An InputError when that leaves no training rows, or fewer validation rows than the training rows have
    labels (accuracy on such a slice cannot choose a checkpoint).
    """
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    n_validation = max(1, round(fraction * len(split)))
    n_labels = len(set(split.labels))
    if n_validation >= len(split):
        raise InputError(f"--validation_fraction {fraction} of {len(split)} training rows leaves no rows to train on")
    if n_validation < n_labels:
        raise InputError(f"--validation_fraction {fraction} holds out {n_validation} of {len(split)} rows, fewer than "
                         f"the {n_labels} labels; raise it, or give --validation_file")
    return split.select(sorted(order[n_validation:])), split.select(sorted(order[:n_validation]))


def load_splits(dataset, train_file, validation_file, test_file, predict_file, text_column, label_column,
                validation_fraction, max_train_samples, max_eval_samples, seed):
    """{"train", "validation", "test", "predict"} -> Split (absent ones left out), from files or the hub.

    The hub dataset (its train and test splits) is used when there is no --train_file; a --test_file
    replaces the hub's test split. Nothing is held out of the training rows unless `validation_fraction`.
    """
    tables = {}
    if train_file is None:
        hub = load_hub_dataset(dataset, "give local files with --train_file (and --validation_file, --test_file)",
                               flag="--dataset")
        if "train" not in hub:
            raise InputError(f"--dataset {dataset}: no train split (it has {', '.join(hub)})")
        tables = {name: (hub[name].to_dict(), f"{dataset}[{name}]") for name in ("train", "test") if name in hub}
    for name, path in (("train", train_file), ("validation", validation_file), ("test", test_file),
                       ("predict", predict_file)):
        if path is not None:
            tables[name] = (read_table(path, f"--{name}_file"), path)
    splits = {name: take_columns(table, source, text_column, None if name == "predict" else label_column)
              for name, (table, source) in tables.items()}
    for split in splits.values():
        if not len(split):
            raise InputError(f"{split.source}: no rows")
    if validation_fraction:
        splits["train"], splits["validation"] = hold_out(splits["train"], validation_fraction, seed)
    splits["train"] = subsample(splits["train"], max_train_samples, seed)
    for name in ("validation", "test"):
        if name in splits:
            splits[name] = subsample(splits[name], max_eval_samples, seed)
    return splits


# -----------------------------------------------------------------------------
# Examples: filled prompts -> token ids -> ATP, MLM or dummy MLM


def atp_example(ids, answer_position, mask_token_id):
    """Answer Token Prediction: the answer token becomes [MASK] and is the only target; every other label is -100."""
    input_ids, labels = list(ids), [-100] * len(ids)
    labels[answer_position] = ids[answer_position]
    input_ids[answer_position] = mask_token_id
    return input_ids, labels


def mlm_example(ids, special_token_ids, mask_token_id, mlm_probability=0.3, dummy=False, generator=None):
    """Standard MLM, or dummy MLM with `dummy=True`, over one token id list; returns (input_ids, labels).

    Each non-special token is chosen with probability `mlm_probability` (the paper's 30%) and every chosen
    one becomes [MASK]: not the 80/10/10 split of transformers' MLM collator. Standard MLM labels the chosen
    positions with their original ids; dummy MLM labels them with the [MASK] id itself (the paper's dummy
    objective, which the model learns almost at once). At least one token is chosen, so that no example
    is left without a target.
    """
    ids_t = torch.tensor(ids)
    candidates = ~torch.isin(ids_t, torch.tensor(sorted(special_token_ids), dtype=ids_t.dtype))
    chosen = (torch.rand(len(ids), generator=generator) < mlm_probability) & candidates
    if not chosen.any() and candidates.any():
        allowed = candidates.nonzero().flatten()
        chosen[allowed[torch.randint(len(allowed), (), generator=generator)]] = True
    labels = torch.full_like(ids_t, -100)
    labels[chosen] = mask_token_id if dummy else ids_t[chosen]
    return ids_t.masked_fill(chosen, mask_token_id).tolist(), labels.tolist()


def draw_objective(mlm_proportion, dummy_mlm_proportion, generator=None):
    """"mlm", "dummy" or "atp", drawn with probabilities mlm_proportion, dummy_mlm_proportion and the rest."""
    u = torch.rand((), generator=generator).item()
    return "mlm" if u < mlm_proportion else "dummy" if u < mlm_proportion + dummy_mlm_proportion else "atp"


def make_example(ids, answer_position, objective, mask_token_id, special_token_ids, mlm_probability=0.3,
                 generator=None):
    """(input_ids, labels) of one training example under `objective` ("atp", "mlm" or "dummy")."""
    if objective == "atp":
        return atp_example(ids, answer_position, mask_token_id)
    return mlm_example(ids, special_token_ids, mask_token_id, mlm_probability, objective == "dummy", generator)


@dataclass
class ObjectiveCollator:
    """Batches encoded prompts, drawing each example's objective and its MLM masks afresh at every use.

    Drawing at batch time (as transformers' MLM collator does) gives MLM examples new masks each epoch.
    Batches are padded to their longest example, rounded up to `pad_to_multiple_of`; padding is labelled -100.
    Features are {"input_ids", "answer_position"}, from `encode_prompts`.
    """
    mask_token_id: int
    pad_token_id: int
    special_token_ids: frozenset
    mlm_proportion: float = 0.0
    dummy_mlm_proportion: float = 0.0
    mlm_probability: float = 0.3
    pad_to_multiple_of: int = 8

    def __call__(self, features):
        examples = [make_example(f["input_ids"], f["answer_position"],
                                 draw_objective(self.mlm_proportion, self.dummy_mlm_proportion),
                                 self.mask_token_id, self.special_token_ids, self.mlm_probability)
                    for f in features]
        input_ids, attention_mask = pad_batch([e[0] for e in examples], self.pad_token_id, self.pad_to_multiple_of)
        labels, _ = pad_batch([e[1] for e in examples], -100, self.pad_to_multiple_of)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class TokenBudgetBatchSampler:
    """Training batches of similar lengths: at most `max_examples` examples and `max_tokens` padded tokens each.

    As transformers' group_by_length does, a seeded shuffle is cut into pools of 50 batches' worth, and each
    pool is sorted by length and cut into batches of `max_examples`; eval.py's length_sorted_batches splits
    a batch that exceeds the token budget, so a batch of long examples holds fewer of them and memory stays
    bounded while short examples still fill whole batches. The grouping is drawn once, so that every
    epoch has the same number of steps (Trainer plans its schedule on it); each epoch visits the batches in a
    new order, the biggest first, so that a batch too big for memory fails at the first step.
    """

    def __init__(self, lengths, max_examples, max_tokens, pad_to_multiple_of, seed=0):
        order = list(range(len(lengths)))
        random.Random(seed).shuffle(order)
        pool_size = 50 * max_examples
        self.batches = []
        for start in range(0, len(order), pool_size):
            pool = sorted(order[start:start + pool_size], key=lambda i: -lengths[i])
            for k in range(0, len(pool), max_examples):
                group = pool[k:k + max_examples]
                self.batches += [[group[j] for j in batch] for batch in
                                 length_sorted_batches([lengths[i] for i in group], max_tokens, pad_to_multiple_of)]
        width = [padded_width(max(lengths[i] for i in b), pad_to_multiple_of) for b in self.batches]
        self.biggest = max(range(len(self.batches)), key=lambda b: len(self.batches[b]) * width[b])
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        """Called by Trainer (through accelerate) before each epoch."""
        self.epoch = epoch

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        rest = [b for b in range(len(self.batches)) if b != self.biggest]
        random.Random(self.seed + self.epoch).shuffle(rest)
        return iter([self.batches[b] for b in [self.biggest] + rest])


# -----------------------------------------------------------------------------
# The loss: the MLM head only where there is a target


def labelled_loss(model, input_ids, attention_mask, labels, num_items=None, call=None):
    """Cross-entropy over the vocabulary at the labelled positions (label != -100), with the MLM head run there only.

    The sum over those positions divided by `num_items`, by default their number: then it is the loss that
    `model(input_ids, attention_mask=attention_mask, labels=labels).loss` computes from logits at every position.
    ATP labels one position per example and (dummy) MLM about 30% of them, so the head's vocabulary projection
    shrinks from every padded position to those. `call` is the wrapped model under DistributedDataParallel
    (mlm_classifier.head_logits).
    """
    where = labels != -100
    logits = head_logits(model, input_ids, attention_mask, where, call)
    total = torch.nn.functional.cross_entropy(logits.float(), labels[where], reduction="sum")
    return total / (num_items if num_items is not None else where.sum())


# -----------------------------------------------------------------------------
# Metrics: the MLM head at the answer's [MASK], restricted to the labels' answer tokens


def score_examples(model, sequences, answer_ids, mask_token_id, pad_token_id, batch_tokens, pad_to_multiple_of):
    """log P(each label's answer token) per sequence (whole-vocabulary softmax), in order.

    The core module's batched scoring reads the last [MASK] of each sequence. Under torchrun each process
    scores its share of the batches and the shares are gathered, so every process returns all scores.
    """
    scores = gather_scores(score_sequences(model, sequences, mask_token_id, pad_token_id, [[i] for i in answer_ids],
                                          batch_tokens, pad_to_multiple_of, shard=current_shard()))
    return [scores[i] for i in range(len(sequences))]


def classification_metrics(scores, gold, class_names):
    """Accuracy, macro-F1, ATP loss, per-class accuracy and confusion matrix from scores and gold indices.

    The prediction is the label whose answer token is likeliest (ties to the earlier label, as in `predict_option`).
    The loss is the mean -log P(gold answer token): the ATP training loss. The confusion matrix has a row
    per gold label and a column per predicted label, both in label map order.
    """
    from sklearn.metrics import confusion_matrix, f1_score

    predicted = [predict_option(s, len(class_names))[0] for s in scores]
    correct = [p == g for p, g in zip(predicted, gold)]
    return {
        "accuracy": sum(correct) / len(correct),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "loss": -sum(s[g] for s, g in zip(scores, gold)) / len(gold),
        "n": len(gold),
        "per_class": accuracy_table(correct, [class_names[g] for g in gold]),
        "confusion_matrix": confusion_matrix(gold, predicted, labels=list(range(len(class_names)))).tolist(),
    }


@dataclass
class EvalSet:
    """One split ready to score: ATP token ids (the answer replaced by [MASK]) and gold label indices."""
    sequences: list
    gold: list


class ATPTrainer(Trainer):
    """Trainer with token-budget batches, the MLM head only at labelled positions, and evaluation by the answer
    tokens' probabilities.

    `scoring` holds score_examples' keyword arguments (answer_ids, mask_token_id, pad_token_id, batch_tokens,
    pad_to_multiple_of). Evaluation does not go through Trainer's prediction loop: it reads the MLM head at
    the answer's [MASK] only, and accuracy is what is logged.
    """

    def __init__(self, *args, batch_sampler, scoring, class_names, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sampler, self.scoring, self.class_names = batch_sampler, scoring, class_names
        # Our loss takes num_items_in_batch whatever the model's forward accepts, so Trainer must count it for
        # every architecture; it then leaves the loss unscaled for gradient accumulation (it is already exact).
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """labelled_loss over the batch, normalised as Trainer normalises a model whose forward takes
        `num_items_in_batch` (ModernBERT's): summed over the labelled positions and divided by their number in
        the whole accumulated batch, of every process. Gradient accumulation and data parallelism then give the
        gradient of one big batch, for every architecture."""
        loss = labelled_loss(self.accelerator.unwrap_model(model), inputs["input_ids"], inputs["attention_mask"],
                             inputs["labels"], num_items_in_batch, call=model)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every process's targets, and DDP averages the gradients over processes.
            loss = loss * self.accelerator.num_processes
        return (loss, {"loss": loss}) if return_outputs else loss

    def get_train_dataloader(self):
        # Our own DataLoader keeps every feature the collator needs (answer_position included) and our
        # batch sampler; accelerate shards its batches across processes under torchrun.
        loader = DataLoader(self.train_dataset, batch_sampler=self.batch_sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory and self.args.device.type == "cuda")
        return self.accelerator.prepare(loader)

    def score(self, sequences):
        """score_examples with the trained model, in eval mode and under the training's autocast."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        with self.accelerator.autocast():
            scores = score_examples(model, sequences, **self.scoring)
        model.train(was_training)
        return scores

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Accuracy, macro-F1 and ATP loss on an EvalSet (the validation set by default), logged as eval_*."""
        examples = eval_dataset if eval_dataset is not None else self.eval_dataset
        start = time.time()
        metrics = classification_metrics(self.score(examples.sequences), examples.gold, self.class_names)
        logged = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items() if k in ("accuracy", "macro_f1", "loss")}
        logged[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 3)
        self.log(logged)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, logged)
        return logged


# -----------------------------------------------------------------------------
# Outputs


def model_card(base_model, prompt, label_map, answer_tokens, inference_prompt, max_length, metrics):
    """README.md for the saved folder: base model, prompt, labels, metrics, and how to use it.

    `answer_tokens` are the labels' answer tokens as the vocabulary spells them (`ĠWorld`): given so, the
    fill-mask pipeline finds them without the "does not exist in the model vocabulary" warning.
    """
    rows = "\n".join(f"| {label} | `{verbalizer}` | `{token}` |"
                     for (label, verbalizer), token in zip(label_map.items(), answer_tokens))
    scores = "\n".join(f"| {split} | {metrics[f'{split}_accuracy']:.4f} | {metrics[f'{split}_macro_f1']:.4f} | "
                       f"{metrics[f'{split}_n']} |"
                       for split in ("validation", "test") if f"{split}_accuracy" in metrics)
    targets = json.dumps(dict(zip(answer_tokens, label_map)), ensure_ascii=False)
    return f"""---
base_model: {base_model}
pipeline_tag: fill-mask
---
# Classifier fine-tuned from {base_model} with Answer Token Prediction

Trained with `train.py` (the method of *It's All in The [MASK]*, Clavié, Cooper, Warner, 2025): the model
answers with one token, predicted by its MLM head at the `[MASK]` after `{ANCHOR}`. Texts were cut to fit
{max_length} tokens; only the text is ever cut, never the prompt or the answer.

## Prompt (`prompt.txt`)
```text
{prompt}
```

## Labels (`label_map.json`)
| label | verbalizer | answer token |
|---|---|---|
{rows}

## Metrics (`metrics.json`)
| split | accuracy | macro-F1 | n |
|---|---|---|---|
{scores or "| (no validation or test split) | | | |"}

## Use

With the cookbook's `mlm_classifier.py` beside your code, which reads `prompt.txt`, `label_map.json` and
`classifier.json` and cuts long texts as training did:
```python
from mlm_classifier import MLMClassifier

clf = MLMClassifier.from_pretrained("path/to/this/folder")
print(clf(["your text here"]))  # [{{"label": ..., "probabilities": {{label: probability, ...}}}}]
```
or from the command line: `python classify.py --model path/to/this/folder --input texts.csv`.

With transformers alone (texts longer than {max_length} tokens are not cut here):
```python
from transformers import pipeline

fill = pipeline("fill-mask", model="path/to/this/folder")
template = {json.dumps(inference_prompt, ensure_ascii=False)}
targets = {targets}  # each label's answer token, spelled as in the vocabulary -> label
answers = fill(template.replace("{{text}}", "your text here".strip()), targets=list(targets), top_k=len(targets))
total = sum(a["score"] for a in answers)
probabilities = {{targets[fill.tokenizer.convert_ids_to_tokens(a["token"])]: a["score"] / total for a in answers}}
label = max(probabilities, key=probabilities.get)
print(label, probabilities)
```
"""


def write_predictions(path, split, scores, class_names):
    """predictions.jsonl: per row, its index, text, predicted label and the probability of each label."""
    records = [prediction_record(row, text, class_names, predict_option(s, len(class_names))[1])
               for row, text, s in zip(split.rows, split.texts, scores)]
    write_atomic(path, records_to_jsonl(records))


def classifier_settings(base_model, max_length):
    """classifier.json: what classify.py needs beyond prompt.txt and label_map.json to score as training did."""
    return {"max_length": max_length, "base_model": base_model}


# -----------------------------------------------------------------------------
# Flags


def build_parser():
    """The command line, every default in view; each flag also takes hyphens (--eval-steps), as published."""
    p = make_parser(__doc__)
    # Data
    add_flag(p, "dataset", default="SetFit/ag_news",
             help="hub dataset (its train and test splits), used without --train_file")
    add_flag(p, "train_file", default=None, help="csv, json, jsonl or parquet")
    add_flag(p, "validation_file", default=None, help="picks the best checkpoint by accuracy")
    add_flag(p, "test_file", default=None, help="replaces the hub's test split")
    add_flag(p, "predict_file", default=None, help="texts to label: writes predictions.jsonl")
    add_flag(p, "text_column", default="text", help="the column holding the texts")
    add_flag(p, "label_column", default="label_text", help="the column holding the raw labels")
    add_flag(p, "max_train_samples", type=int, default=None, help="at most this many training rows, seeded")
    add_flag(p, "max_eval_samples", type=int, default=None, help="at most this many validation and test rows, seeded")
    add_flag(p, "validation_fraction", type=float, default=0.0, help="hold out this share of the training rows")
    # Prompt and labels
    add_flag(p, "label_map", default=None, help="JSON {raw label: verbalizer} (default: the published AG News map)")
    add_flag(p, "prompt_file", default=None,
             help="template with {text} (or {txt}), optional {options}, ending in `[unused0] {label}` "
                  "(default: the published AG News prompt)")
    add_flag(p, "max_length", type=int, default=512, help="tokens per example; only the text is cut to fit")
    # Objective
    add_flag(p, "mlm_proportion", type=float, default=None,
             help="share of training examples with standard MLM (default: 0)")
    add_flag(p, "dummy_mlm_proportion", type=float, default=None, help="share with dummy MLM (default: 0)")
    add_flag(p, "mlm_probability", type=float, default=0.3, help="share of tokens masked in (dummy) MLM examples")
    add_flag(p, "true_mlm_proportion", type=float, default=None,
             help="published spelling: this share gets standard MLM, or dummy MLM with --dummy_examples")
    add_flag(p, "dummy_examples", action="store_true", help="published: --true_mlm_proportion means dummy MLM")
    # Model and training
    add_flag(p, "model", default="answerdotai/ModernBERT-Large-Instruct", help="hub name or local folder")
    add_flag(p, "attn_implementation", default="auto", choices=["auto", "sdpa", "flash_attention_2", "eager"],
             help="auto: flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa")
    add_flag(p, "num_train_epochs", type=float, default=2, help="passes over the training rows")
    add_flag(p, "max_steps", type=int, default=-1, help="stop after this many optimizer steps (-1: epochs decide)")
    add_flag(p, "per_device_train_batch_size", type=int, default=8, help="at most this many examples per batch")
    add_flag(p, "per_device_eval_batch_size", type=int, default=8,
             help="evaluation batches hold up to this x --max_length padded tokens")
    add_flag(p, "max_batch_tokens", type=int, default=None,
             help="padded tokens per training batch (default: per_device_train_batch_size x max_length)")
    add_flag(p, "pad_to_multiple_of", type=int, default=None,
             help="batch width rounding (default: 64 on a GPU, 8 on the CPU)")
    add_flag(p, "gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    add_flag(p, "learning_rate", type=float, default=2e-5, help="peak learning rate (linear decay)")
    add_flag(p, "weight_decay", type=float, default=0.01, help="AdamW weight decay")
    add_flag(p, "warmup_ratio", type=float, default=0.0, help="share of the steps spent warming up")
    add_flag(p, "logging_steps", type=int, default=10, help="log the training loss every N steps")
    add_flag(p, "eval_strategy", default="auto", choices=["auto", "no", "steps", "epoch"],
             help="auto: steps with a validation set, else no (default: auto)")
    add_flag(p, "eval_steps", type=int, default=500, help="evaluate every N steps")
    add_flag(p, "save_strategy", default="auto", choices=["auto", "no", "steps", "epoch", "best"],
             help="auto: best when evaluating, else no (default: auto)")
    add_flag(p, "save_steps", type=int, default=500, help="save a checkpoint every N steps")
    add_flag(p, "save_total_limit", type=int, default=1, help="checkpoints kept (the best one is always kept)")
    add_flag(p, "seed", type=int, default=42, help="seeds the model init, sampling, shuffles and held-out rows")
    add_flag(p, "output_dir", default="./finetuned_model_agn", help="where the model, files and checkpoints go")
    add_flag(p, "resume_from_checkpoint", default=None,
             help="a checkpoint folder, or `last` for the newest complete one under --output_dir")
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


CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def checkpoint_step(path):
    """The step of a `checkpoint-<step>` folder, or None for any other name."""
    name = os.path.basename(os.path.normpath(path))
    prefix, _, step = name.rpartition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() else None


def missing_from_checkpoint(path):
    """What a checkpoint folder lacks to resume from (Trainer writes these; a crash can leave some out, or
    leave trainer_state.json cut short)."""
    files = set(os.listdir(path))
    missing = [name for name in CHECKPOINT_FILES if name not in files]
    if not files & set(WEIGHT_FILES):
        missing.append("the model weights")
    if "trainer_state.json" in files and checkpoint_global_step(path) is None:
        missing.append("a readable trainer_state.json")
    return missing


def resolve_checkpoint(resume_from_checkpoint, output_dir):
    """The checkpoint folder to resume from: a complete one given by path, or with `last` the newest complete
    `checkpoint-<step>` under `output_dir` (a half-written newer one is skipped, and said so)."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "last":
        if not os.path.isdir(output_dir):
            raise InputError(f"--resume_from_checkpoint last: --output_dir {output_dir} does not exist yet")
        steps = sorted(((checkpoint_step(name), name) for name in os.listdir(output_dir) if checkpoint_step(name)
                        is not None and os.path.isdir(os.path.join(output_dir, name))), reverse=True)
        for _, name in steps:
            path = os.path.join(output_dir, name)
            missing = missing_from_checkpoint(path)
            if not missing:
                return path
            say(f"note: skipping {path}: it lacks {', '.join(missing)} (half-written?)")
        raise InputError(f"--resume_from_checkpoint last: no complete checkpoint-<step> folder under {output_dir}")
    if not os.path.isdir(resume_from_checkpoint):
        raise InputError(f"--resume_from_checkpoint {resume_from_checkpoint}: no such folder")
    missing = missing_from_checkpoint(resume_from_checkpoint)
    if missing:
        raise InputError(f"--resume_from_checkpoint {resume_from_checkpoint}: it lacks {', '.join(missing)}, "
                         "so it was not finished; give an earlier checkpoint, or `last`")
    return resume_from_checkpoint


def checkpoint_global_step(path):
    """The global step a checkpoint was saved at (0 without one; None when its trainer_state.json cannot be read)."""
    if path is None:
        return 0
    try:
        with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
            step = json.load(f).get("global_step")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return step if type(step) is int else None


def loss_since_resume(trainer_loss, resumed_step, global_step, transformers_version):
    """Trainer's train_loss as the mean over the steps trained since the resume. Since transformers 5.19 it is that
    already; before, Trainer divided the same sum by every step of the run, the resumed ones included."""
    from packaging.version import Version

    if resumed_step and global_step > resumed_step and Version(transformers_version) < Version("5.19"):
        return trainer_loss * global_step / (global_step - resumed_step)
    return trainer_loss


def whole_run_loss(log_history, resumed_step, since_resume, global_step):
    """The mean training loss over the whole run, also after a resume: the logged losses up to the resumed step,
    weighted by the steps each covers, joined with `since_resume`, the mean over the steps since (loss_since_resume)."""
    if not resumed_step:
        return since_resume
    covered, total, previous = 0, 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) <= resumed_step:
            total += entry["loss"] * (entry["step"] - previous)
            covered, previous = entry["step"], entry["step"]
    if not covered:
        return since_resume
    return (total + since_resume * (global_step - resumed_step)) / (covered + global_step - resumed_step)


def bf16_available():
    """Train in bfloat16 where the GPU supports it; float32 on the CPU."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def training_arguments(args, validating, bf16, **overrides):
    """TrainingArguments for our flags, mapped onto transformers 5 names (an InputError if they clash).

    `overrides` are further TrainingArguments (the sweep's classification head asks for length grouping).
    """
    eval_strategy = args.eval_strategy if args.eval_strategy != "auto" else ("steps" if validating else "no")
    save_strategy = args.save_strategy if args.save_strategy != "auto" else ("best" if eval_strategy != "no" else "no")
    keep_best = eval_strategy != "no" and save_strategy != "no"
    try:
        return TrainingArguments(
            output_dir=args.output_dir, num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
            per_device_train_batch_size=args.per_device_train_batch_size,
            per_device_eval_batch_size=args.per_device_eval_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps, learning_rate=args.learning_rate,
            weight_decay=args.weight_decay, warmup_steps=args.warmup_ratio,  # transformers 5: a fraction is a ratio
            logging_steps=args.logging_steps, eval_strategy=eval_strategy, eval_steps=args.eval_steps,
            save_strategy=save_strategy, save_steps=args.save_steps, save_total_limit=args.save_total_limit,
            load_best_model_at_end=keep_best, metric_for_best_model="accuracy" if keep_best else None,
            greater_is_better=True if keep_best else None, bf16=bf16, seed=args.seed,
            use_cpu=not torch.cuda.is_available(),  # also what makes torchrun on the CPU data-parallel (gloo)
            remove_unused_columns=False,  # the collator needs answer_position
            ddp_find_unused_parameters=False,  # every example has a target, so the head is always used
            **overrides,
        )
    except ValueError as e:
        raise InputError(f"--eval_strategy {eval_strategy} / --save_strategy {save_strategy}: {e}") from None


# -----------------------------------------------------------------------------


@dataclass
class TrainingData:
    """Everything one training run needs that does not depend on its hyperparameters: checked and tokenized once."""
    tokenizer: object
    prompt: str
    before: str
    after: str
    options: str
    label_map: dict
    answer_ids: list
    splits: dict  # name -> Split
    encoded: dict  # name -> (token id lists, answer positions)
    truncated: dict  # name -> number of examples cut to fit

    @property
    def class_names(self):
        return list(self.label_map)

    def eval_set(self, name):
        """The split's ATP inputs (answer replaced by [MASK]) and gold label indices (None without labels)."""
        sequences, positions = self.encoded[name]
        labels = self.splits[name].labels
        gold = None if labels is None else [self.class_names.index(label) for label in labels]
        return EvalSet(mask_answers(sequences, positions, self.tokenizer.mask_token_id), gold)


def prepare(model_name, prompt, prompt_source, label_map, label_map_source, splits, max_length):
    """Check the prompt, labels and verbalizers against the data and the tokenizer, then tokenize every split."""
    before, after = parse_prompt(prompt, prompt_source)
    for split in splits.values():
        if split.labels is not None:
            check_labels(split, label_map, label_map_source)
    tokenizer = load_tokenizer(model_name)
    positions = max_positions(model_name, tokenizer)
    if positions and max_length > positions:
        raise InputError(f"--max_length {max_length} is more than the {positions} positions of --model {model_name}")
    options = options_block(label_map)
    answer_ids = answer_token_ids(tokenizer, before, after, label_map, options)
    check_fixed_length(tokenizer, before, after, label_map, options, max_length)
    encoded, truncated = {}, {}
    for name, split in splits.items():
        # Rows without a label (--predict_file) are filled with any verbalizer: it is masked anyway.
        fills = ([label_map[label] for label in split.labels] if split.labels is not None
                 else [next(iter(label_map.values()))] * len(split))
        sequences, positions, truncated[name] = encode_prompts(
            tokenizer, before, after, split.texts, fills, options, max_length, split.rows, split.source)
        encoded[name] = (sequences, positions)
        say(f"{name}: {len(split)} examples from {split.source}, "
            f"{truncated[name]} cut to fit --max_length {max_length}")
    say("answer tokens: " + ", ".join(f"{label} -> {token!r}" for label, token in
                                      zip(label_map, tokenizer.convert_ids_to_tokens(answer_ids))))
    return TrainingData(tokenizer, prompt, before, after, options, label_map, answer_ids, splits, encoded, truncated)


def fit(args, data, mlm_proportion=0.0, dummy_mlm_proportion=0.0):
    """Train `args.model` on prepared data, evaluate, and save to `args.output_dir`; returns metrics.json's dict.

    `args` holds train.py's flags (parse_args); the sweep calls this once per run with the same `data`.
    """
    bf16 = bf16_available()
    training_args = training_arguments(args, "validation" in data.splits, bf16)
    _, pad_to_multiple_of = batch_defaults(training_args.device, pad_to_multiple_of=args.pad_to_multiple_of)
    tokenizer, class_names = data.tokenizer, data.class_names
    mask_token_id = tokenizer.mask_token_id
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else mask_token_id  # masked out anyway

    # Several GPUs in one process would get Trainer's DataParallel, which splits each batch under the rows that
    # head_logits' hook selects: one process per GPU instead.
    if training_args.n_gpu > 1:
        raise InputError(f"{training_args.n_gpu} GPUs in one process: run `torchrun --nproc_per_node "
                         f"{training_args.n_gpu} train.py ...` (one process per GPU), or pick one GPU with "
                         "CUDA_VISIBLE_DEVICES")

    # The model, untouched: ATPTrainer.compute_loss runs its head only at the labelled positions, so every saved
    # folder is the plain masked LM it was, for fill-mask too.
    dtype = torch.bfloat16 if bf16 else torch.float32
    attn_implementation = resolve_attn_implementation(args.attn_implementation, training_args.device, dtype)
    model = load_masked_lm(args.model, torch.float32, attn_implementation, training_args.device)  # fp32 master weights

    train_sequences, train_positions = data.encoded["train"]
    train_dataset = [{"input_ids": ids, "answer_position": p} for ids, p in zip(train_sequences, train_positions)]
    batch_sampler = TokenBudgetBatchSampler(
        [len(ids) for ids in train_sequences], args.per_device_train_batch_size,
        args.max_batch_tokens or args.per_device_train_batch_size * args.max_length, pad_to_multiple_of, args.seed)
    collator = ObjectiveCollator(mask_token_id, pad_token_id, frozenset(tokenizer.all_special_ids), mlm_proportion,
                                 dummy_mlm_proportion, args.mlm_probability, pad_to_multiple_of)
    scoring = dict(answer_ids=data.answer_ids, mask_token_id=mask_token_id, pad_token_id=pad_token_id,
                   batch_tokens=args.per_device_eval_batch_size * args.max_length,
                   pad_to_multiple_of=pad_to_multiple_of)
    trainer = ATPTrainer(model=model, args=training_args, train_dataset=train_dataset,
                         eval_dataset=data.eval_set("validation") if "validation" in data.splits else None,
                         data_collator=collator, processing_class=tokenizer,
                         batch_sampler=batch_sampler, scoring=scoring, class_names=class_names)
    say(f"objectives: {1 - mlm_proportion - dummy_mlm_proportion:.0%} ATP, {mlm_proportion:.0%} MLM, "
        f"{dummy_mlm_proportion:.0%} dummy MLM; {len(batch_sampler)} batches per epoch per {training_args.world_size} "
        f"process(es); {'bf16' if bf16 else 'float32'}, {attn_implementation}")

    # Train; with a validation set, Trainer reloads the checkpoint of best validation accuracy at the end.
    resumed_step = checkpoint_global_step(args.resume_from_checkpoint)
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    since_resume = loss_since_resume(result.training_loss, resumed_step, result.global_step, transformers.__version__)
    train_loss = whole_run_loss(trainer.state.log_history, resumed_step, since_resume, result.global_step)
    metrics = {"labels": class_names, "train_loss": train_loss, "global_step": result.global_step,
               "train_runtime": result.metrics.get("train_runtime"), "truncated": data.truncated}
    if resumed_step:
        metrics["resumed_from_step"] = resumed_step
    if training_args.load_best_model_at_end and trainer.state.best_global_step:
        metrics["best_step"] = trainer.state.best_global_step

    # Final evaluation, by every process (each scores a share), and the outputs, by the first.
    for name in ("validation", "test"):
        if name in data.splits:
            examples = data.eval_set(name)
            scores = trainer.score(examples.sequences)
            for key, value in classification_metrics(scores, examples.gold, class_names).items():
                metrics[f"{name}_{key}"] = value
    prediction_scores = trainer.score(data.eval_set("predict").sequences) if "predict" in data.splits else None
    trainer.save_model(args.output_dir)  # with the tokenizer, [unused0] registered as one token if load_tokenizer did
    trainer.save_state()  # trainer_state.json
    if trainer.is_world_process_zero():
        out = args.output_dir
        write_atomic(os.path.join(out, "label_map.json"),
                     json.dumps(data.label_map, indent=2, ensure_ascii=False) + "\n")
        write_atomic(os.path.join(out, "prompt.txt"), data.prompt + "\n")
        write_atomic(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=2) + "\n")
        write_atomic(os.path.join(out, SETTINGS_FILE),
                     json.dumps(classifier_settings(args.model, args.max_length), indent=2) + "\n")
        inference_prompt = fill_prompt(data.before, data.after, "{text}", tokenizer.mask_token, data.options)[0]
        answer_tokens = tokenizer.convert_ids_to_tokens(data.answer_ids)
        write_atomic(os.path.join(out, "README.md"), model_card(args.model, data.prompt, data.label_map, answer_tokens,
                                                                inference_prompt, args.max_length, metrics))
        if prediction_scores is not None:
            write_predictions(os.path.join(out, "predictions.jsonl"), data.splits["predict"], prediction_scores,
                              class_names)
        for name in ("validation", "test"):
            if f"{name}_accuracy" in metrics:
                say(f"{name}: accuracy {metrics[f'{name}_accuracy']:.4f}, macro-F1 {metrics[f'{name}_macro_f1']:.4f} "
                    f"({metrics[f'{name}_n']} examples)")
        say(f"wrote {out}/")
    return metrics


def main(argv=None):
    """Train, evaluate and save; returns the metrics written to metrics.json."""
    args = parse_args(argv)
    check_flags(args)
    check_model_source(args.model)
    args.resume_from_checkpoint = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    mlm_proportion, dummy_mlm_proportion = objective_proportions(
        args.mlm_proportion, args.dummy_mlm_proportion, args.true_mlm_proportion, args.dummy_examples)

    # 1. The prompt, the label map and the rows, each checked before anything heavy; then token ids.
    prompt = read_prompt(args.prompt_file, "--prompt_file") if args.prompt_file else PUBLISHED_PROMPT
    prompt_source = f"--prompt_file {args.prompt_file}" if args.prompt_file else "the default prompt"
    parse_prompt(prompt, prompt_source)  # a bad prompt fails before the data loads
    label_map = read_label_map(args.label_map, "--label_map") if args.label_map else dict(PUBLISHED_LABEL_MAP)
    splits = load_splits(args.dataset, args.train_file, args.validation_file, args.test_file, args.predict_file,
                         args.text_column, args.label_column, args.validation_fraction, args.max_train_samples,
                         args.max_eval_samples, args.seed)
    label_map_source = f"--label_map {args.label_map}" if args.label_map else "the default AG News label map"
    data = prepare(args.model, prompt, prompt_source, label_map, label_map_source, splits, args.max_length)

    # 2. Train, evaluate, save.
    metrics = fit(args, data, mlm_proportion, dummy_mlm_proportion)
    end_distributed()
    return metrics


if __name__ == "__main__":
    run_command(main)
