"""Label texts with a masked LM's MLM head: a folder trained by train.py, or zero-shot over any label list.

    python classify.py --model my-classifier --input new.csv                  # a folder written by train.py
    python classify.py --labels "World,Sports,Business,Sci/Tech" --input news.jsonl --text_column body
    python classify.py --labels labels.txt --input tickets.parquet --output labelled.jsonl          # any size
    python classify.py --labels labels.txt --input tickets.parquet --output labelled.jsonl --resume # after a crash
    python classify.py --labels "billing,bug,urgent" --multi_label --input tickets.csv   # any number of labels each
    torchrun --nproc_per_node 8 classify.py ...    # each process scores every 8th chunk; the first writes the files

A trained folder brings its prompt, label map and max_length, and texts are cut exactly as in training. Zero-shot,
the labels get the letters A, B, ... in the zero-shot template, each letter scored as `A` + ` A`, as eval.py scores
MMLU. One forward pass per text scores every label (multi-label: one per text and label, a yes/no question each).
The input is read --chunk_rows rows at a time: once to check every row before the model loads, then to score each
chunk and append its records to `<output>.partial` (mlm_classifier/partial.py), so memory holds one chunk and
--resume carries on after Ctrl-C, SIGTERM or kill -9. Read top to bottom: the flags, the checks, the chunks, the
files. docs/classify.md has the formats, the bias controls and the rules of the output.
"""

import os
import time
from dataclasses import dataclass

from tqdm import tqdm
from transformers.hf_argparser import HfArg

from mlm_classifier import partial
from mlm_classifier.classifier import CONTENT_FREE_TEXT, MLMClassifier, check_abstention, plan_scoring
from mlm_classifier.cli import ScoringSettings, check_positive, make_parser, on_interrupt, parse, run_command
from mlm_classifier.data import (check_output_path, check_spares_inputs, check_table_file, parse_labels,
                                 prediction_record, read_prompt, records_to_csv, records_to_jsonl)
from mlm_classifier.errors import InputError
from mlm_classifier.models import Runtime, check_model_source, end_distributed, load_masked_lm, load_tokenizer
from mlm_classifier.prompts import template_columns
from mlm_classifier.scoring import abstains, combine_views
from mlm_classifier.spec import load_spec
from mlm_classifier.splits import take_columns
from mlm_classifier.stream import CHUNK_ROWS, TableChunks, check_input


@dataclass
class ClassifySettings:
    """classify.py's flags, with ScoringSettings'."""
    input: str = HfArg(help="csv, json, jsonl or parquet (a big input: csv, jsonl or parquet, read a chunk at a time)")
    model: str = HfArg(default="answerdotai/ModernBERT-Large-Instruct", help="a folder written by train.py, or any "
                       "masked LM with --labels")
    labels: str | None = HfArg(default=None, help="zero-shot: a comma list (\"World,Sports\") or a file of lines")
    prompt_file: str | None = HfArg(default=None, help="zero-shot template (unset: docs/classify.md's)")
    text_column: str = HfArg(default="text", help="the column holding the texts, which fill {text}")
    id_column: str | None = HfArg(default=None, help="a column passed through to the output as `id`")
    allow_empty_texts: bool = HfArg(default=False, help="label rows without a text null instead of refusing the input")
    output: str = HfArg(default="predictions.jsonl", help="a .csv name writes CSV, anything else JSON lines")
    chunk_rows: int = HfArg(default=CHUNK_ROWS, help="rows read, scored and written at a time: memory holds one chunk")
    resume: bool = HfArg(default=False, help="carry on an interrupted run from its <output>.partial")
    max_length: int | None = HfArg(default=None, help="tokens per prompt; only the text is cut (unset: the folder's, "
                                   "else the model's positions)")
    permutations: int = HfArg(default=1, help="average over this many cyclic rotations of the label order")
    calibrate: bool = HfArg(default=False, help="content-free calibration (Zhao et al., 2021)")
    content_free_text: str = HfArg(default=CONTENT_FREE_TEXT, help="the content-free text of --calibrate")
    multi_label: bool = HfArg(default=False, help="zero-shot: each label a yes/no question of its own, so a text has "
                              "any number of labels (a multi-label folder needs no flag)")
    threshold: float | None = HfArg(default=None, help="below this top probability a text is labelled null (or "
                                    "--abstain_label); multi-label, a label applies at this P(yes) (unset: 0.5)")
    abstain_label: str | None = HfArg(default=None, help="the label of a text below --threshold, instead of null")
    overwrite_output: bool = HfArg(default=False, help="replace an --output that a run with other settings wrote")

    def __post_init__(self):
        check_positive(max_length=self.max_length, permutations=self.permutations, chunk_rows=self.chunk_rows)
        if not self.content_free_text.strip():
            raise InputError("--content_free_text is empty; calibration needs a text, such as N/A")
        check_abstention(self.threshold, self.abstain_label, prefix="--", multi_label=self.multi_label)


