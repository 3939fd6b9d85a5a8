"""ATPTrainer: transformers' Trainer for Answer Token Prediction, the metrics it reports, the folder it saves.

Trainer takes seconds to import, so this module is imported once train.py's flags are checked (and
mlm_classifier's __init__ leaves it out): `python train.py --help` and a bad flag answer at once.
"""

import json
import os
import random
import string
import time

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments

from .checkpoints import remove_checkpoints
from .spec import SETTINGS_FILE
from .cli import InputError, say
from .data import accuracy_table, prediction_record, records_to_jsonl, write_atomic
from .models import current_shard, gather_scores
from .multilabel import ANSWERS, OPTIONS, THRESHOLD, multi_label_record, yes_probabilities
from .prompts import ANCHOR, TEXT_FIELD, as_template, fill_template
from .scoring import labelled_loss, length_sorted_batches, padded_width, predict_option, score_sequences

HEADLINE = ("accuracy", "micro_f1", "macro_f1", "exact_match", "loss")  # what evaluation logs
MODEL_CARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_card.md")


def bf16_available():
    """Train in bfloat16 where the GPU supports it; float32 on the CPU."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# -----------------------------------------------------------------------------
# Batches and arguments


class TokenBudgetBatchSampler:
    """Training batches of similar lengths: at most `max_examples` examples and `max_tokens` padded tokens each.

    As transformers' group_by_length does, a seeded shuffle is cut into pools of 50 batches' worth, and each
    pool is sorted by length and cut into batches of `max_examples`; the core's length_sorted_batches splits
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


