"""The paper's fine-tuning sweep (its Table 3): the MLM head against a classification head, on its seven tasks.

    python sweep.py                                    # all seven tasks from the hub, the paper's grid
    python sweep.py --tasks ag_news sst2 --data_dir ~/table3   # local copies: ~/table3/ag_news/train.jsonl, ...
    python sweep.py --tasks mnli --head mlm --learning_rates 3e-5 --epochs 1 --max_train_samples 2000

Each task is a recipe (mlm_classifier/recipes.py): MNLI, Yahoo! Answers, 20 Newsgroups, AG News, SST-2, IMDB and
SST-5, with its hub dataset, columns, labels and prompt. The MLM head (ModernBERT-Large-Instruct, Answer Token
Prediction through train.py) answers after `[unused0]` in the task's prompt; the classification head
(`AutoModelForSequenceClassification` on ModernBERT-Large) reads the raw text (MNLI's premise and hypothesis as a
sentence pair). Each run starts from its base model and writes `<output_dir>/<task>/<run>/metrics.json` when it ends;
a run whose metrics exist is skipped, so an interrupted sweep resumes where it stopped. Validation accuracy (a
stratified slice of train) selects the best run of each head; test accuracy is reported for every run and never used
to choose. `<output_dir>/table3.md` puts the selected runs beside the paper's figures.
"""

import itertools
import json
import math
import os
import random
import shutil
import statistics
import time

import mlm_classifier as mc
import train
from mlm_classifier.recipes import LABEL_KEY, PAPER_AVERAGE, PAPER_TABLE_3, RECIPES, load_rows, recipe_fields

HEADS = {"mlm": "MLM head", "cls": "classification head"}
MODEL = "answerdotai/ModernBERT-Large-Instruct"  # the paper's models: Table 3's figures are theirs
CLS_MODEL = "answerdotai/ModernBERT-large"


# -----------------------------------------------------------------------------
# Data


def seeded_sample(rows, n, seed):
    """The first `n` rows after a seeded shuffle (files are often sorted by label); all rows when n is None."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n] if n else rows


def to_splits(samples, template, recipe):
    """{name: mlm_classifier.Split} from {name: rows}, each text stripped (as the published templates strip the post,
    and train.py's tables strip their texts): a string per row for a {text} template, else a dict of its fields."""
    fields = recipe_fields(template, recipe)

    def text(row):
        if template.text_only:
            return row[fields["text"]].strip()
        return {field: row[column].strip() for field, column in fields.items()}

    return {name: mc.Split(f"{recipe.title} {name}", [text(r) for r in rows], [r[LABEL_KEY] for r in rows],
                           list(range(len(rows)))) for name, rows in samples.items()}


def stratified_split(rows, fraction, seed):
    """(train, validation): a seeded, stratified `fraction` of the rows held out for choosing runs."""
    from sklearn.model_selection import train_test_split

    labels = [r[LABEL_KEY] for r in rows]
    n_validation = math.ceil(fraction * len(rows))  # as train_test_split counts it
    if n_validation < len(set(labels)) or n_validation >= len(rows):
        raise mc.InputError(f"--validation_fraction {fraction} of {len(rows)} training rows holds out {n_validation}; "
                            f"it must hold out at least one per label ({len(set(labels))}) and leave rows to train")
    stratify = labels if min(labels.count(label) for label in set(labels)) >= 2 else None
    return train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)


def text_note(recipe, folder, strip_headers):
    """Which text the runs read, for the summary."""
    if recipe.strip_headers:  # 20 Newsgroups
        if not folder:
            return f"{recipe.dataset} from the hub (headers, signatures and quotes removed)"
        return f"{folder}, " + ("headers, signatures and quotes removed" if strip_headers
                                else "raw posts (headers, signatures and quotes kept)")
    return f"{folder}" if folder else f"{recipe.hub_name} from the hub"


def classifier_texts(recipe, rows):
    """What the classification head reads of each row: its text, or MNLI's (premise, hypothesis) pair, or the
    columns' non-empty texts joined by newlines (Yahoo! Answers' title, question and answer)."""
    if recipe.cls_pair:
        return [(r[recipe.columns[0]].strip(), r[recipe.columns[1]].strip()) for r in rows]
    return ["\n".join(r[c].strip() for c in recipe.columns if r[c].strip()) for r in rows]


# -----------------------------------------------------------------------------
# The grid, resuming, and the summaries


def unique(values):
    """The values without repeats, in their first order (`1e-3 0.001` is one learning rate)."""
    return list(dict.fromkeys(values))


