"""Label texts with a masked LM's MLM head: a folder trained by train.py, or zero-shot over any label list.

    python classify.py --model my-classifier --input new.csv                  # a folder written by train.py
    python classify.py --labels "World,Sports,Business,Sci/Tech" --input news.jsonl --text_column body
    python classify.py --labels labels.txt --input tickets.parquet --output labelled.jsonl          # any size
    python classify.py --labels labels.txt --input tickets.parquet --output labelled.jsonl --resume # after a crash
    python classify.py --labels "billing,bug,urgent" --multi_label --input tickets.csv   # any number of labels each
    torchrun --nproc_per_node 8 classify.py ...    # each process scores every 8th chunk; the first writes the files

A trained folder brings its prompt.txt, label_map.json and classifier.json (the max_length it was trained
with), and texts are cut exactly as in training: only the text, never the prompt or the answer. Zero-shot,
the labels get the letters A, B, ... in order and are listed as options in the zero-shot template
(mlm_classifier.ZERO_SHOT_PROMPT), and each letter scores as `A` + ` A`, as eval.py scores MMLU. Either
way one forward pass per text scores every label, and each label's probability is renormalised over the
labels. Opt-in bias controls: --permutations K (K cyclic rotations of the label order, each label's
probability averaged) and --calibrate (content-free calibration, Zhao et al., 2021); --threshold p labels a
text null (or --abstain_label) when its top probability is below p.

With --multi_label (or a folder trained with it), every label is a yes/no question of its own, one forward pass
per text and label: a text's labels are those whose P(yes) reaches --threshold (default 0.5). A prompt that names
columns ({premise}, {hypothesis}) fills them from the input's columns of those names.

The input is read --chunk_rows rows at a time, twice: once to check every row before the model loads, then to
score each chunk (sorted by length within itself) and append its records to `<output>.partial`, with a progress
record beside it. Memory holds one chunk, whatever the input's size. Only a finished run renames the partial to
the output name, so a file there is always complete; --resume carries on after Ctrl-C, SIGTERM or kill -9.

The output has one record per input row, in input order: row, (id), text, label (multi-label: labels, a list)
and probabilities, as train.py's predictions.jsonl; `<output>.settings.json` beside it records everything that
shaped it.
"""

import json
import os
import re
import time
from collections import Counter
from datetime import datetime

from tqdm import tqdm

from mlm_classifier.classifier import CONTENT_FREE_TEXT, MLMClassifier, check_abstention, load_spec, plan_scoring
from mlm_classifier.cli import (InputError, add_flag, add_scoring_flags, check_output_path, check_positive,
                                check_spares_inputs, differences, error_reason, make_parser, on_interrupt,
                                run_command, say)
from mlm_classifier.data import (check_table_file, parse_labels, prediction_record, read_prompt, records_to_csv,
                                 records_to_jsonl, write_atomic)
from mlm_classifier.multilabel import multi_label_record
from mlm_classifier.models import (check_model_source, end_distributed, hide_progress_bars, init_distributed,
                                   load_masked_lm, load_tokenizer, resolve_attn_implementation, resolve_device,
                                   resolve_dtype)
from mlm_classifier.prompts import template_columns
from mlm_classifier.scoring import combine_views
from mlm_classifier.splits import take_columns
from mlm_classifier.stream import CHUNK_ROWS, TableChunks, check_input