def training_arguments(args, validating, bf16, best_metric="accuracy", **overrides):
    """TrainingArguments for our flags, mapped onto transformers 5 names (an InputError if they clash). The best
    checkpoint is chosen on validation `best_metric` (multi-label: micro_f1).

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
            load_best_model_at_end=keep_best, metric_for_best_model=best_metric if keep_best else None,
            greater_is_better=True if keep_best else None, bf16=bf16, seed=args.seed,
            use_cpu=not torch.cuda.is_available(),  # also what makes torchrun on the CPU data-parallel (gloo)
            remove_unused_columns=False,  # the collator needs answer_position
            ddp_find_unused_parameters=False,  # every example has a target, so the head is always used
            **overrides,
        )
    except ValueError as e:
        raise InputError(f"--eval_strategy {eval_strategy} / --save_strategy {save_strategy}: {e}") from None


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


class ATPTrainer(Trainer):
    """Trainer with token-budget batches, the MLM head only at labelled positions, and evaluation by the answer
    tokens' probabilities.

    `scoring` holds score_examples' keyword arguments (answer_ids, mask_token_id, pad_token_id, batch_tokens,
    pad_to_multiple_of). Evaluation does not go through Trainer's prediction loop: it reads the MLM head at
    the answer's [MASK] only, and accuracy is what is logged.
    """

    def __init__(self, *args, batch_sampler, scoring, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sampler, self.scoring = batch_sampler, scoring
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

    def _issue_warnings_after_load(self, load_result):
        # A decoder tied to the input embeddings (ModernBERT's, BERT's) is saved once, as the embeddings, so when
        # Trainer reloads the best checkpoint it lists the decoder as "missing" although the tie loads it. Only keys
        # that really are tied are dropped from that warning.
        model = self.accelerator.unwrap_model(self.model)
        output, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
        if output is not None and embeddings is not None and output.weight is embeddings.weight:
            tied = set(getattr(model, "_tied_weights_keys", None) or ())
            load_result.missing_keys[:] = [key for key in load_result.missing_keys if key not in tied]
        super()._issue_warnings_after_load(load_result)

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
        """The headline metrics (accuracy or micro-F1, macro-F1, exact match, ATP loss) of an EvalSet (the validation
        set by default), logged as eval_*."""
        examples = eval_dataset if eval_dataset is not None else self.eval_dataset
        start = time.time()
        metrics = examples.metrics(self.score(examples.sequences))
        logged = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items() if k in HEADLINE}
        logged[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 3)
        self.log(logged)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, logged)
        return logged


# -----------------------------------------------------------------------------
# The trained folder's README.md


def model_card(base_model, prompt, label_map, answer_tokens, inference_prompt, max_length, metrics,
               fields=(TEXT_FIELD,), multi_label=False):
    """README.md for the saved folder, from model_card.md: base model, prompt, labels, metrics, and how to use it.
    `fields` are the template's fields, each filled in the fill-mask snippet from its own placeholder.

    `answer_tokens` are the labels' answer tokens as the vocabulary spells them (`ĠWorld`): given so, the
    fill-mask pipeline finds them without the "does not exist in the model vocabulary" warning. Multi-label, they
    are yes and no, and each label is asked about in turn.
    """
    answers = dict(zip(answer_tokens, ANSWERS if multi_label else label_map))
    rows = "\n".join(f"| {label} | `{verbalizer}` | " + ("yes/no" if multi_label else f"`{token}`") + " |"
                     for (label, verbalizer), token in zip(label_map.items(), answer_tokens))
    headline = "micro_f1" if multi_label else "accuracy"
    scores = "\n".join(f"| {split} | {metrics[f'{split}_{headline}']:.4f} | {metrics[f'{split}_macro_f1']:.4f} | "
                       f"{metrics[f'{split}_n']} |"
                       for split in ("validation", "test") if f"{split}_{headline}" in metrics)
    with open(MODEL_CARD, encoding="utf-8") as f:
        template = string.Template(f.read())
    filled = "template" + "".join(f'.replace("{{{field}}}", "your {"text" if field == TEXT_FIELD else field} '
                                  f'here".strip())' for field in fields)
    return template.substitute(
        base_model=base_model, anchor=ANCHOR, max_length=max_length, prompt=prompt, label_rows=rows,
        name_column="name in the question" if multi_label else "verbalizer",
        headline="micro-F1" if multi_label else "accuracy",
        metric_rows=scores or "| (no validation or test split) | | | |",
        multi_label_note=MULTI_LABEL_NOTE if multi_label else "",
        inference_prompt=json.dumps(inference_prompt, ensure_ascii=False), filled_template=filled,
        targets=json.dumps(answers, ensure_ascii=False))


MULTI_LABEL_NOTE = ("\nThis folder is **multi-label**: each label is a yes/no question. Put a label's name (the label "
                    "map's value) where the template says `{label}`, and read P(yes); a label applies when P(yes) >= "
                    "0.5. MLMClassifier and classify.py do this for every label.\n")


def save_trained_folder(trainer, data, settings, metrics, prediction_scores):
    """The trained folder: the model and tokenizer ([unused0] registered as one token if load_tokenizer did),
    trainer_state.json, and, from the first process, label_map.json, prompt.txt, metrics.json, classifier.json,
    the model card and predictions.jsonl."""
    out = settings.output_dir
    trainer.save_model(out)
    trainer.save_state()
    if not trainer.is_world_process_zero():
        return
    write_atomic(os.path.join(out, "label_map.json"), json.dumps(data.label_map, indent=2, ensure_ascii=False) + "\n")
    write_atomic(os.path.join(out, "prompt.txt"), data.prompt + "\n")
    write_atomic(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=2) + "\n")
    # What classify.py needs beyond prompt.txt and label_map.json; `columns` are those the input must have beyond
    # --text_column (the prompt's placeholders that name columns), checked before a model loads.
    template = data.template if data.template is not None else as_template(data.before, data.after)
    classifier = {"max_length": settings.max_length, "base_model": settings.model, "columns": list(template.columns)}
    if data.multi_label:
        classifier.update(multi_label=True, threshold=THRESHOLD)
    write_atomic(os.path.join(out, SETTINGS_FILE), json.dumps(classifier, indent=2) + "\n")
    # Each field's own placeholder stays in the model card's template ({text}, {premise}, ...), filled there.
    if data.multi_label:
        inference_prompt = data.prompt.replace("{answer}", data.tokenizer.mask_token).replace("{options}", OPTIONS)
    else:
        inference_prompt = fill_template(template, {field: "{" + field + "}" for field in template.fields},
                                         data.tokenizer.mask_token, data.options)[0]
    answer_tokens = data.tokenizer.convert_ids_to_tokens(data.answer_ids)
    write_atomic(os.path.join(out, "README.md"), model_card(settings.model, data.prompt, data.label_map, answer_tokens,
                                                            inference_prompt, settings.max_length, metrics,
                                                            template.fields, data.multi_label))
    if prediction_scores is not None:
        rows, names = data.splits["predict"], data.class_names
        if data.multi_label:
            yes = yes_probabilities(prediction_scores, len(names))
            records = [multi_label_record(row, text, names, p) for row, text, p in zip(rows.rows, rows.texts, yes)]
        else:
            records = [prediction_record(row, text, names, predict_option(s, len(names))[1])
                       for row, text, s in zip(rows.rows, rows.texts, prediction_scores)]
        write_atomic(os.path.join(out, "predictions.jsonl"), records_to_jsonl(records))
    headline = "micro_f1" if data.multi_label else "accuracy"
    for name in ("validation", "test"):
        if f"{name}_{headline}" in metrics:
            say(f"{name}: {headline.replace('_', '-')} {metrics[f'{name}_{headline}']:.4f}, macro-F1 "
                f"{metrics[f'{name}_macro_f1']:.4f} ({metrics[f'{name}_n']} examples)")
    inputs = (settings.model, settings.resume_from_checkpoint)  # never removed: the run read them
    removed = [] if settings.keep_checkpoints else remove_checkpoints(out, keep=inputs)
    note = f" (removed {', '.join(removed)}: the saved model does not need them; --keep_checkpoints keeps them)"
    say(f"wrote {out}/" + (note if removed else ""))