def make_grid(heads, learning_rates, cls_learning_rates, epochs, seeds):
    """One dict per run: head, lr, epochs, seed and a name unique in the task; repeated grid points run once."""
    for flag, values in (("learning_rates", learning_rates), ("cls_learning_rates", cls_learning_rates),
                         ("epochs", epochs)):
        bad = [v for v in values if v <= 0]
        if bad:
            raise mc.InputError(f"--{flag} {bad[0]:g}: every value must be a positive number")
    runs = []
    for head in heads:
        lrs = learning_rates if head == "mlm" else cls_learning_rates
        for lr, n_epochs, seed in itertools.product(unique(lrs), unique(epochs), unique(seeds)):
            runs.append({"head": head, "lr": lr, "epochs": n_epochs, "seed": seed,
                         "name": f"{head}_lr{lr:g}_ep{n_epochs}_seed{seed}"})
    return runs


def accumulation_steps(effective_batch_size, per_device_batch_size, processes):
    """Gradient accumulation steps that make the effective batch, given the real number of processes."""
    per_step = per_device_batch_size * processes
    if effective_batch_size % per_step:
        raise mc.InputError(f"--effective_batch_size {effective_batch_size} is not a multiple of "
                            f"--per_device_train_batch_size {per_device_batch_size} x {processes} processes")
    return effective_batch_size // per_step


def metrics_path(output_dir, run):
    return os.path.join(output_dir, run["name"], "metrics.json")


def run_settings(args, head, prompt, recipe, folder=None):
    """Everything besides the grid point that defines a run's result; recorded in its metrics.json, and checked
    when a sweep resumes, so that a run made with other settings is never reported as this sweep's. The MLM
    head's runs also depend on `prompt`, the template they were trained with. `folder` is the task's local data."""
    settings = {"model": args.model if head == "mlm" else args.cls_model, "data": folder or recipe.hub_name}
    if recipe.strip_headers:
        settings["strip_headers"] = args.strip_headers
    settings.update({"max_length": args.max_length or recipe.max_length, "max_train_samples": args.max_train_samples,
                     "max_eval_samples": args.max_eval_samples, "validation_fraction": args.validation_fraction,
                     "data_seed": args.data_seed, "per_device_train_batch_size": args.per_device_train_batch_size,
                     "effective_batch_size": args.effective_batch_size, "weight_decay": args.weight_decay,
                     "warmup_ratio": args.warmup_ratio})
    if head == "mlm":
        settings["prompt"] = prompt
    return settings


def load_finished(output_dir, runs, settings):
    """{run name: metrics} for the runs whose metrics.json exists; `settings` maps each head to run_settings.

    A run recorded with other settings is an InputError naming them (resuming must never mix two sweeps).
    An empty or unreadable metrics.json (a crash outside our atomic writes) does not count as finished.
    """
    finished = {}
    for run in runs:
        path = metrics_path(output_dir, run)
        if not os.path.exists(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                metrics = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError):
            metrics = None
        if not isinstance(metrics, dict):
            mc.say(f"note: {path} is empty or not a JSON object (left by a crash?); the run starts again")
            continue
        recorded, wanted = metrics.get("settings"), settings[run["head"]]
        if recorded != wanted:
            raise mc.InputError(f"--output_dir {output_dir}: {run['name']} was run with other settings: "
                                f"{mc.differences(recorded, wanted)}. Use another --output_dir, or delete that run's "
                                "folder to run it again")
        finished[run["name"]] = metrics
    return finished


def select_best(runs, finished):
    """{head: name of the finished run with the best validation accuracy}; test accuracy plays no part."""
    best = {}
    for run in runs:
        metrics = finished.get(run["name"])
        if metrics is None:
            continue
        current = best.get(run["head"])
        if current is None or metrics["validation_accuracy"] > finished[current]["validation_accuracy"]:
            best[run["head"]] = run["name"]
    return best


