"""The paper's fine-tuning sweep (its Table 3), less the training (sweeps.py): its settings, data samples, grid,
recorded runs, and reports beside the paper's figures. Validation accuracy (a stratified slice of train) selects the
best run of each head; test accuracy is reported for every run and never used to choose."""

import itertools
import json
import math
import os
import random
import statistics
from dataclasses import dataclass, field
from typing import Literal

from transformers.hf_argparser import HfArg

from .cli import check_positive
from .data import check_same_settings, recorded_settings, say, write_atomic
from .errors import InputError
from .recipes import LABEL_KEY, PAPER_TABLE_3, RECIPES, recipe_fields
from .splits import Split

HEADS = {"mlm": "MLM head", "cls": "classification head"}
MODEL = "answerdotai/ModernBERT-Large-Instruct"  # the paper's models: Table 3's figures are theirs
CLS_MODEL = "answerdotai/ModernBERT-large"


@dataclass
class SweepSettings:
    """The sweep's flags (sweep.py adds --tasks); `run_settings` records those that define a run's result."""
    model: str = HfArg(default=MODEL, help="MLM head: hub name or folder")
    cls_model: str = HfArg(default=CLS_MODEL, help="classification head's base model")
    data_dir: str | None = HfArg(default=None, help="local data in the hub's layout (unset: the hub): sweep.py, one "
                                 "folder per task, DIR/<task>/<split>.jsonl (or .parquet, .csv); "
                                 "sweep_20newsgroups.py, DIR/train.jsonl and DIR/test.jsonl")
    strip_headers: bool = HfArg(default=False, help="remove headers, signatures and quotes from 20newsgroups' local "
                                                    "files, as the hub copy has them removed")
    output_dir: str = HfArg(default="sweep_results", help="one folder per run, and the summaries")
    head: Literal["mlm", "cls", "both"] = HfArg(default="both", help="which heads to run")
    learning_rates: list[float] = HfArg(default_factory=lambda: [2e-5, 3e-5, 5e-5], help="MLM head's grid")
    cls_learning_rates: list[float] = HfArg(default_factory=lambda: [3e-5, 5e-5, 8e-5],
                                            help="classification head's grid")
    epochs: list[int] = HfArg(default_factory=lambda: [1, 2, 3], help="both heads' grid")
    seeds: list[int] = HfArg(default_factory=lambda: [42], help="training seeds; every grid point runs each")
    prompt_file: str | None = HfArg(default=None, help="MLM head template for one task, in train.py's format ({text} "
                                    "or the task's columns, optional {options}, `[unused0] {label}` at the end) "
                                    "(unset: the task's prompt)")
    max_length: int | None = HfArg(default=None, help="tokens per example; only the text is cut (unset: each task's, "
                                                      "in docs/sweep.md; 20 Newsgroups' is 4096)")
    per_device_train_batch_size: int = HfArg(default=8, help="examples per batch and process")
    per_device_eval_batch_size: int = HfArg(default=8, help="evaluation batches hold up to this x --max_length "
                                                            "padded tokens")
    effective_batch_size: int = HfArg(default=32, help="examples per optimizer step: accumulation = this / (per "
                                                       "device x processes)")
    weight_decay: float = HfArg(default=0.01, help="AdamW weight decay")
    warmup_ratio: float = HfArg(default=0.05, help="share of the steps spent warming up")
    max_train_samples: int | None = HfArg(default=None, help="at most this many training rows, seeded")
    max_eval_samples: int | None = HfArg(default=None, help="at most this many validation and test rows each, seeded")
    validation_fraction: float = HfArg(default=0.1, help="seeded, stratified share of train held out to choose runs")
    data_seed: int = HfArg(default=42, help="seed of the validation split and the samples")
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = HfArg(
        default="auto", help="auto: flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa")
    logging_steps: int = HfArg(default=50, help="log the training loss every N steps")
    save_models: bool = HfArg(default=False, help="keep each run's weights in <run>/model")
    heads: list = field(default=None, init=False)

    def __post_init__(self):
        check_positive(max_length=self.max_length, per_device_train_batch_size=self.per_device_train_batch_size,
                       per_device_eval_batch_size=self.per_device_eval_batch_size,
                       effective_batch_size=self.effective_batch_size, max_train_samples=self.max_train_samples,
                       max_eval_samples=self.max_eval_samples, logging_steps=self.logging_steps)
        if not 0 < self.validation_fraction < 1:
            raise InputError(f"--validation_fraction {self.validation_fraction} must be in (0, 1): runs are chosen "
                             "on it")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError(f"--warmup_ratio {self.warmup_ratio} must be in [0, 1)")
        if self.weight_decay < 0:
            raise InputError(f"--weight_decay {self.weight_decay} must not be negative")
        self.heads = ["mlm", "cls"] if self.head == "both" else [self.head]

    def run_settings(self, head, prompt, recipe, folder=None):
        """Everything besides the grid point that defines a run's result, recorded in its metrics.json and checked
        when a sweep resumes, so that a run made otherwise is never reported as this sweep's."""
        settings = {"model": self.model if head == "mlm" else self.cls_model, "data": folder or recipe.hub_name}
        if recipe.strip_headers:
            settings["strip_headers"] = self.strip_headers
        settings.update({"max_length": self.max_length or recipe.max_length, "max_train_samples":
                         self.max_train_samples, "max_eval_samples": self.max_eval_samples,
                         "validation_fraction": self.validation_fraction, "data_seed": self.data_seed,
                         "per_device_train_batch_size": self.per_device_train_batch_size,
                         "effective_batch_size": self.effective_batch_size, "weight_decay": self.weight_decay,
                         "warmup_ratio": self.warmup_ratio})
        return {**settings, "prompt": prompt} if head == "mlm" else settings


