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
score each chunk (sorted by length within itself) and append its records to `<output>.partial`
(mlm_classifier/partial.py). Memory holds one chunk, whatever the input's size; only a finished run renames the
partial to the output name, so a file there is always complete; --resume carries on after Ctrl-C, SIGTERM or kill -9.
The output has one record per input row, in input order: row, (id), text, label (multi-label: labels, a list) and
probabilities, as train.py's predictions.jsonl; `<output>.settings.json` beside it records what shaped it.
"""

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime

from tqdm import tqdm
from transformers.hf_argparser import HfArg

from mlm_classifier import partial
from mlm_classifier.classifier import CONTENT_FREE_TEXT, MLMClassifier, check_abstention, plan_scoring
from mlm_classifier.cli import ScoringSettings, check_positive, make_parser, on_interrupt, parse, run_command
from mlm_classifier.data import (check_output_path, check_spares_inputs, check_table_file, parse_labels,
                                 prediction_record, read_prompt, records_to_csv, records_to_jsonl, say, write_atomic)
from mlm_classifier.errors import InputError
from mlm_classifier.models import (Runtime, check_model_source, end_distributed, load_masked_lm, load_tokenizer)
from mlm_classifier.prompts import template_columns
from mlm_classifier.scoring import abstains, combine_views
from mlm_classifier.spec import load_spec
from mlm_classifier.splits import take_columns
from mlm_classifier.stream import CHUNK_ROWS, TableChunks, check_input


@dataclass
class ClassifySettings:
    """classify.py's flags, with ScoringSettings'."""
    input: str = HfArg(help="csv, json, jsonl or parquet (for big inputs: csv, jsonl or parquet)")
    model: str = HfArg(default="answerdotai/ModernBERT-Large-Instruct", help="a folder written by train.py, or any "
                       "masked LM (hub name or folder) with --labels")
    labels: str | None = HfArg(default=None, help="zero-shot: a comma list (\"World,Sports\") or a file with one label "
                                                  "per line")
    prompt_file: str | None = HfArg(default=None, help="zero-shot template with {text} (or columns as {premise}, "
                                    "{hypothesis}), {options} and `[unused0] {label}` at the end; multi-label, {label} "
                                    "is the label asked about and it ends `[unused0] {answer}` (unset: the templates "
                                    "in docs/classify.md)")
    text_column: str = HfArg(default="text", help="the column holding the texts, which fill {text}")
    id_column: str | None = HfArg(default=None, help="a column passed through to the output as `id`")
    allow_empty_texts: bool = HfArg(default=False, help="write rows without a text (missing, empty or white space) "
                                    "with label null, counted in the settings, instead of refusing the input")
    output: str = HfArg(default="predictions.jsonl", help="a .csv name writes CSV, anything else JSON lines")
    chunk_rows: int = HfArg(default=CHUNK_ROWS, help="rows read, scored and written at a time: memory holds one chunk")
    resume: bool = HfArg(default=False, help="carry on an interrupted run from its <output>.partial, with the same "
                                             "settings")
    max_length: int | None = HfArg(default=None, help="tokens per prompt; longer texts are cut (unset: what a trained "
                                   "folder was trained with, else the model's positions)")
    permutations: int = HfArg(default=1, help="score each text under this many cyclic rotations of the label order "
                                              "and average")
    calibrate: bool = HfArg(default=False, help="divide by the probabilities of a content-free text, then "
                                                "renormalise (Zhao et al., 2021)")
    content_free_text: str = HfArg(default=CONTENT_FREE_TEXT, help="the content-free text of --calibrate")
    multi_label: bool = HfArg(default=False, help="zero-shot: judge every label on its own with a yes/no question "
                              "(one pass per text and label), so a text has any number of labels; a folder trained "
                              "with --multi_label needs no flag")
    threshold: float | None = HfArg(default=None, help="label a text null (or --abstain_label) when its top "
                                    "probability, after any calibration and averaging, is below this; its "
                                    "probabilities are still written. Multi-label: a label applies when its P(yes) "
                                    "reaches this (unset: 0.5, or what the folder was trained with)")
    abstain_label: str | None = HfArg(default=None, help="the label of a text below --threshold, instead of null")

    def __post_init__(self):
        check_positive(max_length=self.max_length, permutations=self.permutations, chunk_rows=self.chunk_rows)
        if not self.content_free_text.strip():
            raise InputError("--content_free_text is empty; calibration needs a text, such as N/A")
        check_abstention(self.threshold, self.abstain_label, prefix="--", multi_label=self.multi_label)


def build_parser():
    return make_parser(__doc__, ClassifySettings, ScoringSettings)


def settings_path(output):
    """`<output>.settings.json`, named after the whole output name: `preds.csv` and `preds.jsonl` keep one each."""
    return output + ".settings.json"


def shown(key, value):
    """A setting as a resume error shows it: the input's modification time as a date, a long text cut."""
    if key == "input_modified" and isinstance(value, int):
        return datetime.fromtimestamp(value / 1e9).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]!r}... ({len(value)} characters)"
    return repr(value)


