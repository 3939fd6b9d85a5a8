"""The paper's fine-tuning sweep, run: per task, every grid point of both heads trained from its base model (fit,
fit_classifier). A run whose metrics.json exists is skipped, so an interrupted sweep resumes where it stopped."""

import json
import os
import shutil
import time

from .cli import on_interrupt
from .data import check_output_path, read_prompt, say, write_atomic
from .errors import InputError
from .models import check_max_length, check_model_source, end_distributed, load_pretrained, load_tokenizer
from .prompts import answer_token_ids, check_fixed_length, options_block, parse_prompt
from .recipes import LABEL_KEY, load_rows, recipe_fields
from .table3 import (accumulation_steps, load_finished, make_grid, metrics_path, samples, select_best, text_note,
                     to_splits, write_summaries, write_table)
from .trainer import fit, fit_classifier
from .training import TrainSettings, prepare


def check_tasks(settings, tasks, single):
    """{task: (prompt, its source, local data folder or None, output folder)}, each checked before anything loads."""
    if settings.prompt_file and len(tasks) > 1:
        raise InputError(f"--prompt_file replaces one task's prompt, but --tasks names {len(tasks)}: "
                         f"{', '.join(t.name for t in tasks)}; run that task alone")
    if settings.strip_headers and not any(t.strip_headers for t in tasks):
        raise InputError("--strip_headers strips 20newsgroups' local posts, and --tasks does not name it")
    if settings.data_dir and not os.path.isdir(settings.data_dir):
        raise InputError(f"--data_dir {settings.data_dir}: no such folder")
    check_output_path(settings.output_dir, "--output_dir", folder=True)
    for head in settings.heads:
        check_model_source(settings.model if head == "mlm" else settings.cls_model,
                           "--model" if head == "mlm" else "--cls_model")
    plans = {}
    for recipe in tasks:
        prompt = read_prompt(settings.prompt_file, "--prompt_file") if settings.prompt_file else recipe.prompt
        source = f"--prompt_file {settings.prompt_file}" if settings.prompt_file else recipe.prompt_source
        recipe_fields(parse_prompt(prompt, source), recipe)  # a bad prompt fails before anything loads
        data = settings.data_dir if single else os.path.join(settings.data_dir, recipe.name) if settings.data_dir \
            else None
        if data and not os.path.isdir(data):
            raise InputError(f"--data_dir {settings.data_dir}: no folder {recipe.name}/ for the {recipe.title} task "
                             f"(its {', '.join(recipe.splits.values())} splits in the hub's layout); give the hub or "
                             "that folder")
        plans[recipe.name] = (prompt, source, data, settings.output_dir if single else
                              os.path.join(settings.output_dir, recipe.name))
    return plans


