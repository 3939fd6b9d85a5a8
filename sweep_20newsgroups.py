"""The paper's 20 Newsgroups sweep: fine-tuning through the MLM head against a classification head.

    python sweep_20newsgroups.py                       # SetFit/20_newsgroups from the hub
    python sweep_20newsgroups.py --data_dir ~/20newsgroups --strip_headers   # local train.jsonl and test.jsonl
    python sweep_20newsgroups.py --head mlm --learning_rates 3e-5 --epochs 1 --max_train_samples 2000

The MLM head (ModernBERT-Large-Instruct, Answer Token Prediction through train.py) answers with a
letter A-T after `[unused0]`, in the published sweep's prompt unless --prompt_file gives another; the
classification head (`AutoModelForSequenceClassification` on ModernBERT-Large) reads the raw text. Each
run starts from its base model and writes `<output_dir>/<run>/metrics.json` when it ends; a run whose
metrics exist is skipped, so an interrupted sweep resumes where it stopped. Validation accuracy (a
stratified slice of train) selects the best run; test accuracy is reported for every run and never used
to choose.
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

NEWSGROUPS = [  # label index = position (alphabetical, as sklearn and SetFit number them), published description
    ("alt.atheism", "Discussion of atheism and criticism of religion"),
    ("comp.graphics", "Computer graphics, rendering, and visualization"),
    ("comp.os.ms-windows.misc", "General Microsoft Windows topics and issues"),
    ("comp.sys.ibm.pc.hardware", "IBM PC compatible hardware and components"),
    ("comp.sys.mac.hardware", "Apple Macintosh hardware and components"),
    ("comp.windows.x", "X Window System software and configuration"),
    ("misc.forsale", "General marketplace for selling items"),
    ("rec.autos", "Cars, automotive repair and motorsports"),
    ("rec.motorcycles", "Motorcycles, riding and maintenance"),
    ("rec.sport.baseball", "Baseball discussion and news"),
    ("rec.sport.hockey", "Hockey discussion and news"),
    ("sci.crypt", "Cryptography and data security"),
    ("sci.electronics", "Electronics and electrical engineering"),
    ("sci.med", "Medicine, health and medical science"),
    ("sci.space", "Space exploration and astronomy"),
    ("soc.religion.christian", "Christianity-specific religious discussion"),
    ("talk.politics.guns", "Gun politics and firearm regulations"),
    ("talk.politics.mideast", "Middle East politics and current events"),
    ("talk.politics.misc", "General political discussion and debate"),
    ("talk.religion.misc", "General religious discussion across faiths"),
]
LABEL_MAP = {name: letter for (name, _), letter in zip(NEWSGROUPS, mc.LETTERS)}  # A to T
# The published sweep's template (AnswerDotAI's ModernBERT-Instruct mini cookbook, `newsgroup_template`), the
# setting of the paper's Table 3, character for character: four spaces after `** Instructions **`, the stripped
# post, then one `A: alt.atheism, <description>` line per newsgroup. The option lines are written in here
# because their format is not train.py's `{options}` (`- A: alt.atheism`); only the post and the answer vary.
OPTIONS = "\n".join(f"{letter}: {name}, {about}" for (name, about), letter in zip(NEWSGROUPS, mc.LETTERS))
PROMPT = (
    "** Instructions **    \n"
    "Given a short post from an online forum, determine which newsgroup category it belongs to.\n"
    "** Content **\n"
    "{text}\n"
    "What's the category of the post above?\n"
    "** Options **\n"
    + OPTIONS + "\n"
    "** Answer **\n"
    "Answer: [unused0] {label}"
)
PROMPT_SOURCE = "the published 20 Newsgroups prompt"


# -----------------------------------------------------------------------------
# Data


def strip_post(text):
    """Remove headers, signature and quoted replies as `fetch_20newsgroups(remove=('headers', 'footers', 'quotes'))`."""
    from sklearn.datasets._twenty_newsgroups import (strip_newsgroup_footer, strip_newsgroup_header,
                                                     strip_newsgroup_quoting)

    return strip_newsgroup_quoting(strip_newsgroup_footer(strip_newsgroup_header(text)))


def read_newsgroups_jsonl(path):
    """Rows of a 20 Newsgroups JSONL file (`text` a string, `label_text` among the 20 newsgroups), checked."""
    rows = []
    for row, line, record in mc.read_jsonl(path):
        where = f"{path}: {mc.row_and_line(row, line)}"
        if not isinstance(record, dict):
            raise mc.InputError(f"{where}: a {type(record).__name__}, not a JSON object")
        if not isinstance(record.get("text"), str):
            raise mc.InputError(f"{where}: `text` is {record.get('text')!r:.40}, not a string")
        if record.get("label_text") not in LABEL_MAP:
            raise mc.InputError(f"{where}: `label_text` {record.get('label_text')!r} is not one of the 20 newsgroups")
        rows.append({"text": record["text"], "label_text": record["label_text"]})
    return rows


def load_newsgroups(data_dir, strip_headers):
    """(train rows, test rows) from local JSONL files (optionally stripped) or the hub's SetFit/20_newsgroups."""
    if data_dir:
        if not os.path.isdir(data_dir):
            raise mc.InputError(f"--data_dir {data_dir}: no such folder")
        train_rows, test_rows = (read_newsgroups_jsonl(os.path.join(data_dir, f"{split}.jsonl"))
                                 for split in ("train", "test"))
        if strip_headers:
            for row in train_rows + test_rows:
                row["text"] = strip_post(row["text"])
        return train_rows, test_rows
    splits = mc.load_hub_dataset("SetFit/20_newsgroups", "give the local files with --data_dir (train.jsonl and "
                                 "test.jsonl, `text` and `label_text` per line)")
    return tuple([{"text": r["text"], "label_text": r["label_text"]} for r in splits[s]] for s in ("train", "test"))