def check_outputs(args, world):
    """The files this run writes, each checked writable and no input of the run, before anything loads."""
    written = [args.output, settings_path(args.output)] + [
        path for part in partial.partial_paths(args.output, world) for path in (part, partial.progress_path(part))]
    for path in written:
        check_output_path(path, "--output")
    check_spares_inputs([("--output", path) for path in written],
                        [("--input", args.input), ("--labels", args.labels), ("--prompt_file", args.prompt_file),
                         ("--model", args.model)])


def label_chunk(classifier, rows, totals):
    """The records of one chunk's rows, in order, their counts added to `totals`; rows without a text (kept with
    --allow_empty_texts) are not scored and get null."""
    present = [k for k, text in enumerate(rows.texts) if text is not None]
    probabilities = [None] * len(rows)
    for k, probs in zip(present, classifier.probabilities([rows.texts[k] for k in present]) if present else ()):
        probabilities[k] = probs
    if present:
        totals["cut_by_view"] = [a + b for a, b in zip(totals["cut_by_view"], classifier.cut_by_view)]
    records = []
    for k, probs in enumerate(probabilities):
        result = None if probs is None else classifier.result(probs)
        ids = [] if rows.ids is None else [rows.ids[k]]
        records.append(prediction_record(rows.rows[k], rows.texts[k], result, *ids, multi_label=classifier.multi_label))
        chosen = [] if result is None else result.get("labels") or [result.get("label")]
        chosen = [label for label in chosen if label is not None]
        totals["none"] += classifier.multi_label and result is not None and not chosen
        totals["abstained"] += not classifier.multi_label and result is not None and abstains(probs,
                                                                                              classifier.threshold)
        totals["null"] += result is None or (not classifier.multi_label and result["label"] is None)
        for label in chosen:
            totals["counts"][label] = totals["counts"].get(label, 0) + 1
    totals["without_text"] += len(rows) - len(present)
    return records


def finish(args, spec, classifier, partials, runtime, summary, seconds, resumed_rows):
    """The output, in input order, from the partials, and the settings beside it; both prepared in full before
    either replaces what was there, so the old pair stays whole until the new one is complete."""
    totals = partial.merged_totals(partials)
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
        "threshold": classifier.threshold, "abstain_label": args.abstain_label, "abstained": totals["abstained"],
        "with_no_label": totals["none"] if spec.multi_label else None, "input": args.input,
        "text_column": args.text_column, "columns": template_columns(classifier.plan.template, args.text_column),
        "id_column": args.id_column, "n": summary.rows, "without_text": totals["without_text"],
        **runtime.describe(), "chunk_rows": args.chunk_rows, "resumed_rows": resumed_rows, "seconds": round(seconds, 3),
    }
    finished = partials[0].path if runtime.world == 1 else partial.assemble(args.output, partials, runtime.world,
                                                                            summary.chunks)
    settings_tmp = settings_path(args.output) + ".new"
    write_atomic(settings_tmp, json.dumps(settings, indent=2, ensure_ascii=False) + "\n", sync=True)
    os.replace(finished, args.output)
    os.replace(settings_tmp, settings_path(args.output))
    for part in partials:
        part.remove()
    on_interrupt(f"interrupted: {args.output} is complete")
    names = spec.labels + ([args.abstain_label] if args.abstain_label is not None else [])
    counts = [f"{label} {totals['counts'].get(label, 0)}" for label in names]
    counts += [f"none {totals['none']}"] * spec.multi_label + [f"null {totals['null']}"] * (totals["null"] > 0)
    print(("texts per label: " if spec.multi_label else "labels: ") + ", ".join(counts))
    scored, after = summary.rows - resumed_rows, f" (after the {resumed_rows} rows of the run it resumed)"
    print(f"{scored} texts in {seconds:.1f} s ({scored / max(seconds, 1e-9):.1f}/s){after * bool(resumed_rows)} on "
          f"{runtime.device}, {settings['dtype']}; {truncated} cut to fit {classifier.max_length} tokens; "
          f"wrote {args.output} and {settings_path(args.output)}")