def build_parser():
    return make_parser(__doc__, ClassifySettings, ScoringSettings)


def check_outputs(args, world):
    """The files this run writes, each checked writable and no input of the run, before anything loads."""
    written = partial.written_paths(args.output, world)
    for path in written:
        check_output_path(path, "--output")
    check_spares_inputs([("--output", path) for path in written],
                        [("--input", args.input), ("--labels", args.labels), ("--prompt_file", args.prompt_file),
                         ("--model", args.model)])


def label_chunk(classifier, rows, totals):
    """The records of one chunk's rows, in order, counted into `totals`; rows without a text (kept with
    --allow_empty_texts) are not scored and get null."""
    present = [k for k, text in enumerate(rows.texts) if text is not None]
    scored = dict(zip(present, classifier.probabilities([rows.texts[k] for k in present]) if present else ()))
    if present:
        totals["cut_by_view"] = [a + b for a, b in zip(totals["cut_by_view"], classifier.cut_by_view)]
    records, multi = [], classifier.multi_label
    for k, row in enumerate(rows.rows):
        result = classifier.result(scored[k]) if k in scored else None
        records.append(prediction_record(row, rows.texts[k], result, *([] if rows.ids is None else [rows.ids[k]]),
                                         multi_label=multi))
        labels = [] if result is None else result["labels"] if multi else [result["label"]]
        totals["without_text"] += result is None
        totals["abstained"] += result is not None and not multi and abstains(scored[k], classifier.threshold)
        totals["none"] += result is not None and multi and not labels
        totals["null"] += result is None or labels == [None]
        for label in labels:
            if label is not None:
                totals["counts"][label] = totals["counts"].get(label, 0) + 1
    return records


def finish(args, spec, classifier, partials, runtime, summary, seconds, resumed_rows, defining):
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
        **runtime.description, "chunk_rows": args.chunk_rows, "resumed_rows": resumed_rows,
        "seconds": round(seconds, 3), "settings": defining,  # what a later run must share to replace this output
    }
    partial.finish(args.output, partials, summary.chunks, settings)
    on_interrupt(f"interrupted: {args.output} is complete")
    names = spec.labels + ([args.abstain_label] if args.abstain_label is not None else [])
    counts = [f"{label} {totals['counts'].get(label, 0)}" for label in names]
    counts += [f"none {totals['none']}"] * spec.multi_label + [f"null {totals['null']}"] * (totals["null"] > 0)
    print(("texts per label: " if spec.multi_label else "labels: ") + ", ".join(counts))
    scored, after = summary.rows - resumed_rows, f" (after the {resumed_rows} rows of the run it resumed)"
    print(f"{scored} texts in {seconds:.1f} s ({scored / max(seconds, 1e-9):.1f}/s){after * bool(resumed_rows)} on "
          f"{runtime.device}, {settings['dtype']}; {truncated} cut to fit {classifier.max_length} tokens; "
          f"wrote {args.output} and {partial.settings_path(args.output)}")


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
    with partial.owned(args.output, runtime.rank == 0):
        run(args, spec, runtime, stat)
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
    replace = partial.check_replaceable(args.output, result_settings, args.overwrite_output)
    partials, empty = partial.open_partials(args.output, runtime.world, result_settings, args.resume)
    summary = check_input(args.input, "--input", args.text_column, args.id_column, args.allow_empty_texts,
                          args.chunk_rows, fields, plan.template.source)
    partial.check_rows(partials, summary.chunk_sizes)
    resumed_rows = sum(part.progress["rows"] for part in partials if part.progress)
    model = load_masked_lm(args.model, runtime)
    classifier = MLMClassifier(spec, tokenizer, model, args.permutations, args.calibrate, args.content_free_text,
                               runtime.batch_tokens, runtime.pad_to_multiple_of, plan, args.threshold,
                               args.abstain_label)
    if runtime.world > 1:
        torch.distributed.barrier()  # every process has read the partials before any starts or cuts its own
    mine = partial.begin(partials, empty, runtime.rank, result_settings, len(plan.views))
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
        finish(args, spec, classifier, partials, runtime, summary, seconds, resumed_rows, replace)


def score_chunks(args, classifier, mine, runtime, summary, fields):
    """3. Chunk by chunk (process k takes chunks k, k + world, ...): one forward pass per text (and rotation) scores
    every label; the records go to this process's partial, then its progress record counts them. Returns seconds."""
    rank, world = runtime.shard

    def kept():  # under torchrun, each process tells its own rows
        return (f"interrupted: {mine.progress['rows']} of {summary.rows} rows are kept in {mine.path}; the same "
                f"{'torchrun ' * (world > 1)}command with --resume carries on from there")

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
        csv = args.output.lower().endswith(".csv")
        text = records_to_csv(records, classifier.labels, chunk.index == 0) if csv else records_to_jsonl(records)
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