def seeded_sample(rows, n, seed):
    """The first `n` rows after a seeded shuffle (the files are sorted by newsgroup); all rows when n is None."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n] if n else rows


def to_splits(samples):
    """{name: mlm_classifier.Split} from {name: rows}, each text stripped as the published template strips the
    post (and as train.py's tables strip their texts), so that the prompt holds exactly what it held there."""
    return {name: mc.Split(f"20 Newsgroups {name}", [r["text"].strip() for r in rows], [r["label_text"] for r in rows],
                           list(range(len(rows)))) for name, rows in samples.items()}


def stratified_split(rows, fraction, seed):
    """(train, validation): a seeded, stratified `fraction` of the rows held out for choosing runs."""
    from sklearn.model_selection import train_test_split

    labels = [r["label_text"] for r in rows]
    n_validation = math.ceil(fraction * len(rows))  # as train_test_split counts it
    if n_validation < len(set(labels)) or n_validation >= len(rows):
        raise mc.InputError(f"--validation_fraction {fraction} of {len(rows)} training rows holds out {n_validation}; "
                            f"it must hold out at least one per newsgroup ({len(set(labels))}) and leave rows to train")
    stratify = labels if min(labels.count(label) for label in set(labels)) >= 2 else None
    return train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)


# -----------------------------------------------------------------------------
# The grid, resuming, and the summaries


def unique(values):
    """The values without repeats, in their first order (`1e-3 0.001` is one learning rate)."""
    return list(dict.fromkeys(values))


def make_grid(heads, learning_rates, cls_learning_rates, epochs, seeds):
    """One dict per run: head, lr, epochs, seed and a name unique in the sweep; repeated grid points run once."""
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


def run_settings(args, head, prompt=None):
    """Everything besides the grid point that defines a run's result; recorded in its metrics.json, and checked
    when a sweep resumes, so that a run made with other settings is never reported as this sweep's. The MLM
    head's runs also depend on `prompt`, the template they were trained with."""
    settings = {"model": args.model if head == "mlm" else args.cls_model,
            "data": args.data_dir or "SetFit/20_newsgroups", "strip_headers": args.strip_headers,
            "max_length": args.max_length, "max_train_samples": args.max_train_samples,
            "max_eval_samples": args.max_eval_samples, "validation_fraction": args.validation_fraction,
            "data_seed": args.data_seed, "per_device_train_batch_size": args.per_device_train_batch_size,
            "effective_batch_size": args.effective_batch_size, "weight_decay": args.weight_decay,
            "warmup_ratio": args.warmup_ratio}
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