def main(argv=None):
    # PyTorch's CPU kernels (oneDNN) keep a compiled kernel for every input shape they meet, and length-sorted
    # batches come in many shapes: over a long input that cache, not the chunk, set the peak memory (+44% from 10k
    # to 100k rows in bench/classify_scale.py). Without it memory stays flat, at no speed cost we could measure.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    args, scoring = parse(build_parser(), argv)

    # 1. Everything a user can get wrong, checked before any model loads: the output paths (and that no other run
    #    owns them), the labels and the prompt, the folder's own files, the input file, the tokenizer's checks.
    runtime = Runtime.resolve(scoring)
    check_outputs(args, runtime.world)
    check_model_source(args.model)
    labels = parse_labels(args.labels, least=1 if args.multi_label else 2) if args.labels is not None else None
    prompt = read_prompt(args.prompt_file, "--prompt_file") if args.prompt_file else None
    spec = load_spec(args.model, labels, prompt, args.max_length, multi_label=args.multi_label or None)
    check_abstention(args.threshold, args.abstain_label, spec.labels, prefix="--", multi_label=spec.multi_label)
    check_table_file(args.input, "--input")
    stat = os.stat(args.input)
    lock = partial.lock(args.output) if runtime.rank == 0 else None
    try:
        run(args, spec, runtime, stat)
    finally:
        if lock:
            os.remove(lock)
    end_distributed()