def build_parser():
    """The command line, every default in view; each flag also takes hyphens (--text-column)."""
    p = make_parser(__doc__)
    add_flag(p, "model", default="answerdotai/ModernBERT-Large-Instruct",
             help="a folder written by train.py, or any masked LM (hub name or folder) with --labels")
    add_flag(p, "labels", default=None,
             help="zero-shot: a comma list (\"World,Sports\") or a file with one label per line")
    add_flag(p, "prompt_file", default=None,
             help="zero-shot template with {text} (or columns as {premise}, {hypothesis}), {options} and "
                  "`[unused0] {label}` at the end; multi-label, {label} is the label asked about and it ends "
                  "`[unused0] {answer}` (default: the templates in docs/classify.md)")
    add_flag(p, "input", required=True, help="csv, json, jsonl or parquet (for big inputs: csv, jsonl or parquet)")
    add_flag(p, "text_column", default="text", help="the column holding the texts, which fill {text}")
    add_flag(p, "id_column", default=None, help="a column passed through to the output as `id`")
    add_flag(p, "allow_empty_texts", action="store_true",
             help="write rows without a text (missing, empty or white space) with label null, counted in the "
                  "settings, instead of refusing the input")
    add_flag(p, "output", default="predictions.jsonl", help="a .csv name writes CSV, anything else JSON lines")
    add_flag(p, "chunk_rows", type=int, default=CHUNK_ROWS,
             help="rows read, scored and written at a time: memory holds one chunk")
    add_flag(p, "resume", action="store_true",
             help="carry on an interrupted run from its <output>.partial, with the same settings")
    add_flag(p, "max_length", type=int, default=None,
             help="tokens per prompt; longer texts are cut (default: what a trained folder was trained with, "
                  "else the model's positions)")
    add_flag(p, "permutations", type=int, default=1,
             help="score each text under this many cyclic rotations of the label order and average")
    add_flag(p, "calibrate", action="store_true",
             help="divide by the probabilities of a content-free text, then renormalise (Zhao et al., 2021)")
    add_flag(p, "content_free_text", default=CONTENT_FREE_TEXT, help="the content-free text of --calibrate")
    add_flag(p, "multi_label", action="store_true",
             help="zero-shot: judge every label on its own with a yes/no question (one pass per text and label), "
                  "so a text has any number of labels; a folder trained with --multi_label needs no flag")
    add_flag(p, "threshold", type=float, default=None,
             help="label a text null (or --abstain_label) when its top probability, after any calibration and "
                  "averaging, is below this; its probabilities are still written. Multi-label: a label applies "
                  "when its P(yes) reaches this (default: 0.5, or what the folder was trained with)")
    add_flag(p, "abstain_label", default=None, help="the label of a text below --threshold, instead of null")
    add_scoring_flags(p)
    return p


def check_flags(args):
    """InputErrors for flags out of range, before anything is read or loaded."""
    check_positive(max_length=args.max_length, batch_tokens=args.batch_tokens,
                   pad_to_multiple_of=args.pad_to_multiple_of, permutations=args.permutations,
                   chunk_rows=args.chunk_rows)
    if not args.content_free_text.strip():
        raise InputError("--content_free_text is empty; calibration needs a text, such as N/A")
    check_abstention(args.threshold, args.abstain_label, prefix="--", multi_label=args.multi_label)


def settings_path(output):
    """Where the settings of `output` go: `<output>.settings.json` beside it, named after the whole output name so
    that `preds.csv` and `preds.jsonl` in one folder keep a record each."""
    return output + ".settings.json"


# -----------------------------------------------------------------------------
# The output as it goes: a partial file per process, a progress record beside each, and resuming them


def partial_paths(output, world):
    """Where each process appends its chunks' records: `<output>.partial`, or `<output>.partial.rank<k>` under
    torchrun (process k takes chunks k, k + world, ...)."""
    return [output + ".partial"] if world == 1 else [f"{output}.partial.rank{k}" for k in range(world)]


def unfinished(output):
    """The partial files beside `output` of a run that did not finish, whatever its number of processes."""
    folder, name = os.path.split(output)
    if not os.path.isdir(folder or "."):
        return []
    pattern = re.compile(re.escape(name) + r"\.partial(\.rank\d+)?")
    return sorted(os.path.join(folder, n) for n in os.listdir(folder or ".") if pattern.fullmatch(n))