def write_summaries(output_dir, runs, finished, text_note, prompt_source, prompt):
    """summary.csv, summary.md and summary.png (validation accuracy over lr x epochs per head), atomically."""
    rows = summary_rows(runs, finished)
    if not rows:
        return
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
    mc.write_atomic(os.path.join(output_dir, "summary.csv"), "\n".join(lines) + "\n")
    mc.write_atomic(os.path.join(output_dir, "summary.md"),
                    summary_markdown(rows, text_note, len(runs), prompt_source, prompt))
    plot_heatmaps(rows, os.path.join(output_dir, "summary.png"))


def pct(x):
    return f"{100 * x:.2f}"


def summary_markdown(rows, text_note, n_planned, prompt_source, prompt):
    """The sweep as Markdown: the selected run of each head side by side, mean ± std over seeds, every run, and
    the MLM head's prompt (it defines those runs as much as their hyperparameters do)."""
    heads = {"mlm": "MLM head", "cls": "classification head"}
    with_mlm = any(r["head"] == "mlm" for r in rows)
    prompt_note = f" MLM head prompt: {prompt_source} (below)." if with_mlm else ""
    out = [f"# 20 Newsgroups sweep\n\nText: {text_note}.{prompt_note} Runs finished: {len(rows)} of {n_planned}. "
           "The selected run of each head has the best validation accuracy; test accuracy is only reported.\n",
           "## Selected runs\n", "| head | run | validation acc | test acc | test macro-F1 |", "|---|---|---|---|---|"]
    for r in rows:
        if r["selected"]:
            out.append(f"| {heads[r['head']]} | {r['run']} | {pct(r['validation_accuracy'])} | "
                       f"{pct(r['test_accuracy'])} | {pct(r['test_macro_f1'])} |")
    out += ["\n## Mean ± std over seeds\n", "| head | lr | epochs | seeds | validation acc | test acc |",
            "|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["head"], r["lr"], r["epochs"]), []).append(r)
    for (head, lr, epochs), group in groups.items():
        val, test = (mean_std([g[k] for g in group]) for k in ("validation_accuracy", "test_accuracy"))
        out.append(f"| {heads[head]} | {lr:g} | {epochs} | {len(group)} | {pct(val[0])} ± {pct(val[1])} | "
                   f"{pct(test[0])} ± {pct(test[1])} |")
    out += ["\n## Every run\n", "| head | lr | epochs | seed | validation acc | test acc | validation macro-F1 | "
            "test macro-F1 | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " **(selected)**" if r["selected"] else ""
        out.append(f"| {heads[r['head']]}{mark} | {r['lr']:g} | {r['epochs']} | {r['seed']} | "
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
        ax.set_title({"mlm": "MLM head", "cls": "classification head"}[head] + ": validation accuracy (%)")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# -----------------------------------------------------------------------------
# One run of each head


def training_settings(args, run, model, output_dir, accumulation):
    """train.py's settings for one run: the grid point, the shared settings, and no checkpoints along the way
    (each run is scored once, at its end, so that epochs stay a dimension of the grid)."""
    return train.TrainSettings(
        model=model, output_dir=output_dir, learning_rate=run["lr"], num_train_epochs=run["epochs"], seed=run["seed"],
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size, gradient_accumulation_steps=accumulation,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, max_length=args.max_length,
        attn_implementation=args.attn_implementation, logging_steps=args.logging_steps, eval_strategy="no",
        save_strategy="no")


def tokenize_for_classifier(model_name, splits, max_length):
    """(tokenizer, {split: datasets.Dataset of input_ids, attention_mask, labels}): the raw text, cut from the right."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = mc.load_pretrained(AutoTokenizer, model_name, "--cls_model")
    datasets = {}
    for name, split in splits.items():
        encoded = tokenizer(split.texts, truncation=True, max_length=max_length)
        encoded["labels"] = [mc.LETTERS.index(LABEL_MAP[label]) for label in split.labels]
        datasets[name] = Dataset.from_dict(dict(encoded))
    return tokenizer, datasets


def fit_classifier(settings, tokenizer, datasets):
    """Fine-tune a classification head (num_labels=20 whatever the sample holds), save it to `settings.output_dir`;
    returns metrics like train.fit's."""
    import torch
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer

    from mlm_classifier.trainer import bf16_available, classification_metrics, training_arguments

    bf16 = bf16_available()
    training_args = training_arguments(settings, False, bf16, train_sampling_strategy="group_by_length")
    names = [name for name, _ in NEWSGROUPS]
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


def build_parser():
    """The command line, every default in view; each flag also takes hyphens (--output-dir)."""
    p = mc.make_parser(__doc__)
    mc.add_flag(p, "model", default="answerdotai/ModernBERT-Large-Instruct", help="MLM head: hub name or folder")
    mc.add_flag(p, "cls_model", default="answerdotai/ModernBERT-large", help="classification head's base model")
    mc.add_flag(p, "data_dir", default=None,
                help="folder with train.jsonl and test.jsonl (`text`, `label_text`) (default: the hub's "
                     "SetFit/20_newsgroups)")
    mc.add_flag(p, "strip_headers", action="store_true",
                help="remove headers, signatures and quotes from local files, as the hub copy has them removed")
    mc.add_flag(p, "output_dir", default="sweep_results", help="one folder per run, and the summaries")
    mc.add_flag(p, "head", default="both", choices=["mlm", "cls", "both"], help="which heads to run")
    mc.add_flag(p, "learning_rates", type=float, nargs="+", default=[2e-5, 3e-5, 5e-5], help="MLM head's grid")
    mc.add_flag(p, "cls_learning_rates", type=float, nargs="+", default=[3e-5, 5e-5, 8e-5],
                help="classification head's grid")
    mc.add_flag(p, "epochs", type=int, nargs="+", default=[1, 2, 3], help="both heads' grid")
    mc.add_flag(p, "seeds", type=int, nargs="+", default=[42], help="training seeds; every grid point runs each")
    mc.add_flag(p, "prompt_file", default=None,
                help="MLM head template, in train.py's format ({text}, optional {options}, `[unused0] {label}` "
                     "at the end) (default: the published 20 Newsgroups prompt)")
    mc.add_flag(p, "max_length", type=int, default=4096, help="tokens per example; only the text is cut")
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


def check_flags(args, heads):
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
    mc.check_output_path(args.output_dir, "--output_dir", folder=True)
    for head in heads:
        mc.check_model_source(args.model if head == "mlm" else args.cls_model,
                              "--model" if head == "mlm" else "--cls_model")


def text_note(data_dir, strip_headers):
    """Which text the runs read, for the summary."""
    if not data_dir:
        return "SetFit/20_newsgroups from the hub (headers, signatures and quotes removed)"
    return f"{data_dir}, " + ("headers, signatures and quotes removed" if strip_headers
                              else "raw posts (headers, signatures and quotes kept)")


def main(argv=None):
    args = parse_args(argv)
    heads = ["mlm", "cls"] if args.head == "both" else [args.head]
    check_flags(args, heads)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = accumulation_steps(args.effective_batch_size, args.per_device_train_batch_size, processes)
    note = text_note(args.data_dir, args.strip_headers)
    prompt = mc.read_prompt(args.prompt_file, "--prompt_file") if args.prompt_file else PROMPT
    prompt_source = f"--prompt_file {args.prompt_file}" if args.prompt_file else PROMPT_SOURCE
    mc.parse_prompt(prompt, prompt_source)  # a bad prompt fails before anything loads
    first_process = int(os.environ.get("RANK", "0")) == 0
    mc.on_interrupt(f"interrupted: the finished runs are kept under {args.output_dir} (each its metrics.json); the "
                    "same command carries on with the runs left")

    # 1. The grid, and the runs already finished with these settings: checked before any data or model loads.
    runs = make_grid(heads, args.learning_rates, args.cls_learning_rates, args.epochs, args.seeds)
    settings = {head: run_settings(args, head, prompt) for head in heads}
    finished = load_finished(args.output_dir, runs, settings)
    pending = [run for run in runs if run["name"] not in finished]
    mc.say(f"{len(runs)} runs in the grid, {len(finished)} already finished; {processes} process(es), "
              f"{args.per_device_train_batch_size} per device x {accumulation} accumulation steps")

    # 2. The data: a stratified validation slice of train, seeded samples, tokenized once per head.
    if pending:
        train_rows, test_rows = load_newsgroups(args.data_dir, args.strip_headers)
        train_rows, validation_rows = stratified_split(train_rows, args.validation_fraction, args.data_seed)
        samples = {"train": seeded_sample(train_rows, args.max_train_samples, args.data_seed),
                   "validation": seeded_sample(validation_rows, args.max_eval_samples, args.data_seed),
                   "test": seeded_sample(test_rows, args.max_eval_samples, args.data_seed)}
        splits = to_splits(samples)
        if any(run["head"] == "mlm" for run in pending):
            mlm_data = train.prepare(args.model, prompt, prompt_source, LABEL_MAP, "the 20 newsgroups", splits,
                                     args.max_length)
        if any(run["head"] == "cls" for run in pending):
            cls_tokenizer, cls_datasets = tokenize_for_classifier(args.cls_model, splits, args.max_length)

    # 3. The runs, each from its base model; metrics.json marks a run done, and the summaries follow each.
    minutes_spent = []
    for run in pending:
        position = len(finished) + 1
        left = (f", about {statistics.mean(minutes_spent) * (len(runs) - position + 1):.1f} min left"
                if minutes_spent else "")
        mc.say(f"[{position}/{len(runs)}] {run['name']}{left}")
        start = time.time()
        model_dir = os.path.join(args.output_dir, run["name"], "model")
        if run["head"] == "mlm":
            metrics = train.fit(mlm_data, training_settings(args, run, args.model, model_dir, accumulation))
        else:
            cls_settings = training_settings(args, run, args.cls_model, model_dir, accumulation)
            metrics = fit_classifier(cls_settings, cls_tokenizer, cls_datasets)
        minutes_spent.append((time.time() - start) / 60)
        used_prompt = {"prompt_source": prompt_source} if run["head"] == "mlm" else {}  # the text is in settings
        record = {**run, "minutes": minutes_spent[-1], "text": note, **used_prompt, "processes": processes,
                  "gradient_accumulation_steps": accumulation,
                  "effective_batch_size": args.per_device_train_batch_size * processes * accumulation,
                  "settings": settings[run["head"]], **metrics}
        finished[run["name"]] = record
        if first_process:
            if not args.save_models:
                shutil.rmtree(model_dir, ignore_errors=True)
                mc.say(f"removed {model_dir}/: only the run's metrics are kept (--save_models keeps its weights)")
            mc.write_atomic(metrics_path(args.output_dir, run), json.dumps(record, indent=2) + "\n")
            write_summaries(args.output_dir, runs, finished, note, prompt_source, prompt)

    # 4. The selected run of each head, chosen on validation.
    if first_process:
        write_summaries(args.output_dir, runs, finished, note, prompt_source, prompt)
        for head, name in select_best(runs, finished).items():
            m = finished[name]
            print(f"selected {head} run: {name}: validation {100 * m['validation_accuracy']:.2f}, "
                  f"test {100 * m['test_accuracy']:.2f}")
        print(f"wrote {args.output_dir}/summary.csv, summary.md, summary.png")
    mc.end_distributed()
    return finished


if __name__ == "__main__":
    mc.run_command(main)