def task_data(settings, recipe, plan, heads):
    """A task's sampled rows, prepared for `heads`: (mlm data or None, (tokenizer, datasets) or None)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    prompt, source, folder, _ = plan
    rows = samples(load_rows(recipe, folder, settings.strip_headers and recipe.strip_headers), settings)
    max_length = settings.max_length or recipe.max_length
    mlm = cls = None
    if "mlm" in heads:
        splits = to_splits(rows, parse_prompt(prompt, source), recipe)
        mlm = prepare(settings.model, prompt, source, recipe.label_map, recipe.describe_labels(), splits, max_length)
    if "cls" in heads:  # the raw text, cut from the right: a sentence pair, or the non-empty columns joined by lines
        tokenizer, datasets = load_pretrained(AutoTokenizer, settings.cls_model, "--cls_model"), {}
        for name, part in rows.items():
            pair = ([[r[c].strip() for r in part] for c in recipe.columns[:2]] if recipe.cls_pair
                    else [["\n".join(r[c].strip() for c in recipe.columns if r[c].strip()) for r in part]])
            encoded = tokenizer(*pair, truncation=True, max_length=max_length)
            encoded["labels"] = [recipe.labels.index(r[LABEL_KEY]) for r in part]
            datasets[name] = Dataset.from_dict(dict(encoded))
        cls = (tokenizer, datasets)
    return mlm, cls


def run_sweep(settings, tasks, single=False):
    """Run the sweep over `tasks` (recipes); returns {task: {run name: metrics}}. With `single` (one task's own sweep,
    sweep_20newsgroups.py) its runs and --data_dir files sit directly in the folders given."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = accumulation_steps(settings.effective_batch_size, settings.per_device_train_batch_size, processes)
    plans = check_tasks(settings, tasks, single)
    first_process = int(os.environ.get("RANK", "0")) == 0
    on_interrupt(f"interrupted: the finished runs are kept under {settings.output_dir} (each its metrics.json); the "
                 "same command carries on with the runs left")

    # 1. Before any data loads, the finished runs of every task (a stale one stops the sweep at once), and each
    #    prompt with an MLM run to do (room for text, single-token answers), not when its task comes hours later.
    runs = make_grid(settings.heads, settings.learning_rates, settings.cls_learning_rates, settings.epochs,
                     settings.seeds)
    recorded = {r.name: {head: settings.run_settings(head, plans[r.name][0], r, plans[r.name][2])
                         for head in settings.heads} for r in tasks}
    finished = {r.name: load_finished(plans[r.name][3], runs, recorded[r.name]) for r in tasks}
    pending = {r.name: [run for run in runs if run["name"] not in finished[r.name]] for r in tasks}
    with_mlm = [r for r in tasks if any(run["head"] == "mlm" for run in pending[r.name])]
    tokenizer = load_tokenizer(settings.model) if with_mlm else None
    for recipe in with_mlm:
        prompt, source, _, _ = plans[recipe.name]
        max_length = settings.max_length or recipe.max_length
        try:
            check_max_length(settings.model, tokenizer, max_length)
            template, options = parse_prompt(prompt, source), options_block(recipe.label_map)
            answer_token_ids(tokenizer, template, recipe.label_map, options)
            check_fixed_length(tokenizer, template, recipe.label_map, options, max_length)
        except InputError as e:
            raise InputError(f"--tasks {recipe.name}: {e}") from None
    # Then the data of every task after the first with runs to do (a missing file, an unknown label), read through
    # once now: it is read again when its task comes, rather than held in memory for hours.
    for recipe in [r for r in tasks if pending[r.name]][1:]:
        load_rows(recipe, plans[recipe.name][2], settings.strip_headers and recipe.strip_headers)
    n_runs, position = len(runs) * len(tasks), sum(len(f) for f in finished.values())
    say(f"{n_runs} runs in the grid{'' if single else f' across {len(tasks)} tasks'}, {position} already finished; "
        f"{processes} process(es), {settings.per_device_train_batch_size} per device x {accumulation} accumulation "
        "steps")
    sources = {r.name: plans[r.name][1] for r in tasks}
    notes = {r.name: text_note(r, plans[r.name][2], settings.strip_headers) for r in tasks}

    # 2. Task by task: the data, then each run from its base model, scored once at its end (no checkpoints).
    for recipe in [r for r in tasks if pending[r.name]]:
        prompt, source, _, out = plans[recipe.name]
        todo, minutes = pending[recipe.name], []
        mlm, cls = task_data(settings, recipe, plans[recipe.name], {run["head"] for run in todo})
        for k, run in enumerate(todo):
            position += 1
            eta = sum(minutes) / len(minutes) * (len(todo) - k) if minutes else None
            left = "" if eta is None else f", about {eta:.1f} min left" + ("" if single else f" in {recipe.name}")
            say(f"[{position}/{n_runs}] {'' if single else recipe.name + ': '}{run['name']}{left}")
            start, model_dir = time.time(), os.path.join(out, run["name"], "model")
            train_settings = TrainSettings(
                model=settings.model if run["head"] == "mlm" else settings.cls_model, output_dir=model_dir,
                learning_rate=run["lr"], num_train_epochs=run["epochs"], seed=run["seed"],
                per_device_train_batch_size=settings.per_device_train_batch_size,
                per_device_eval_batch_size=settings.per_device_eval_batch_size,
                gradient_accumulation_steps=accumulation, weight_decay=settings.weight_decay,
                warmup_ratio=settings.warmup_ratio, max_length=settings.max_length or recipe.max_length,
                attn_implementation=settings.attn_implementation, logging_steps=settings.logging_steps,
                eval_strategy="no", save_strategy="no")
            metrics = (fit(mlm, train_settings) if run["head"] == "mlm"
                       else fit_classifier(train_settings, *cls, recipe.labels))
            minutes.append((time.time() - start) / 60)
            record = {**run, "task": recipe.name, "minutes": minutes[-1], "text": notes[recipe.name],
                      **({"prompt_source": source} if run["head"] == "mlm" else {}), "processes": processes,
                      "gradient_accumulation_steps": accumulation,
                      "effective_batch_size": settings.per_device_train_batch_size * processes * accumulation,
                      "settings": recorded[recipe.name][run["head"]], **metrics}
            finished[recipe.name][run["name"]] = record
            if first_process:
                if not settings.save_models:
                    shutil.rmtree(model_dir, ignore_errors=True)
                    say(f"removed {model_dir}/: only the run's metrics are kept (--save_models keeps its weights)")
                write_atomic(metrics_path(out, run), json.dumps(record, indent=2) + "\n")
                write_summaries(out, runs, finished[recipe.name], notes[recipe.name], source, prompt, recipe.title)
                write_table(settings.output_dir, tasks, runs, finished, settings, sources)

    # 3. The selected run of each head, chosen on validation, per task; and the table beside the paper's.
    if first_process:
        for recipe in tasks:
            prompt, source, _, out = plans[recipe.name]
            write_summaries(out, runs, finished[recipe.name], notes[recipe.name], source, prompt, recipe.title)
            for head, name in select_best(runs, finished[recipe.name]).items():
                m = finished[recipe.name][name]
                print(f"selected {head} run{'' if single else ' of ' + recipe.name}: {name}: validation "
                      f"{100 * m['validation_accuracy']:.2f}, test {100 * m['test_accuracy']:.2f}")
        write_table(settings.output_dir, tasks, runs, finished, settings, sources)
        wrote = "summary.csv, summary.md, summary.png" if single else "<task>/summary.csv, .md, .png"
        print(f"wrote {settings.output_dir}/{wrote}, table3.csv and table3.md")
    end_distributed()
    return finished