class Partial:
    """One process's output so far: `path` holds its whole chunks' records, in input order, and `progress_path` says
    how far it got (chunks and rows done, the byte length after each chunk, the counts so far) and with which
    settings. The records are on disk before the progress record counts them, so a resume cuts off whatever a
    kill left after the last chunk the record counts, and nothing is lost or written twice."""

    def __init__(self, path):
        self.path, self.progress_path, self.progress = path, path + ".progress.json", None

    @property
    def size(self):
        return self.progress["ends"][-1] if self.progress["ends"] else 0

    def load(self):
        try:
            with open(self.progress_path, encoding="utf-8") as f:
                self.progress = json.load(f)
        except FileNotFoundError:
            raise InputError(f"--resume: {self.path} has no progress record {self.progress_path}, so where its last "
                             f"whole chunk ends cannot be told; delete {self.path} to start over") from None
        except (OSError, ValueError) as e:
            raise InputError(f"--resume: {self.progress_path}: cannot be read ({error_reason(e)}); delete it and "
                             f"{self.path} to start over") from None
        return self.progress

    def start(self, settings, views):
        self.progress = {"settings": settings, "chunks": 0, "rows": 0, "ends": [],
                         "totals": {"counts": {}, "null": 0, "without_text": 0, "abstained": 0, "none": 0,
                                    "cut_by_view": [0] * views}}
        self.save()  # first: a partial file never exists without its record
        open(self.path, "wb").close()

    def reopen(self):
        """Carry on where the progress record ends: a torn tail (a chunk cut short by kill -9) is cut off."""
        actual = os.path.getsize(self.path)
        if actual < self.size:
            raise InputError(f"--resume: {self.path} has {actual} bytes, fewer than the {self.size} its progress "
                             f"record counts: it was changed; delete it and {self.progress_path} to start over")
        if actual > self.size:
            with open(self.path, "r+b") as f:
                f.truncate(self.size)

    def append(self, data, rows):
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.progress["ends"].append(self.size + len(data))
        self.progress["chunks"] += 1
        self.progress["rows"] += rows
        self.save()

    def save(self):
        write_atomic(self.progress_path, json.dumps(self.progress, ensure_ascii=False) + "\n", sync=True)

    def remove(self):
        for path in (self.path, self.progress_path):
            if os.path.exists(path):
                os.remove(path)


def shown(key, value):
    """A setting as a resume error shows it: the input's modification time as a date, a long text cut."""
    if key == "input_modified" and isinstance(value, int):
        return datetime.fromtimestamp(value / 1e9).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]!r}... ({len(value)} characters)"
    return repr(value)


def holds_rows(path):
    """Whether a partial file holds any row: a run stopped before its first chunk was written left nothing to keep."""
    partial = Partial(path)
    if not os.path.exists(partial.progress_path):
        return os.path.getsize(path) > 0
    try:
        return partial.load()["rows"] > 0
    except InputError:
        return True  # unreadable: kept, and named when resumed


def open_partials(output, world, settings, resume):
    """(this run's Partials, one per process, each loaded from its progress record where it carries on; the empty
    partials of a run stopped before its first chunk, to remove). Refused with an InputError: a partial holding
    rows without --resume; --resume with other settings (naming each difference); --resume where a finished run
    left nothing to carry on from."""
    found = unfinished(output)
    kept = [path for path in found if holds_rows(path)]
    partials = [Partial(path) for path in partial_paths(output, world)]
    if kept and not resume:
        raise InputError(f"--output {output}: a run that did not finish left its rows in {', '.join(kept)}; add "
                         f"--resume to carry on from there, or delete {output}.partial* to start over")
    if not kept:
        if resume and not found and os.path.exists(output):
            raise InputError(f"--resume: there is no {partials[0].path} to carry on from, and {output} is there: its "
                             "run finished (leave out --resume to label again)")
        if resume:
            say(f"note: --resume: no rows of an earlier run in {partials[0].path}; starting from the first row")
        return partials, found
    for path in kept:
        changed = differences(Partial(path).load()["settings"], settings, show=shown)
        if changed:
            raise InputError(f"--resume: {path} was written with other settings: {changed}. Resume with "
                             f"the settings it was started with, or delete {output}.partial* to start over")
    for partial in partials:
        if partial.path in kept:
            partial.load()
    return partials, [path for path in found if path not in kept]