def mean_std(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_rows(runs, finished):
    """One row per finished run, with the columns of summary.csv."""
    best = set(select_best(runs, finished).values())
    rows = []
    for run in runs:
        m = finished.get(run["name"])
        if m is None:
            continue
        rows.append({"head": run["head"], "lr": run["lr"], "epochs": run["epochs"], "seed": run["seed"],
                     "validation_accuracy": m["validation_accuracy"], "test_accuracy": m["test_accuracy"],
                     "validation_macro_f1": m["validation_macro_f1"], "test_macro_f1": m["test_macro_f1"],
                     "minutes": m["minutes"], "selected": run["name"] in best, "run": run["name"]})
    return rows


def write_summaries(output_dir, runs, finished, text_note, prompt_source, prompt, title="20 Newsgroups"):
    """summary.csv, summary.md and summary.png (validation accuracy over lr x epochs per head), atomically."""
    rows = summary_rows(runs, finished)
    if not rows:
        return
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
    mc.write_atomic(os.path.join(output_dir, "summary.csv"), "\n".join(lines) + "\n")
    mc.write_atomic(os.path.join(output_dir, "summary.md"),
                    summary_markdown(rows, text_note, len(runs), prompt_source, prompt, title))
    plot_heatmaps(rows, os.path.join(output_dir, "summary.png"))


def pct(x):
    return f"{100 * x:.2f}"


def summary_markdown(rows, text_note, n_planned, prompt_source, prompt, title="20 Newsgroups"):
    """One task's sweep as Markdown: the selected run of each head side by side, mean ± std over seeds, every run,
    and the MLM head's prompt (it defines those runs as much as their hyperparameters do)."""
    with_mlm = any(r["head"] == "mlm" for r in rows)
    prompt_note = f" MLM head prompt: {prompt_source} (below)." if with_mlm else ""
    out = [f"# {title} sweep\n\nText: {text_note}.{prompt_note} Runs finished: {len(rows)} of {n_planned}. "
           "The selected run of each head has the best validation accuracy; test accuracy is only reported.\n",
           "## Selected runs\n", "| head | run | validation acc | test acc | test macro-F1 |", "|---|---|---|---|---|"]
    for r in rows:
        if r["selected"]:
            out.append(f"| {HEADS[r['head']]} | {r['run']} | {pct(r['validation_accuracy'])} | "
                       f"{pct(r['test_accuracy'])} | {pct(r['test_macro_f1'])} |")
    out += ["\n## Mean ± std over seeds\n", "| head | lr | epochs | seeds | validation acc | test acc |",
            "|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["head"], r["lr"], r["epochs"]), []).append(r)
    for (head, lr, epochs), group in groups.items():
        val, test = (mean_std([g[k] for g in group]) for k in ("validation_accuracy", "test_accuracy"))
        out.append(f"| {HEADS[head]} | {lr:g} | {epochs} | {len(group)} | {pct(val[0])} ± {pct(val[1])} | "
                   f"{pct(test[0])} ± {pct(test[1])} |")
    out += ["\n## Every run\n", "| head | lr | epochs | seed | validation acc | test acc | validation macro-F1 | "
            "test macro-F1 | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " **(selected)**" if r["selected"] else ""
        out.append(f"| {HEADS[r['head']]}{mark} | {r['lr']:g} | {r['epochs']} | {r['seed']} | "
                   f"{pct(r['validation_accuracy'])} | {pct(r['test_accuracy'])} | {pct(r['validation_macro_f1'])} | "
                   f"{pct(r['test_macro_f1'])} | {r['minutes']:.1f} |")
    if with_mlm:
        out += [f"\n## MLM head prompt ({prompt_source})\n", "```text", prompt, "```"]
    return "\n".join(out) + "\n"


def plot_heatmaps(rows, path):
    """One heatmap per head: mean validation accuracy over learning rate x epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = [h for h in ("mlm", "cls") if any(r["head"] == h for r in rows)]
    fig, axes = plt.subplots(1, len(heads), figsize=(5 * len(heads), 4), squeeze=False)
    for ax, head in zip(axes[0], heads):
        mine = [r for r in rows if r["head"] == head]
        lrs = sorted({r["lr"] for r in mine})
        epochs = sorted({r["epochs"] for r in mine})
        grid = [[math.nan] * len(epochs) for _ in lrs]
        for i, lr in enumerate(lrs):
            for j, n in enumerate(epochs):
                values = [r["validation_accuracy"] for r in mine if r["lr"] == lr and r["epochs"] == n]
                if values:
                    grid[i][j] = 100 * statistics.mean(values)
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        for i in range(len(lrs)):
            for j in range(len(epochs)):
                if not math.isnan(grid[i][j]):
                    ax.text(j, i, f"{grid[i][j]:.1f}", ha="center", va="center", color="white")
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_xlabel("epochs")
        ax.set_ylabel("learning rate")
        ax.set_title(HEADS[head] + ": validation accuracy (%)")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# -----------------------------------------------------------------------------
# The table beside the paper's: one row per task and head, and the average over the tasks run


def table_rows(tasks, runs, finished):
    """One row per task and head with a selected run: its accuracies (%) and Table 3's figure beside them; then one
    average row per head over the tasks that have one, beside the paper's average over the same tasks."""
    rows = []
    for recipe in tasks:
        best = select_best(runs, finished[recipe.name])
        for head in ("mlm", "cls"):
            if head not in best:
                continue
            m = finished[recipe.name][best[head]]
            planned = sum(r["head"] == head for r in runs)
            done = sum(r["head"] == head and r["name"] in finished[recipe.name] for r in runs)
            paper = PAPER_TABLE_3[recipe.name][head]
            test = round(100 * m["test_accuracy"], 2)
            rows.append({"task": recipe.name, "head": head, "run": best[head], "runs_finished": f"{done}/{planned}",
                         "validation_accuracy": round(100 * m["validation_accuracy"], 2), "test_accuracy": test,
                         "paper_test_accuracy": paper,
                         "difference": None if paper is None else round(test - paper, 2)})
    for head in ("mlm", "cls"):
        mine = [r for r in rows if r["head"] == head]
        if not mine:
            continue
        papers = [r["paper_test_accuracy"] for r in mine]
        names = {r["task"] for r in mine}
        if names == set(RECIPES):
            paper = PAPER_AVERAGE[head]  # all seven: the paper's own average
        else:
            paper = round(statistics.mean(papers), 2) if None not in papers else None
        test = round(statistics.mean(r["test_accuracy"] for r in mine), 2)
        tasks_run = f"{len(mine)} task{'s' if len(mine) > 1 else ''}"
        rows.append({"task": f"average ({tasks_run})", "head": head, "run": "", "runs_finished": "",
                     "validation_accuracy": round(statistics.mean(r["validation_accuracy"] for r in mine), 2),
                     "test_accuracy": test, "paper_test_accuracy": paper,
                     "difference": None if paper is None else round(test - paper, 2)})
    return rows


def table_markdown(rows, args, prompts):
    """table3.md: the rows of table_rows, the paper cited, and what the runs differ in from the paper's."""
    titles = {name: recipe.title for name, recipe in RECIPES.items()}
    out = ["# Table 3 beside the paper's\n",
           "Test accuracy (%) of the run of each head that validation selected, per task, beside the paper's figure "
           "(Clavié, Cooper, Warner, 2025, *It's All in The [MASK]*, arXiv 2502.03793, Table 3: ModernBERT-Large-"
           "Instruct fine-tuned through its MLM head, ModernBERT-Large with a classification head). A dash: the "
           "paper's figure is not recorded in mlm_classifier/recipes.py (PAPER_TABLE_3), and an average that would "
           "need it is left out. The average of all seven tasks is the paper's own (84.67 and 84.39, as cited).\n",
           "| task | head | selected run | runs finished | validation acc | test acc | paper | difference |",
           "|---|---|---|---|---|---|---|---|"]

    def cell(value):
        return "—" if value is None else f"{value:.2f}"

    for r in rows:
        task = titles.get(r["task"], r["task"])
        out.append(f"| {task} | {HEADS[r['head']]} | {r['run']} | {r['runs_finished']} | "
                   f"{r['validation_accuracy']:.2f} | {r['test_accuracy']:.2f} | {cell(r['paper_test_accuracy'])} | "
                   f"{cell(r['difference'])} |")
    out.append("\nPrompts: " + "; ".join(f"{titles[name]}: {source}" for name, source in prompts.items()) + ".")
    others = [f"--{flag} {getattr(args, flag)}" for flag, default in (("model", MODEL), ("cls_model", CLS_MODEL))
              if getattr(args, flag) != default]
    if others:
        out.append(f"\nThe runs used {' and '.join(others)}, not the paper's models: the paper's figures are not "
                   "theirs to match.")
    return "\n".join(out) + "\n"


def write_table(output_dir, tasks, runs, finished, args, prompts):
    """table3.csv and table3.md in `output_dir`, atomically; nothing before a run has finished."""
    rows = table_rows(tasks, runs, finished)
    if not rows:
        return
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join("" if r[c] is None else str(r[c]) for c in columns) for r in rows]
    mc.write_atomic(os.path.join(output_dir, "table3.csv"), "\n".join(lines) + "\n")
    mc.write_atomic(os.path.join(output_dir, "table3.md"), table_markdown(rows, args, prompts))


# -----------------------------------------------------------------------------
# One run of each head


def training_settings(args, run, model, output_dir, accumulation, max_length=None):
    """train.py's settings for one run: the grid point, the shared settings, and no checkpoints along the way
    (each run is scored once, at its end, so that epochs stay a dimension of the grid)."""
    return train.TrainSettings(
        model=model, output_dir=output_dir, learning_rate=run["lr"], num_train_epochs=run["epochs"], seed=run["seed"],
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size, gradient_accumulation_steps=accumulation,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, max_length=max_length or args.max_length,
        attn_implementation=args.attn_implementation, logging_steps=args.logging_steps, eval_strategy="no",
        save_strategy="no")


def tokenize_for_classifier(model_name, recipe, samples, max_length):
    """(tokenizer, {split: datasets.Dataset of input_ids, attention_mask, labels}): the raw text (MNLI's sentence
    pair), cut from the right (a pair: the longer text first)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = mc.load_pretrained(AutoTokenizer, model_name, "--cls_model")
    datasets = {}
    for name, rows in samples.items():
        texts = classifier_texts(recipe, rows)
        if recipe.cls_pair:
            encoded = tokenizer([a for a, _ in texts], [b for _, b in texts], truncation=True, max_length=max_length)
        else:
            encoded = tokenizer(texts, truncation=True, max_length=max_length)
        encoded["labels"] = [recipe.labels.index(r[LABEL_KEY]) for r in rows]
        datasets[name] = Dataset.from_dict(dict(encoded))
    return tokenizer, datasets


def fit_classifier(settings, tokenizer, datasets, names):
    """Fine-tune a classification head (one class per label name, whatever the sample holds), save it to
    `settings.output_dir`; returns metrics like train.fit's."""
    import torch
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer

    from mlm_classifier.trainer import bf16_available, classification_metrics, training_arguments

    bf16 = bf16_available()
    training_args = training_arguments(settings, False, bf16, train_sampling_strategy="group_by_length")
    names = list(names)
    attn = mc.resolve_attn_implementation(settings.attn_implementation, training_args.device,
                                          torch.bfloat16 if bf16 else torch.float32)
    model = mc.load_pretrained(AutoModelForSequenceClassification, settings.model, "--cls_model", num_labels=len(names),
                               id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                               dtype=torch.float32, attn_implementation=attn)
    _, pad_to_multiple_of = mc.batch_defaults(training_args.device)
    trainer = Trainer(model=model, args=training_args, train_dataset=datasets["train"], processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of))
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


# -----------------------------------------------------------------------------


def build_parser(task=None, doc=__doc__):
    """The command line, every default in view; each flag also takes hyphens (--output-dir). With `task` (a Recipe)
    the sweep is that task's alone (sweep_20newsgroups.py): no --tasks, its runs directly under --output_dir."""
    p = mc.make_parser(doc)
    if task is None:
        mc.add_flag(p, "tasks", nargs="+", choices=list(RECIPES), default=list(RECIPES), metavar="TASK",
                    help=f"the tasks to run, each a recipe: {', '.join(RECIPES)} (default: all seven, in Table 3's "
                         "order)")
    mc.add_flag(p, "model", default=MODEL, help="MLM head: hub name or folder")
    mc.add_flag(p, "cls_model", default=CLS_MODEL, help="classification head's base model")
    if task is None:
        mc.add_flag(p, "data_dir", default=None,
                    help="folder with one folder per task in the hub's layout, DIR/<task>/<split>.jsonl (or .parquet, "
                         ".csv) (default: the hub)")
    else:
        mc.add_flag(p, "data_dir", default=None,
                    help=f"folder with train.jsonl and test.jsonl (`text`, `label_text`) (default: the hub's "
                         f"{task.dataset})")
    mc.add_flag(p, "strip_headers", action="store_true",
                help="remove headers, signatures and quotes from 20newsgroups' local files, as the hub copy has them "
                     "removed")
    mc.add_flag(p, "output_dir", default="sweep_results",
                help="one folder per run" + (" per task" if task is None else "") + ", and the summaries")
    mc.add_flag(p, "head", default="both", choices=["mlm", "cls", "both"], help="which heads to run")
    mc.add_flag(p, "learning_rates", type=float, nargs="+", default=[2e-5, 3e-5, 5e-5], help="MLM head's grid")
    mc.add_flag(p, "cls_learning_rates", type=float, nargs="+", default=[3e-5, 5e-5, 8e-5],
                help="classification head's grid")
    mc.add_flag(p, "epochs", type=int, nargs="+", default=[1, 2, 3], help="both heads' grid")
    mc.add_flag(p, "seeds", type=int, nargs="+", default=[42], help="training seeds; every grid point runs each")
    if task is None:
        mc.add_flag(p, "prompt_file", default=None,
                    help="MLM head template for the one task in --tasks, in train.py's format ({text} or the task's "
                         "columns, optional {options}, `[unused0] {label}` at the end) (default: the task's prompt)")
        mc.add_flag(p, "max_length", type=int, default=None,
                    help="tokens per example; only the text is cut (default: each task's, in docs/sweep.md)")
    else:
        mc.add_flag(p, "prompt_file", default=None,
                    help="MLM head template, in train.py's format ({text}, optional {options}, `[unused0] {label}` "
                         f"at the end) (default: {task.prompt_source})")
        mc.add_flag(p, "max_length", type=int, default=task.max_length, help="tokens per example; only the text is cut")
    mc.add_flag(p, "per_device_train_batch_size", type=int, default=8, help="examples per batch and process")
    mc.add_flag(p, "per_device_eval_batch_size", type=int, default=8,
                help="evaluation batches hold up to this x --max_length padded tokens")
    mc.add_flag(p, "effective_batch_size", type=int, default=32,
                help="examples per optimizer step: accumulation = this / (per device x processes)")
    mc.add_flag(p, "weight_decay", type=float, default=0.01, help="AdamW weight decay")
    mc.add_flag(p, "warmup_ratio", type=float, default=0.05, help="share of the steps spent warming up")
    mc.add_flag(p, "max_train_samples", type=int, default=None, help="at most this many training rows, seeded")
    mc.add_flag(p, "max_eval_samples", type=int, default=None,
                help="at most this many validation and test rows each, seeded")
    mc.add_flag(p, "validation_fraction", type=float, default=0.1,
                help="seeded, stratified share of train held out to choose runs")
    mc.add_flag(p, "data_seed", type=int, default=42, help="seed of the validation split and the samples")
    mc.add_flag(p, "attn_implementation", default="auto", choices=["auto", "sdpa", "flash_attention_2", "eager"],
                help="auto: flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa")
    mc.add_flag(p, "logging_steps", type=int, default=50, help="log the training loss every N steps")
    mc.add_flag(p, "save_models", action="store_true", help="keep each run's weights in <run>/model")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def check_flags(args, heads, tasks):
    """InputErrors for flags out of range, a model folder that cannot serve, or an output folder that cannot be
    written, before any data or model loads."""
    mc.check_positive(max_length=args.max_length, per_device_train_batch_size=args.per_device_train_batch_size,
                      per_device_eval_batch_size=args.per_device_eval_batch_size,
                      effective_batch_size=args.effective_batch_size, max_train_samples=args.max_train_samples,
                      max_eval_samples=args.max_eval_samples, logging_steps=args.logging_steps)
    if not 0 < args.validation_fraction < 1:
        raise mc.InputError(f"--validation_fraction {args.validation_fraction} must be in (0, 1): "
                            "runs are chosen on it")
    if not 0 <= args.warmup_ratio < 1:
        raise mc.InputError(f"--warmup_ratio {args.warmup_ratio} must be in [0, 1)")
    if args.weight_decay < 0:
        raise mc.InputError(f"--weight_decay {args.weight_decay} must not be negative")
    if args.prompt_file and len(tasks) > 1:
        raise mc.InputError(f"--prompt_file replaces one task's prompt, but --tasks names {len(tasks)}: "
                            f"{', '.join(t.name for t in tasks)}; run that task alone")
    if args.strip_headers and not any(t.strip_headers for t in tasks):
        raise mc.InputError("--strip_headers strips 20newsgroups' local posts, and --tasks does not name it")
    if args.data_dir and not os.path.isdir(args.data_dir):
        raise mc.InputError(f"--data_dir {args.data_dir}: no such folder")
    mc.check_output_path(args.output_dir, "--output_dir", folder=True)
    for head in heads:
        mc.check_model_source(args.model if head == "mlm" else args.cls_model,
                              "--model" if head == "mlm" else "--cls_model")


def task_folders(args, tasks, single):
    """{task: (its local data folder or None, its output folder)}: one folder per task under --data_dir and
    --output_dir, or, for one task's own sweep (`single`), those folders themselves."""
    folders = {}
    for recipe in tasks:
        if single:
            folders[recipe.name] = (args.data_dir, args.output_dir)
            continue
        data = os.path.join(args.data_dir, recipe.name) if args.data_dir else None
        if data and not os.path.isdir(data):
            raise mc.InputError(f"--data_dir {args.data_dir}: no folder {recipe.name}/ for the {recipe.title} task "
                                f"(its {', '.join(recipe.splits.values())} splits in the hub's layout); give the hub "
                                "or that folder")
        folders[recipe.name] = (data, os.path.join(args.output_dir, recipe.name))
    return folders


def task_prompts(args, tasks):
    """{task: (prompt, its source)}, each checked against the task's columns before anything loads."""
    prompts = {}
    for recipe in tasks:
        prompt = mc.read_prompt(args.prompt_file, "--prompt_file") if args.prompt_file else recipe.prompt
        source = f"--prompt_file {args.prompt_file}" if args.prompt_file else recipe.prompt_source
        recipe_fields(mc.parse_prompt(prompt, source), recipe)  # a bad prompt fails before anything loads
        prompts[recipe.name] = (prompt, source)
    return prompts


def check_prompts_fit(args, tasks, prompts):
    """InputErrors naming the task whose prompt, with its options, leaves no room for text within its max_length, or
    whose answers are not single tokens, for the MLM head's tokenizer: checked for every task before the first run,
    not when the sweep reaches that task hours later."""
    tokenizer = mc.load_tokenizer(args.model)
    for recipe in tasks:
        prompt, source = prompts[recipe.name]
        max_length = args.max_length or recipe.max_length
        try:
            mc.check_max_length(args.model, tokenizer, max_length)
            template, options = mc.parse_prompt(prompt, source), mc.options_block(recipe.label_map)
            mc.answer_token_ids(tokenizer, template, None, recipe.label_map, options)
            mc.check_fixed_length(tokenizer, template, None, recipe.label_map, options, max_length)
        except mc.InputError as e:
            raise mc.InputError(f"--tasks {recipe.name}: {e}") from None


def load_task_data(args, recipe, folder, prompt, prompt_source, heads_pending):
    """A task's splits: a stratified validation slice of train, seeded samples; then prepared for the MLM head and
    tokenized for the classification head, as the pending runs need. Returns (mlm data or None, cls data or None)."""
    rows = load_rows(recipe, folder, args.strip_headers and recipe.strip_headers)
    train_rows, validation_rows = stratified_split(rows["train"], args.validation_fraction, args.data_seed)
    samples = {"train": seeded_sample(train_rows, args.max_train_samples, args.data_seed),
               "validation": seeded_sample(validation_rows, args.max_eval_samples, args.data_seed),
               "test": seeded_sample(rows["test"], args.max_eval_samples, args.data_seed)}
    max_length = args.max_length or recipe.max_length
    mlm_data = cls_data = None
    if "mlm" in heads_pending:
        splits = to_splits(samples, mc.parse_prompt(prompt, prompt_source), recipe)
        mlm_data = train.prepare(args.model, prompt, prompt_source, recipe.label_map, recipe.describe_labels(), splits,
                                 max_length)
    if "cls" in heads_pending:
        cls_data = tokenize_for_classifier(args.cls_model, recipe, samples, max_length)
    return mlm_data, cls_data


def main(argv=None, task=None, doc=__doc__):
    """Run the sweep; returns {run name: metrics} for one task's own sweep (`task`), else {task: {run: metrics}}."""
    args = build_parser(task, doc).parse_args(argv)
    single = task is not None
    tasks = [task] if single else [RECIPES[name] for name in unique(args.tasks)]
    heads = ["mlm", "cls"] if args.head == "both" else [args.head]
    check_flags(args, heads, tasks)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = accumulation_steps(args.effective_batch_size, args.per_device_train_batch_size, processes)
    prompts = task_prompts(args, tasks)
    folders = task_folders(args, tasks, single)
    first_process = int(os.environ.get("RANK", "0")) == 0
    mc.on_interrupt(f"interrupted: the finished runs are kept under {args.output_dir} (each its metrics.json); the "
                    "same command carries on with the runs left")

    # 1. The grid, and the runs already finished with these settings: checked for every task before any data or
    #    model loads, so that a stale run anywhere stops the sweep at once; then the prompt of every task with an MLM
    #    run to do, against its max_length.
    runs = make_grid(heads, args.learning_rates, args.cls_learning_rates, args.epochs, args.seeds)
    settings, finished = {}, {}
    for recipe in tasks:
        folder, out = folders[recipe.name]
        settings[recipe.name] = {head: run_settings(args, head, prompts[recipe.name][0], recipe, folder)
                                 for head in heads}
        finished[recipe.name] = load_finished(out, runs, settings[recipe.name])
    pending_mlm = [recipe for recipe in tasks if any(run["head"] == "mlm" and run["name"] not in finished[recipe.name]
                                                     for run in runs)]
    if pending_mlm:
        check_prompts_fit(args, pending_mlm, prompts)
    n_runs, n_done = len(runs) * len(tasks), sum(len(f) for f in finished.values())
    across = f" across {len(tasks)} tasks" if not single else ""
    mc.say(f"{n_runs} runs in the grid{across}, {n_done} already finished; {processes} process(es), "
           f"{args.per_device_train_batch_size} per device x {accumulation} accumulation steps")
    prompt_sources = {name: source for name, (_, source) in prompts.items()}

    # 2. Task by task: the data (a stratified validation slice of train, seeded samples, tokenized once per head),
    #    then the runs, each from its base model; metrics.json marks a run done, and the summaries follow each.
    position = n_done
    for recipe in tasks:
        folder, out = folders[recipe.name]
        prompt, prompt_source = prompts[recipe.name]
        note = text_note(recipe, folder, args.strip_headers)
        pending = [run for run in runs if run["name"] not in finished[recipe.name]]
        if pending:
            mlm_data, cls_data = load_task_data(args, recipe, folder, prompt, prompt_source,
                                                {run["head"] for run in pending})
        minutes_spent = []
        for k, run in enumerate(pending):
            position += 1
            left = (f", about {statistics.mean(minutes_spent) * (len(pending) - k):.1f} min left"
                    + ("" if single else f" in {recipe.name}") if minutes_spent else "")
            mc.say(f"[{position}/{n_runs}] {'' if single else recipe.name + ': '}{run['name']}{left}")
            start = time.time()
            model_dir = os.path.join(out, run["name"], "model")
            max_length = args.max_length or recipe.max_length
            if run["head"] == "mlm":
                metrics = train.fit(mlm_data, training_settings(args, run, args.model, model_dir, accumulation,
                                                                max_length))
            else:
                cls_settings = training_settings(args, run, args.cls_model, model_dir, accumulation, max_length)
                metrics = fit_classifier(cls_settings, *cls_data, recipe.labels)
            minutes_spent.append((time.time() - start) / 60)
            used_prompt = {"prompt_source": prompt_source} if run["head"] == "mlm" else {}  # the text is in settings
            record = {**run, "task": recipe.name, "minutes": minutes_spent[-1], "text": note, **used_prompt,
                      "processes": processes, "gradient_accumulation_steps": accumulation,
                      "effective_batch_size": args.per_device_train_batch_size * processes * accumulation,
                      "settings": settings[recipe.name][run["head"]], **metrics}
            finished[recipe.name][run["name"]] = record
            if first_process:
                if not args.save_models:
                    shutil.rmtree(model_dir, ignore_errors=True)
                    mc.say(f"removed {model_dir}/: only the run's metrics are kept (--save_models keeps its weights)")
                mc.write_atomic(metrics_path(out, run), json.dumps(record, indent=2) + "\n")
                write_summaries(out, runs, finished[recipe.name], note, prompt_source, prompt, recipe.title)
                write_table(args.output_dir, tasks, runs, finished, args, prompt_sources)

    # 3. The selected run of each head, chosen on validation, per task; and the table beside the paper's.
    if first_process:
        for recipe in tasks:
            folder, out = folders[recipe.name]
            write_summaries(out, runs, finished[recipe.name], text_note(recipe, folder, args.strip_headers),
                            prompts[recipe.name][1], prompts[recipe.name][0], recipe.title)
            for head, name in select_best(runs, finished[recipe.name]).items():
                m = finished[recipe.name][name]
                print(f"selected {head} run{'' if single else ' of ' + recipe.name}: {name}: validation "
                      f"{100 * m['validation_accuracy']:.2f}, test {100 * m['test_accuracy']:.2f}")
        write_table(args.output_dir, tasks, runs, finished, args, prompt_sources)
        wrote = "summary.csv, summary.md, summary.png" if single else "<task>/summary.csv, .md, .png"
        print(f"wrote {args.output_dir}/{wrote}, table3.csv and table3.md")
    mc.end_distributed()
    return finished[task.name] if single else finished


if __name__ == "__main__":
    mc.run_command(main)