def seeded_sample(rows, n, seed):
    """The first `n` rows after a seeded shuffle (files are often sorted by label); all rows when n is None."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n] if n else rows


def stratified_split(rows, fraction, seed):
    """(train, validation): a seeded, stratified `fraction` of the rows held out for choosing runs."""
    from sklearn.model_selection import train_test_split

    labels = [r[LABEL_KEY] for r in rows]
    n_validation = math.ceil(fraction * len(rows))  # as train_test_split counts it
    if n_validation < len(set(labels)) or n_validation >= len(rows):
        raise InputError(f"--validation_fraction {fraction} of {len(rows)} training rows holds out {n_validation}; "
                         f"it must hold out at least one per label ({len(set(labels))}) and leave rows to train")
    stratify = labels if min(labels.count(label) for label in set(labels)) >= 2 else None
    return train_test_split(rows, test_size=fraction, random_state=seed, stratify=stratify)


def samples(rows, settings):
    """{"train", "validation", "test"}: a stratified validation slice of train, then seeded samples of each."""
    train, validation = stratified_split(rows["train"], settings.validation_fraction, settings.data_seed)
    return {"train": seeded_sample(train, settings.max_train_samples, settings.data_seed),
            "validation": seeded_sample(validation, settings.max_eval_samples, settings.data_seed),
            "test": seeded_sample(rows["test"], settings.max_eval_samples, settings.data_seed)}


def to_splits(rows_by_split, template, recipe):
    """{name: Split} from {name: rows}, each text stripped (as the published templates strip the post)."""
    fields = recipe_fields(template, recipe)

    def text(row):
        if template.text_only:
            return row[fields["text"]].strip()
        return {name: row[column].strip() for name, column in fields.items()}

    return {name: Split(f"{recipe.title} {name}", [text(r) for r in rows], [r[LABEL_KEY] for r in rows],
                        list(range(len(rows)))) for name, rows in rows_by_split.items()}


def text_note(recipe, folder, strip_headers):
    """Which text the runs read, for the summary."""
    if recipe.strip_headers and not folder:
        return f"{recipe.dataset} from the hub (headers, signatures and quotes removed)"
    if recipe.strip_headers:
        return f"{folder}, " + ("headers, signatures and quotes removed" if strip_headers
                                else "raw posts (headers, signatures and quotes kept)")
    return f"{folder}" if folder else f"{recipe.hub_name} from the hub"


def unique(values):
    """The values without repeats, in their first order (`1e-3 0.001` is one learning rate)."""
    return list(dict.fromkeys(values))


def make_grid(heads, learning_rates, cls_learning_rates, epochs, seeds):
    """One dict per run: head, lr, epochs, seed and a name unique in the task; repeated grid points run once."""
    for flag, values in (("learning_rates", learning_rates), ("cls_learning_rates", cls_learning_rates),
                         ("epochs", epochs)):
        bad = [v for v in values if v <= 0]
        if bad:
            raise InputError(f"--{flag} {bad[0]:g}: every value must be a positive number")
    return [{"head": head, "lr": lr, "epochs": n, "seed": seed, "name": f"{head}_lr{lr:g}_ep{n}_seed{seed}"}
            for head in heads for lr, n, seed in itertools.product(
                unique(learning_rates if head == "mlm" else cls_learning_rates), unique(epochs), unique(seeds))]


def accumulation_steps(effective_batch_size, per_device_batch_size, processes):
    """Gradient accumulation steps that make the effective batch, given the real number of processes."""
    per_step = per_device_batch_size * processes
    if effective_batch_size % per_step:
        raise InputError(f"--effective_batch_size {effective_batch_size} is not a multiple of "
                         f"--per_device_train_batch_size {per_device_batch_size} x {processes} processes")
    return effective_batch_size // per_step


def metrics_path(output_dir, run):
    return os.path.join(output_dir, run["name"], "metrics.json")


def load_finished(output_dir, runs, settings):
    """{run name: metrics} for the runs whose metrics.json exists; `settings` maps each head to its run_settings. A
    run recorded with other settings is an InputError (never mix two sweeps); an unreadable one is not finished."""
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
            say(f"note: {path} is empty or not a JSON object (left by a crash?); the run starts again")
            continue
        check_same_settings(recorded_settings(path), settings[run["head"]],
                            f"--output_dir {output_dir}: {run['name']} was run",
                            "Use another --output_dir, or delete that run's folder to run it again")
        finished[run["name"]] = metrics
    return finished


def select_best(runs, finished):
    """{head: name of the finished run with the best validation accuracy}; test accuracy plays no part."""
    best = {}
    for run in runs:
        metrics, current = finished.get(run["name"]), best.get(run["head"])
        if metrics and (current is None or metrics["validation_accuracy"] > finished[current]["validation_accuracy"]):
            best[run["head"]] = run["name"]
    return best


def summary_rows(runs, finished):
    """One row per finished run, with the columns of summary.csv."""
    best = set(select_best(runs, finished).values())
    return [{"head": run["head"], "lr": run["lr"], "epochs": run["epochs"], "seed": run["seed"],
             **{key: m[key] for key in ("validation_accuracy", "test_accuracy", "validation_macro_f1",
                                        "test_macro_f1", "minutes")},
             "selected": run["name"] in best, "run": run["name"]}
            for run in runs if (m := finished.get(run["name"])) is not None]


def write_csv(path, rows):
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join("" if r[c] is None else str(r[c]) for c in columns) for r in rows]
    write_atomic(path, "\n".join(lines) + "\n")


def write_summaries(output_dir, runs, finished, note, prompt_source, prompt, title):
    """summary.csv, summary.md (the selected runs, mean ± std over seeds, every run, the MLM head's prompt) and
    summary.png (validation accuracy over lr x epochs per head), atomically."""
    rows = summary_rows(runs, finished)
    if not rows:
        return
    write_csv(os.path.join(output_dir, "summary.csv"), rows)
    with_mlm = any(r["head"] == "mlm" for r in rows)
    prompt_note = f" MLM head prompt: {prompt_source} (below)." if with_mlm else ""
    out = [f"# {title} sweep\n\nText: {note}.{prompt_note} Runs finished: {len(rows)} of {len(runs)}. The selected "
           "run of each head has the best validation accuracy; test accuracy is only reported.\n",
           "## Selected runs\n", "| head | run | validation acc | test acc | test macro-F1 |", "|---|---|---|---|---|"]
    out += [f"| {HEADS[r['head']]} | {r['run']} | {pct(r['validation_accuracy'])} | {pct(r['test_accuracy'])} | "
            f"{pct(r['test_macro_f1'])} |" for r in rows if r["selected"]]
    out += ["\n## Mean ± std over seeds\n", "| head | lr | epochs | seeds | validation acc | test acc |",
            "|---|---|---|---|---|---|"]
    groups = {}
    for r in rows:
        groups.setdefault((r["head"], r["lr"], r["epochs"]), []).append(r)
    for (head, lr, epochs), group in groups.items():
        (val, val_sd), (test, test_sd) = ((statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for v in
                                          ([g[k] for g in group] for k in ("validation_accuracy", "test_accuracy")))
        out.append(f"| {HEADS[head]} | {lr:g} | {epochs} | {len(group)} | {pct(val)} ± {pct(val_sd)} | "
                   f"{pct(test)} ± {pct(test_sd)} |")
    out += ["\n## Every run\n", "| head | lr | epochs | seed | validation acc | test acc | validation macro-F1 | "
            "test macro-F1 | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {HEADS[r['head']]}{' **(selected)**' * r['selected']} | {r['lr']:g} | {r['epochs']} | {r['seed']} | "
            f"{pct(r['validation_accuracy'])} | {pct(r['test_accuracy'])} | {pct(r['validation_macro_f1'])} | "
            f"{pct(r['test_macro_f1'])} | {r['minutes']:.1f} |" for r in rows]
    if with_mlm:
        out += [f"\n## MLM head prompt ({prompt_source})\n", "```text", prompt, "```"]
    write_atomic(os.path.join(output_dir, "summary.md"), "\n".join(out) + "\n")
    plot_heatmaps(rows, os.path.join(output_dir, "summary.png"))


def pct(x):
    return f"{100 * x:.2f}"


def plot_heatmaps(rows, path):
    """One heatmap per head: mean validation accuracy over learning rate x epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = [h for h in HEADS if any(r["head"] == h for r in rows)]
    fig, axes = plt.subplots(1, len(heads), figsize=(5 * len(heads), 4), squeeze=False)
    for ax, head in zip(axes[0], heads):
        mine = [r for r in rows if r["head"] == head]
        lrs, epochs = sorted({r["lr"] for r in mine}), sorted({r["epochs"] for r in mine})
        grid = [[statistics.mean(v) * 100 if (v := [r["validation_accuracy"] for r in mine
                                                    if r["lr"] == lr and r["epochs"] == n]) else math.nan
                 for n in epochs] for lr in lrs]
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        for i, j in itertools.product(range(len(lrs)), range(len(epochs))):
            if not math.isnan(grid[i][j]):
                ax.text(j, i, f"{grid[i][j]:.1f}", ha="center", va="center", color="white")
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set(xlabel="epochs", ylabel="learning rate", title=HEADS[head] + ": validation accuracy (%)")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def table_rows(tasks, runs, finished):
    """One row per task and head with a selected run: its accuracies (%) beside Table 3's figure; then one average
    row per head over the tasks that have one, beside the paper's average over the same tasks."""
    rows = []
    for recipe in tasks:
        best = select_best(runs, finished[recipe.name])
        for head in (h for h in HEADS if h in best):
            m, paper = finished[recipe.name][best[head]], PAPER_TABLE_3[recipe.name][head]
            done = sum(r["head"] == head and r["name"] in finished[recipe.name] for r in runs)
            rows.append({"task": recipe.name, "head": head, "run": best[head],
                         "runs_finished": f"{done}/{sum(r['head'] == head for r in runs)}",
                         "validation_accuracy": round(100 * m["validation_accuracy"], 2),
                         "test_accuracy": round(100 * m["test_accuracy"], 2), "paper_test_accuracy": paper})
    for head in HEADS:
        mine = [r for r in rows if r["head"] == head]
        if mine:
            rows.append({"task": f"average ({len(mine)} task{'s' * (len(mine) > 1)})", "head": head, "run": "",
                         "runs_finished": "", **{key: round(statistics.mean(r[key] for r in mine), 2) for key in
                                                 ("validation_accuracy", "test_accuracy", "paper_test_accuracy")}})
    for row in rows:
        row["difference"] = round(row["test_accuracy"] - row["paper_test_accuracy"], 2)
    return rows


def write_table(output_dir, tasks, runs, finished, settings, prompts):
    """table3.csv and table3.md in `output_dir`: the runs that validation selected beside the paper's figures."""
    rows = table_rows(tasks, runs, finished)
    if not rows:
        return
    write_csv(os.path.join(output_dir, "table3.csv"), rows)
    titles = {name: recipe.title for name, recipe in RECIPES.items()}
    out = ["# Table 3 beside the paper's\n",
           "Test accuracy (%) of the run of each head that validation selected, per task, beside the paper's figure "
           "(Clavié, Cooper, Warner, 2025, *It's All in The [MASK]*, arXiv 2502.03793, Table 3, as printed: "
           "ModernBERT-Large-Instruct fine-tuned through its MLM head, ModernBERT-Large with a classification head; "
           "its classification-head MNLI and SST-2 figures are the ModernBERT paper's). An average is over the tasks "
           "run, beside the paper's figures for the same tasks.\n",
           "| task | head | selected run | runs finished | validation acc | test acc | paper | difference |",
           "|---|---|---|---|---|---|---|---|"]
    out += [f"| {titles.get(r['task'], r['task'])} | {HEADS[r['head']]} | {r['run']} | {r['runs_finished']} | "
            f"{r['validation_accuracy']:.2f} | {r['test_accuracy']:.2f} | {r['paper_test_accuracy']:.2f} | "
            f"{r['difference']:.2f} |" for r in rows]
    out.append("\nPrompts: " + "; ".join(f"{titles[name]}: {source}" for name, source in prompts.items()) + ".")
    others = [f"--{flag} {getattr(settings, flag)}" for flag, default in (("model", MODEL), ("cls_model", CLS_MODEL))
              if getattr(settings, flag) != default]
    if others:
        out.append(f"\nThe runs used {' and '.join(others)}, not the paper's models: the paper's figures are not "
                   "theirs to match.")
    write_atomic(os.path.join(output_dir, "table3.md"), "\n".join(out) + "\n")
