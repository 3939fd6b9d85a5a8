"""Training with transformers' Trainer: `fit` (Answer Token Prediction through the MLM head), the folder it saves
with its model card, and `fit_classifier`, Table 3's classification-head baseline. Trainer takes seconds to import,
so this module loads on first use (`mlm_classifier.fit`): a script's --help and a bad flag answer at once."""

import json
import os
import random
import time

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments, set_seed

from .anchor import ANCHOR
from .checkpoints import checkpoint_global_step, loss_since_resume, remove_checkpoints, whole_run_loss
from .data import prediction_record, records_to_jsonl, say, write_atomic
from .errors import InputError
from .models import attention_for, load_pretrained
from .multilabel import ANSWERS, OPTIONS, THRESHOLD
from .objectives import ObjectiveCollator, labelled_loss
from .prompts import TEXT_FIELD, fill_template, options_block
from .scoring import decide, length_sorted_batches, padded_width, score_sequences, slot_probabilities
from .spec import SETTINGS_FILE
from .training import classification_metrics, yes_probabilities

HEADLINE = ("accuracy", "micro_f1", "macro_f1", "exact_match", "loss")  # what evaluation logs
MODEL_CARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_card.md")


class TokenBudgetBatchSampler:
    """Training batches of similar lengths: at most `max_examples` examples and `max_tokens` padded tokens each, drawn
    once so that every epoch has the same steps (Trainer plans on it); each epoch visits them in a new order, the
    biggest first, so that a batch too big for memory fails at once."""

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

    def set_epoch(self, epoch):  # called through accelerate before each epoch
        self.epoch = epoch

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        rest = [b for b in range(len(self.batches)) if b != self.biggest]
        random.Random(self.seed + self.epoch).shuffle(rest)
        return iter([self.batches[b] for b in [self.biggest] + rest])


def training_arguments(settings, validating, bf16=None, best_metric="accuracy", **overrides):
    """TrainingArguments for our settings (an InputError if they clash); bf16 by default where the GPU has it."""
    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    eval_strategy = settings.eval_strategy if settings.eval_strategy != "auto" else ("steps" if validating else "no")
    save_strategy = (settings.save_strategy if settings.save_strategy != "auto"
                     else "best" if eval_strategy != "no" else "no")
    keep_best = eval_strategy != "no" and save_strategy != "no"
    try:
        return TrainingArguments(
            output_dir=settings.output_dir, num_train_epochs=settings.num_train_epochs, max_steps=settings.max_steps,
            per_device_train_batch_size=settings.per_device_train_batch_size,
            per_device_eval_batch_size=settings.per_device_eval_batch_size,
            gradient_accumulation_steps=settings.gradient_accumulation_steps, learning_rate=settings.learning_rate,
            weight_decay=settings.weight_decay, warmup_steps=settings.warmup_ratio,  # a fraction is a ratio
            logging_steps=settings.logging_steps, eval_strategy=eval_strategy, eval_steps=settings.eval_steps,
            save_strategy=save_strategy, save_steps=settings.save_steps, save_total_limit=settings.save_total_limit,
            load_best_model_at_end=keep_best, metric_for_best_model=best_metric if keep_best else None,
            greater_is_better=True if keep_best else None, bf16=bf16, seed=settings.seed,
            use_cpu=not torch.cuda.is_available(),  # also what makes torchrun on the CPU data-parallel (gloo)
            remove_unused_columns=False,  # the collator needs answer_position
            ddp_find_unused_parameters=False,  # every example has a target, so the head is always used
            **overrides,
        )
    except ValueError as e:
        raise InputError(f"--eval_strategy {eval_strategy} / --save_strategy {save_strategy}: {e}") from None