def assemble(output, partials, world, chunks):
    """The output from every process's partial, chunk by chunk in input order (chunk c is process c % world's)."""
    files = [open(partial.path, "rb") for partial in partials]
    tmp = f"{output}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            for index in range(chunks):
                rank, k = index % world, index // world
                ends = partials[rank].progress["ends"]
                out.write(files[rank].read(ends[k] - (ends[k - 1] if k else 0)))
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.remove(tmp)
        raise
    finally:
        for f in files:
            f.close()
    return tmp


def merged_totals(partials):
    """The counts of every process's chunks, added up."""
    totals = {"counts": Counter(), "null": 0, "without_text": 0, "abstained": 0, "none": 0, "cut_by_view": None}
    for partial in partials:
        part = partial.progress["totals"]
        totals["counts"].update(part["counts"])
        for key in ("null", "without_text", "abstained", "none"):
            totals[key] += part.get(key, 0)
        cut = part["cut_by_view"]
        totals["cut_by_view"] = cut if totals["cut_by_view"] is None else [a + b for a, b in
                                                                            zip(totals["cut_by_view"], cut)]
    return totals


# -----------------------------------------------------------------------------


def main(argv=None):
    # PyTorch's CPU kernels (oneDNN) keep a compiled kernel for every input shape they meet, and length-sorted
    # batches come in many shapes: over a long input that cache, not the chunk, set the peak memory (+44% from 10k
    # to 100k rows in bench/classify_scale.py). Without it memory stays flat, at no speed cost we could measure.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    args = build_parser().parse_args(argv)
    if args.no_progress:
        hide_progress_bars()

    # 1. Everything a user can get wrong, checked before any model loads: the flags and the device, the output
    #    paths, the labels and the prompt, the folder's own files, the input file.
    check_flags(args)
    device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    check_model_source(args.model)
    labels = parse_labels(args.labels, least=1 if args.multi_label else 2) if args.labels is not None else None
    prompt = read_prompt(args.prompt_file, "--prompt_file") if args.prompt_file else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    partial_files = [path for partial in partial_paths(args.output, world)
                     for path in (partial, partial + ".progress.json")]
    outputs = [("--output", path) for path in (args.output, settings_path(args.output), *partial_files)]
    for flag, path in outputs:
        check_output_path(path, flag)
    inputs = [("--input", args.input), ("--labels", args.labels), ("--prompt_file", args.prompt_file),
              ("--model", args.model)]
    check_spares_inputs(outputs, inputs)
    spec = load_spec(args.model, labels, prompt, args.max_length, multi_label=args.multi_label or None)
    check_abstention(args.threshold, args.abstain_label, spec.labels, prefix="--", multi_label=spec.multi_label)
    check_table_file(args.input, "--input")
    stat = os.stat(args.input)

    # 2. The tokenizer's checks (single-token answers, letters that fit, room for text); an unfinished run's partial
    #    (resumed only with --resume and the settings it was started with); then every row of the input, in one
    #    pass that holds a chunk; then the model.
    rank, world = init_distributed(device)
    tokenizer = load_tokenizer(args.model)
    plan = plan_scoring(spec, tokenizer, args.permutations)
    fields = template_columns(plan.template, args.text_column)  # {field: the input's column that fills it}
    threshold = spec.threshold if args.threshold is None else args.threshold
    for note in spec.notes:
        say(f"note: {note}")
    if args.threshold is not None and not spec.multi_label and args.threshold <= 1 / len(spec.labels):
        say(f"note: --threshold {args.threshold} is at most 1/{len(spec.labels)}, the least top probability "
            f"{len(spec.labels)} labels can have: no text abstains")
    dtype = resolve_dtype(args.dtype, device)
    attn_implementation = resolve_attn_implementation(args.attn_implementation, device, dtype)
    result_settings = {
        "model": args.model, "labels": spec.labels, "answers": spec.verbalizers, "prompt": spec.prompt,
        "max_length": plan.max_length, "permutations": args.permutations, "calibrate": args.calibrate,
        "multi_label": spec.multi_label, "content_free_text": args.content_free_text if args.calibrate else None,
        "threshold": threshold, "abstain_label": args.abstain_label, "input": os.path.realpath(args.input),
        "input_bytes": stat.st_size, "input_modified": stat.st_mtime_ns, "text_column": args.text_column,
        "columns": fields, "id_column": args.id_column,
        "allow_empty_texts": args.allow_empty_texts, "dtype": str(dtype).removeprefix("torch."),
        "chunk_rows": args.chunk_rows, "processes": world,
    }  # what defines the result: a resume with any of these otherwise is refused
    partials, empty = open_partials(args.output, world, result_settings, args.resume)
    resumed_rows = sum(partial.progress["rows"] for partial in partials if partial.progress)
    summary = check_input(args.input, "--input", args.text_column, args.id_column, args.allow_empty_texts,
                          args.chunk_rows, fields, plan.template.source)
    model = load_masked_lm(args.model, dtype, attn_implementation, device)
    classifier = MLMClassifier(spec, tokenizer, model, args.permutations, args.calibrate, args.content_free_text,
                               args.batch_tokens, args.pad_to_multiple_of, plan, args.threshold, args.abstain_label)
    if world > 1:
        import torch

        torch.distributed.barrier()  # every process has read the partials before any starts or cuts its own
    mine = partials[rank]
    if rank == 0:
        for path in empty:
            if path not in (partial.path for partial in partials):
                Partial(path).remove()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if mine.progress is None:
        mine.start(result_settings, len(plan.views))
    else:
        mine.reopen()

    # 3. Chunk by chunk: one forward pass per text (and rotation) scores every label; the records go to the partial,
    #    then the progress record counts them. Process k takes chunks k, k + world, ...
    def kept():
        if world == 1:
            return (f"interrupted: {mine.progress['rows']} of {summary.rows} rows are kept in {mine.path}; the same "
                    "command with --resume carries on from there")
        return (f"interrupted: each process's rows so far are kept in {args.output}.partial.rank<k>; the same "
                "torchrun command with --resume carries on from there")

    on_interrupt(kept())
    done = mine.progress["chunks"]
    my_rows = sum(size for index, size in enumerate(summary.chunk_sizes) if index % world == rank)
    start = time.perf_counter()
    bar = tqdm(total=my_rows, initial=mine.progress["rows"], unit=" rows", desc="classifying",
               disable=rank != 0 or args.no_progress)
    as_csv = args.output.lower().endswith(".csv")
    totals = mine.progress["totals"]
    table = TableChunks(args.input, "--input", args.chunk_rows, [*fields.values(), args.id_column])
    for chunk in table.chunks(keep=lambda index: index % world == rank and index // world >= done):
        if chunk.table is None:
            continue
        rows = take_columns(chunk.table, args.input, args.text_column, id_column=args.id_column,
                            allow_empty=args.allow_empty_texts, first_row=chunk.first_row, fields=fields)
        present = [k for k, text in enumerate(rows.texts) if text is not None]  # rows without a text are not scored
        probabilities = [None] * len(rows)
        if present:
            for k, probs in zip(present, classifier.probabilities([rows.texts[k] for k in present])):
                probabilities[k] = probs
            totals["cut_by_view"] = [a + b for a, b in zip(totals["cut_by_view"], classifier.cut_by_view)]
        records = []
        for k, (row, text, probs) in enumerate(zip(rows.rows, rows.texts, probabilities)):
            row_id = [] if rows.ids is None else [rows.ids[k]]
            if spec.multi_label:
                record = multi_label_record(row, text, spec.labels, probs, threshold, *row_id)
                chosen = record["labels"] or []
                totals["none"] += probs is not None and not chosen
            else:
                record = prediction_record(row, text, spec.labels, probs, *row_id)
                if probs is not None:
                    record["label"] = classifier.label_of(probs)
                    totals["abstained"] += classifier.abstains(probs)
                chosen = [] if record["label"] is None else [record["label"]]
            totals["null"] += probs is None or (not spec.multi_label and record["label"] is None)
            for label in chosen:
                totals["counts"][label] = totals["counts"].get(label, 0) + 1
            records.append(record)
        totals["without_text"] += len(rows) - len(present)
        text = records_to_csv(records, spec.labels, header=chunk.index == 0) if as_csv else records_to_jsonl(records)
        mine.append(text.encode("utf-8"), len(rows))
        bar.update(len(rows))
        on_interrupt(kept())
    bar.close()
    seconds = time.perf_counter() - start
    if mine.progress["chunks"] != len(range(rank, summary.chunks, world)):
        raise InputError(f"--input {args.input}: it changed while it was read (now {mine.progress['chunks']} chunks "
                         f"for this process, not {len(range(rank, summary.chunks, world))}); delete "
                         f"{args.output}.partial* and run again")

    # 4. The first process writes the output, in input order, and the settings beside it; then the partials go.
    if world > 1:
        import torch

        torch.distributed.barrier()  # every process's partial is whole
    if rank == 0:
        now = os.stat(args.input)
        if (now.st_size, now.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            raise InputError(f"--input {args.input}: it changed while it was read, so the records would mix two "
                             f"versions of it; nothing was written to {args.output}: delete {args.output}.partial* "
                             "and run again")
        for partial in partials[1:]:
            partial.load()
        totals = merged_totals(partials)
        if spec.multi_label:  # per label, the content-free text's P(yes) for that label's own question
            content_free = [p[0] for p in classifier.content_free_probabilities()] if args.calibrate else None
            answers = "yes or no per label, " + ("`A` + ` A` and `B` + ` B`" if spec.zero_shot else "as trained")
        else:
            content_free = combine_views(classifier.content_free_probabilities()) if args.calibrate else None
            answers = ("letters by position, each scored as `A` + ` A`" if spec.zero_shot
                       else dict(zip(spec.labels, spec.verbalizers)))
        truncated = max(totals["cut_by_view"])
        settings = {
            "model": args.model, "mode": spec.mode, "labels": spec.labels, "multi_label": spec.multi_label,
            "questions": dict(zip(spec.labels, spec.question_names)) if spec.multi_label else None,
            "answers": answers, "prompt": spec.prompt, "max_length": classifier.max_length, "truncated": truncated,
            "permutations": args.permutations, "calibrate": args.calibrate,
            "content_free_text": args.content_free_text if args.calibrate else None,
            "content_free_probabilities": dict(zip(spec.labels, content_free)) if content_free else None,
            "threshold": threshold, "abstain_label": args.abstain_label, "abstained": totals["abstained"],
            "with_no_label": totals["none"] if spec.multi_label else None,
            "input": args.input, "text_column": args.text_column, "columns": fields, "id_column": args.id_column,
            "n": summary.rows, "without_text": totals["without_text"],  # labelled null (--allow_empty_texts)
            "dtype": str(dtype).removeprefix("torch."), "device": str(device),
            "attn_implementation": attn_implementation, "processes": world, "chunk_rows": args.chunk_rows,
            "resumed_rows": resumed_rows, "seconds": round(seconds, 3),
        }
        finished = mine.path if world == 1 else assemble(args.output, partials, world, summary.chunks)
        write_atomic(settings_path(args.output), json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
        os.replace(finished, args.output)
        for partial in partials:
            partial.remove()
        on_interrupt(f"interrupted: {args.output} is complete")
        names = spec.labels + ([args.abstain_label] if args.abstain_label is not None else [])
        counts = [f"{label} {totals['counts'][label]}" for label in names]
        counts += [f"none {totals['none']}"] * spec.multi_label + [f"null {totals['null']}"] * (totals["null"] > 0)
        print(("texts per label: " if spec.multi_label else "labels: ") + ", ".join(counts))
        scored = summary.rows - resumed_rows
        after = f" (after the {resumed_rows} rows of the run it resumed)" if resumed_rows else ""
        print(f"{scored} texts in {seconds:.1f} s ({scored / max(seconds, 1e-9):.1f}/s){after} on {device}, "
              f"{settings['dtype']}; {truncated} cut to fit {classifier.max_length} tokens; "
              f"wrote {args.output} and {settings_path(args.output)}")
    end_distributed()


if __name__ == "__main__":
    run_command(main)