def run(args, spec, runtime, stat):
    """Steps 2 to 4, with the output owned by this run."""
    import torch

    # 2. The tokenizer's checks (single-token answers, letters that fit, room for text); an unfinished run's partial
    #    (resumed only with --resume and the settings it was started with); every row of the input, in one pass that
    #    holds a chunk; then the model.
    tokenizer = load_tokenizer(args.model)
    plan = plan_scoring(spec, tokenizer, args.permutations)
    fields = template_columns(plan.template, args.text_column)  # {field: the input's column that fills it}
    for note in spec.notes:
        say(f"note: {note}")
    if args.threshold is not None and not spec.multi_label and args.threshold <= 1 / len(spec.labels):
        say(f"note: --threshold {args.threshold} is at most 1/{len(spec.labels)}, the least top probability "
            f"{len(spec.labels)} labels can have: no text abstains")
    result_settings = {
        "model": args.model, "labels": spec.labels, "answers": spec.verbalizers, "prompt": spec.prompt,
        "max_length": plan.max_length, "permutations": args.permutations, "calibrate": args.calibrate,
        "multi_label": spec.multi_label, "content_free_text": args.content_free_text if args.calibrate else None,
        "threshold": spec.threshold if args.threshold is None else args.threshold,
        "abstain_label": args.abstain_label, "input": os.path.realpath(args.input), "input_bytes": stat.st_size,
        "input_modified": stat.st_mtime_ns, "text_column": args.text_column, "columns": fields,
        "id_column": args.id_column, "allow_empty_texts": args.allow_empty_texts,
        "dtype": str(runtime.dtype).removeprefix("torch."), "chunk_rows": args.chunk_rows, "processes": runtime.world,
    }  # what defines the result: a resume with any of these otherwise is refused
    partials, empty = partial.open_partials(args.output, runtime.world, result_settings, args.resume, shown)
    summary = check_input(args.input, "--input", args.text_column, args.id_column, args.allow_empty_texts,
                          args.chunk_rows, fields, plan.template.source)
    for rank, part in enumerate(partials):
        if part.progress:
            mine = range(rank, summary.chunks, runtime.world)[:part.progress["chunks"]]
            part.check_rows(sum(summary.chunk_sizes[i] for i in mine), f"the input's first {len(mine)} chunk(s)")
    resumed_rows = sum(part.progress["rows"] for part in partials if part.progress)
    model = load_masked_lm(args.model, runtime)
    classifier = MLMClassifier(spec, tokenizer, model, args.permutations, args.calibrate, args.content_free_text,
                               runtime.batch_tokens, runtime.pad_to_multiple_of, plan, args.threshold,
                               args.abstain_label)
    if runtime.world > 1:
        torch.distributed.barrier()  # every process has read the partials before any starts or cuts its own
    mine = partials[runtime.rank]
    if runtime.rank == 0:
        for path in set(empty) - {part.path for part in partials}:
            partial.Partial(path).remove()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    mine.start(result_settings, len(plan.views)) if mine.progress is None else mine.reopen()
    seconds = score_chunks(args, classifier, mine, runtime, summary, fields)

    # 4. The first process writes the output, in input order, and the settings beside it; then the partials go.
    if runtime.world > 1:
        torch.distributed.barrier()  # every process's partial is whole
    if runtime.rank == 0:
        now = os.stat(args.input)
        if (now.st_size, now.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            raise InputError(f"--input {args.input}: it changed while it was read, so the records would mix two "
                             f"versions of it; nothing was written to {args.output}: delete {args.output}.partial* "
                             "and run again")
        for part in partials[1:]:
            part.load()
        finish(args, spec, classifier, partials, runtime, summary, seconds, resumed_rows)


def score_chunks(args, classifier, mine, runtime, summary, fields):
    """3. Chunk by chunk (process k takes chunks k, k + world, ...): one forward pass per text (and rotation) scores
    every label; the records go to this process's partial, then its progress record counts them. Returns seconds."""
    rank, world = runtime.shard

    def kept():
        if world == 1:
            return (f"interrupted: {mine.progress['rows']} of {summary.rows} rows are kept in {mine.path}; the same "
                    "command with --resume carries on from there")
        return (f"interrupted: each process's rows so far are kept in {args.output}.partial.rank<k>; the same "
                "torchrun command with --resume carries on from there")

    on_interrupt(kept())
    done, start = mine.progress["chunks"], time.perf_counter()
    my_rows = sum(size for index, size in enumerate(summary.chunk_sizes) if index % world == rank)
    bar = tqdm(total=my_rows, initial=mine.progress["rows"], unit=" rows", desc="classifying",
               disable=not runtime.progress)
    table = TableChunks(args.input, "--input", args.chunk_rows, [*fields.values(), args.id_column])
    for chunk in table.chunks(keep=lambda index: index % world == rank and index // world >= done):
        if chunk.table is None:
            continue
        rows = take_columns(chunk.table, args.input, args.text_column, id_column=args.id_column,
                            allow_empty=args.allow_empty_texts, first_row=chunk.first_row, fields=fields)
        records = label_chunk(classifier, rows, mine.progress["totals"])
        as_csv = args.output.lower().endswith(".csv")
        text = records_to_csv(records, classifier.labels, header=chunk.index == 0) if as_csv else \
            records_to_jsonl(records)
        mine.append(text.encode("utf-8"), len(rows), args.output)
        bar.update(len(rows))
        on_interrupt(kept())
    bar.close()
    if mine.progress["chunks"] != len(range(rank, summary.chunks, world)):
        raise InputError(f"--input {args.input}: it changed while it was read (now {mine.progress['chunks']} chunks "
                         f"for this process, not {len(range(rank, summary.chunks, world))}); delete "
                         f"{args.output}.partial* and run again")
    return time.perf_counter() - start


if __name__ == "__main__":
    run_command(main)