class ATPTrainer(Trainer):
    """Trainer with token-budget batches, the MLM head run only at labelled positions, and evaluation by the answer
    tokens' probabilities at the [MASK] only. `scoring` holds score_sequences' arguments."""

    def __init__(self, *args, batch_sampler, scoring, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_sampler, self.scoring = batch_sampler, scoring
        # Trainer must count num_items_in_batch for every architecture, and not rescale our (exact) loss.
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """labelled_loss divided by the labelled positions of the whole accumulated batch of every process: gradient
        accumulation and data parallelism then give the gradient of one big batch, for every architecture."""
        unwrapped = self.accelerator.unwrap_model(model)
        loss = labelled_loss(unwrapped, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                             num_items_in_batch, call=model if model is not unwrapped else None)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every process's targets, and DDP averages the gradients over processes.
            loss = loss * self.accelerator.num_processes
        return (loss, {"loss": loss}) if return_outputs else loss

    def get_train_dataloader(self):
        # Our batch sampler, and every feature the collator needs; accelerate shards the batches under torchrun.
        loader = DataLoader(self.train_dataset, batch_sampler=self.batch_sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers,
                            pin_memory=self.args.dataloader_pin_memory and self.args.device.type == "cuda")
        return self.accelerator.prepare(loader)

    def score(self, sequences):
        """log P(each answer token) per sequence, in eval mode; under torchrun each process scores a share, gets all."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        with self.accelerator.autocast():
            scores = score_sequences(model, sequences, **self.scoring,
                                     shard=(self.args.process_index, self.args.world_size))
        model.train(was_training)
        return [scores[i] for i in range(len(sequences))]

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """The headline metrics of an EvalSet (the validation set by default), logged as eval_*."""
        examples = eval_dataset if eval_dataset is not None else self.eval_dataset
        start = time.time()
        metrics = examples.metrics(self.score(examples.sequences))
        logged = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items() if k in HEADLINE}
        logged[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 3)
        self.log(logged)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, logged)
        return logged


def fit(data, settings):
    """Train `settings.model` on prepared data (training.prepare), evaluate, and save to `settings.output_dir`;
    returns metrics.json's dict. The model gets no new head, so the saved folder is a plain masked LM (fill-mask too);
    float32 master weights with bf16 autocast on a GPU; with a validation set, the best checkpoint is reloaded."""
    import transformers
    from transformers import AutoModelForMaskedLM

    training_args = training_arguments(settings, "validation" in data.splits,
                                       best_metric="micro_f1" if data.multi_label else "accuracy")
    if training_args.n_gpu > 1:  # Trainer's DataParallel would split each batch under the rows the loss selects
        raise InputError(f"{training_args.n_gpu} GPUs in one process: run `torchrun --nproc_per_node "
                         f"{training_args.n_gpu} train.py ...` (one process per GPU), or pick one GPU with "
                         "CUDA_VISIBLE_DEVICES")
    on_gpu, tokenizer = training_args.device.type == "cuda", data.tokenizer
    pad_to_multiple_of = settings.pad_to_multiple_of or (64 if on_gpu else 8)
    mask_token_id = tokenizer.mask_token_id
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else mask_token_id
    attn_implementation = attention_for(settings.attn_implementation, training_args.device,
                                        torch.bfloat16 if training_args.bf16 else torch.float32)
    set_seed(settings.seed)  # the weights a checkpoint lacks (a fresh head transform) start the same every run
    model = load_pretrained(AutoModelForMaskedLM, settings.model, dtype=torch.float32,
                            attn_implementation=attn_implementation).to(training_args.device)
    train_sequences, train_positions = data.encoded["train"]
    batch_sampler = TokenBudgetBatchSampler(
        [len(ids) for ids in train_sequences], settings.per_device_train_batch_size,
        settings.max_batch_tokens or settings.per_device_train_batch_size * settings.max_length, pad_to_multiple_of,
        settings.seed)
    collator = ObjectiveCollator(mask_token_id, pad_token_id, frozenset(tokenizer.all_special_ids),
                                 settings.mlm_proportion, settings.dummy_mlm_proportion, settings.mlm_probability,
                                 pad_to_multiple_of)
    scoring = dict(option_ids=[[i] for i in data.answer_ids], mask_token_id=mask_token_id, pad_token_id=pad_token_id,
                   batch_tokens=settings.per_device_eval_batch_size * settings.max_length,
                   pad_to_multiple_of=pad_to_multiple_of)
    trainer = ATPTrainer(
        model=model, args=training_args, data_collator=collator, processing_class=tokenizer,
        train_dataset=[{"input_ids": ids, "answer_position": p} for ids, p in zip(train_sequences, train_positions)],
        eval_dataset=data.eval_set("validation") if "validation" in data.splits else None,
        batch_sampler=batch_sampler, scoring=scoring)
    say(f"objectives: {1 - settings.mlm_proportion - settings.dummy_mlm_proportion:.0%} ATP, "
        f"{settings.mlm_proportion:.0%} MLM, {settings.dummy_mlm_proportion:.0%} dummy MLM; {len(batch_sampler)} "
        f"batches per epoch per {training_args.world_size} process(es); {'bf16' if training_args.bf16 else 'float32'}, "
        f"{attn_implementation}")
    resumed_step = checkpoint_global_step(settings.resume_from_checkpoint)
    result = trainer.train(resume_from_checkpoint=settings.resume_from_checkpoint)
    since_resume = loss_since_resume(result.training_loss, resumed_step, result.global_step, transformers.__version__)
    metrics = {"labels": data.class_names,
               "train_loss": whole_run_loss(trainer.state.log_history, resumed_step, since_resume, result.global_step),
               "global_step": result.global_step, "train_runtime": result.metrics.get("train_runtime"),
               "truncated": data.truncated}
    if data.template.columns:  # the rows' empty fields, per split (filled as "")
        metrics["empty_fields"] = {name: split.empty_fields() for name, split in data.splits.items()}
    if resumed_step:
        metrics["resumed_from_step"] = resumed_step
    if trainer.args.load_best_model_at_end and trainer.state.best_global_step:
        metrics["best_step"] = trainer.state.best_global_step
    for name in ("validation", "test"):
        if name in data.splits:
            examples = data.eval_set(name)
            metrics.update({f"{name}_{k}": v for k, v in examples.metrics(trainer.score(examples.sequences)).items()})
    prediction_scores = trainer.score(data.eval_set("predict").sequences) if "predict" in data.splits else None
    save_trained_folder(trainer, data, settings, metrics, prediction_scores)
    return metrics


def model_card(data, settings, metrics):
    """README.md of the trained folder, from model_card.md: the hub's metadata, the prompt, labels and metrics, and
    how to use it. Answer tokens are spelled as in the vocabulary (`ĠWorld`), so fill-mask finds them unwarned."""
    multi_label, template, tokenizer = data.multi_label, data.template, data.tokenizer
    answer_tokens = tokenizer.convert_ids_to_tokens(data.answer_ids)
    headline = "micro_f1" if multi_label else "accuracy"
    splits = [name for name in ("validation", "test") if f"{name}_{headline}" in metrics]
    card_data = ModelCardData(
        base_model=settings.model, pipeline_tag="fill-mask", library_name="transformers",
        tags=["mlm-classifier", "answer-token-prediction"],
        model_name=os.path.basename(settings.output_dir.rstrip("/")),
        eval_results=[EvalResult(task_type="text-classification", dataset_type=data.splits[name].source,
                                 dataset_name=data.splits[name].source, dataset_split=name, metric_type=headline,
                                 metric_value=round(metrics[f"{name}_{headline}"], 4)) for name in splits] or None)
    if multi_label:
        inference_prompt = data.prompt.replace("{answer}", tokenizer.mask_token).replace("{options}", OPTIONS)
    else:
        inference_prompt = fill_template(template, {field: "{" + field + "}" for field in template.fields},
                                         tokenizer.mask_token, options_block(data.label_map))[0]
    filled = "template" + "".join(f'.replace("{{{field}}}", "your {"text" if field == TEXT_FIELD else field} '
                                  f'here".strip())' for field in template.fields)
    rows = [f"| {label} | `{verbalizer}` | " + ("yes/no" if multi_label else f"`{token}`") + " |"
            for (label, verbalizer), token in zip(data.label_map.items(), answer_tokens)]
    scores = [f"| {name} | {metrics[f'{name}_{headline}']:.4f} | {metrics[f'{name}_macro_f1']:.4f} | "
              f"{metrics[f'{name}_n']} |" for name in splits]
    note = ("\nThis folder is **multi-label**: each label is a yes/no question. Put a label's name (the label map's "
            "value) where the template says `{label}`, and read P(yes); a label applies when P(yes) >= 0.5. "
            "MLMClassifier and classify.py do this for every label.\n") if multi_label else ""
    return ModelCard.from_template(
        card_data, template_path=MODEL_CARD, base_model=settings.model, anchor=ANCHOR, max_length=settings.max_length,
        prompt=data.prompt, label_rows="\n".join(rows), name_column="name in the question" if multi_label else
        "verbalizer", headline="micro-F1" if multi_label else "accuracy",
        metric_rows="\n".join(scores) or "| (no validation or test split) | | | |", multi_label_note=note,
        inference_prompt=json.dumps(inference_prompt, ensure_ascii=False), filled_template=filled,
        targets=json.dumps(dict(zip(answer_tokens, ANSWERS if multi_label else data.label_map)), ensure_ascii=False))


def save_trained_folder(trainer, data, settings, metrics, prediction_scores):
    """The trained folder: model, tokenizer and trainer state, and from the first process its files and model card."""
    out = settings.output_dir
    trainer.save_model(out)
    trainer.save_state()
    if not trainer.is_world_process_zero():
        return
    write_atomic(os.path.join(out, "label_map.json"), json.dumps(data.label_map, indent=2, ensure_ascii=False) + "\n")
    write_atomic(os.path.join(out, "prompt.txt"), data.prompt + "\n")
    write_atomic(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=2) + "\n")
    classifier = {"max_length": settings.max_length, "base_model": settings.model,
                  "columns": list(data.template.columns)}
    if data.multi_label:
        classifier.update(multi_label=True, threshold=THRESHOLD)
    write_atomic(os.path.join(out, SETTINGS_FILE), json.dumps(classifier, indent=2) + "\n")
    write_atomic(os.path.join(out, "README.md"), str(model_card(data, settings, metrics)))
    if prediction_scores is not None:
        rows, names, multi = data.splits["predict"], data.class_names, data.multi_label
        probs = (yes_probabilities(prediction_scores, len(names)) if multi
                 else [slot_probabilities(s[: len(names)]) for s in prediction_scores])
        records = [prediction_record(row, text, decide(names, p, THRESHOLD if multi else None, multi_label=multi))
                   for row, text, p in zip(rows.rows, rows.texts, probs)]
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


def fit_classifier(settings, tokenizer, datasets, names):
    """Fine-tune a classification head on `settings.model`, one class per name, on `datasets` {split: Dataset of
    input_ids, attention_mask, labels} made by `tokenizer`; saves to settings.output_dir, returns fit's metrics."""
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    training_args = training_arguments(settings, False, train_sampling_strategy="group_by_length")
    names = list(names)
    attn = attention_for(settings.attn_implementation, training_args.device,
                         torch.bfloat16 if training_args.bf16 else torch.float32)
    set_seed(settings.seed)  # the new classification head starts the same every run
    model = load_pretrained(AutoModelForSequenceClassification, settings.model, "--cls_model", num_labels=len(names),
                            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                            dtype=torch.float32, attn_implementation=attn)
    pad_to_multiple_of = 64 if training_args.device.type == "cuda" else 8
    trainer = Trainer(model=model, args=training_args, train_dataset=datasets["train"], processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of))
    # The classification models' forward takes **kwargs, so Trainer assumes it normalises the loss over the whole
    # accumulated batch and stops dividing by the accumulation steps; it does not (a mean per batch), and the logged
    # loss grew with --gradient_accumulation_steps. Trainer divides again once told.
    trainer.model_accepts_loss_kwargs = False
    result = trainer.train()
    metrics = {"labels": names, "train_loss": result.training_loss, "global_step": result.global_step,
               "train_runtime": result.metrics.get("train_runtime")}
    for name in ("validation", "test"):
        prediction = trainer.predict(datasets[name])
        scores = torch.log_softmax(torch.as_tensor(prediction.predictions).float(), dim=-1).tolist()
        for key, value in classification_metrics(scores, list(prediction.label_ids), names).items():
            metrics[f"{name}_{key}"] = value
    trainer.save_model(settings.output_dir)
    return metrics
