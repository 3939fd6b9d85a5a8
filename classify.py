"""Label texts with a masked LM's MLM head: a folder trained by train.py, or zero-shot over any label list.

    python classify.py --model my-classifier --input new.csv                  # a folder written by train.py
    python classify.py --labels "World,Sports,Business,Sci/Tech" --input news.jsonl --text_column body
    python classify.py --labels labels.txt --prompt_file prompt.txt --input texts.parquet --output labelled.jsonl
    torchrun --nproc_per_node 2 classify.py ...    # each process scores a share; the first writes the files

A trained folder brings its prompt.txt, label_map.json and classifier.json (the max_length it was trained
with), and texts are cut exactly as in training: only the text, never the prompt or the answer. Zero-shot,
the labels get the letters A, B, ... in order and are listed as options in the zero-shot template
(mlm_classifier.ZERO_SHOT_PROMPT), and each letter scores as `A` + ` A`, as eval.py scores MMLU. Either
way one forward pass per text scores every label, and each label's probability is renormalised over the
labels. Opt-in bias controls: --permutations K (K cyclic rotations of the label order, each label's
probability averaged) and --calibrate (content-free calibration, Zhao et al., 2021).

The output has one record per input row, in input order: row, (id), text, label and probabilities, as
train.py's predictions.jsonl; `<output stem>.settings.json` beside it records everything that shaped it.
"""

import json
import os
import time
from collections import Counter

from mlm_classifier.classifier import CONTENT_FREE_TEXT, MLMClassifier, load_spec, parse_labels, plan_scoring
from mlm_classifier.cli import (InputError, add_flag, add_scoring_flags, check_output_path, check_positive,
                                check_spares_inputs, make_parser, run_command, say)
from mlm_classifier.data import (prediction_record, read_prompt, read_table, records_to_csv, records_to_jsonl,
                                 write_atomic)
from mlm_classifier.models import (check_model_source, end_distributed, hide_progress_bars, init_distributed,
                                   load_masked_lm, load_tokenizer, resolve_attn_implementation, resolve_device,
                                   resolve_dtype)
from mlm_classifier.scoring import combine_views
from mlm_classifier.splits import take_columns


def build_parser():
    """The command line, every default in view; each flag also takes hyphens (--text-column)."""
    p = make_parser(__doc__)
    add_flag(p, "model", default="answerdotai/ModernBERT-Large-Instruct",
             help="a folder written by train.py, or any masked LM (hub name or folder) with --labels")
    add_flag(p, "labels", default=None,
             help="zero-shot: a comma list (\"World,Sports\") or a file with one label per line")
    add_flag(p, "prompt_file", default=None,
             help="zero-shot template with {text}, {options} and `[unused0] {label}` at the end "
                  "(default: the zero-shot template in docs/classify.md)")
    add_flag(p, "input", required=True, help="csv, json, jsonl or parquet")
    add_flag(p, "text_column", default="text", help="the column holding the texts")
    add_flag(p, "id_column", default=None, help="a column passed through to the output as `id`")
    add_flag(p, "allow_empty_texts", action="store_true",
             help="write rows without a text (missing, empty or white space) with label null, counted in the "
                  "settings, instead of refusing the input")
    add_flag(p, "output", default="predictions.jsonl", help="a .csv name writes CSV, anything else JSON lines")
    add_flag(p, "max_length", type=int, default=None,
             help="tokens per prompt; longer texts are cut (default: what a trained folder was trained with, "
                  "else the model's positions)")
    add_flag(p, "permutations", type=int, default=1,
             help="score each text under this many cyclic rotations of the label order and average")
    add_flag(p, "calibrate", action="store_true",
             help="divide by the probabilities of a content-free text, then renormalise (Zhao et al., 2021)")
    add_flag(p, "content_free_text", default=CONTENT_FREE_TEXT, help="the content-free text of --calibrate")
    add_scoring_flags(p)
    return p


def check_flags(args):
    """InputErrors for flags out of range, before anything is read or loaded."""
    check_positive(max_length=args.max_length, batch_tokens=args.batch_tokens,
                   pad_to_multiple_of=args.pad_to_multiple_of, permutations=args.permutations)
    if not args.content_free_text.strip():
        raise InputError("--content_free_text is empty; calibration needs a text, such as N/A")


def settings_path(output):
    """Where the settings of `output` go: `<output>.settings.json` beside it, named after the whole output name so
    that `preds.csv` and `preds.jsonl` in one folder keep a record each."""
    return output + ".settings.json"


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.no_progress:
        hide_progress_bars()

    # 1. Everything a user can get wrong, checked before any model loads: the flags and the device, the
    #    labels and the prompt, the input file and its columns, the output path, the folder's own files.
    check_flags(args)
    device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    check_model_source(args.model)
    labels = parse_labels(args.labels) if args.labels is not None else None
    prompt = read_prompt(args.prompt_file, "--prompt_file") if args.prompt_file else None
    rows = take_columns(read_table(args.input, "--input"), args.input, args.text_column,
                        id_column=args.id_column, allow_empty=args.allow_empty_texts)
    if not len(rows):
        raise InputError(f"--input {args.input}: no rows")
    outputs = [("--output", args.output), ("--output", settings_path(args.output))]
    for flag, path in outputs:
        check_output_path(path, flag)
    inputs = [("--input", args.input), ("--labels", args.labels), ("--prompt_file", args.prompt_file),
              ("--model", args.model)]
    check_spares_inputs(outputs, inputs)
    spec = load_spec(args.model, labels, prompt, args.max_length)

    # 2. The tokenizer's checks (single-token answers, letters that fit, room for text), then the model.
    rank, world = init_distributed(device)
    tokenizer = load_tokenizer(args.model)
    plan = plan_scoring(spec, tokenizer, args.permutations)
    for note in spec.notes:
        say(f"note: {note}")
    dtype = resolve_dtype(args.dtype, device)
    attn_implementation = resolve_attn_implementation(args.attn_implementation, device, dtype)
    model = load_masked_lm(args.model, dtype, attn_implementation, device)
    classifier = MLMClassifier(spec, tokenizer, model, args.permutations, args.calibrate, args.content_free_text,
                               args.batch_tokens, args.pad_to_multiple_of, plan)

    # 3. One forward pass per text (and rotation) scores every label; each process scores its share.
    start = time.perf_counter()
    show_progress = rank == 0 and not args.no_progress
    present = [k for k, text in enumerate(rows.texts) if text is not None]  # rows without a text are not scored
    scored = classifier.probabilities([rows.texts[k] for k in present], shard=(rank, world), progress=show_progress)
    probabilities = [None] * len(rows)
    for k, probs in zip(present, scored):
        probabilities[k] = probs
    seconds = time.perf_counter() - start

    # 4. One record per input row, in input order, and the settings beside them: written by one process.
    if rank == 0:
        records = [prediction_record(row, text, spec.labels, probs, *([] if rows.ids is None else [rows.ids[k]]))
                   for k, (row, text, probs) in enumerate(zip(rows.rows, rows.texts, probabilities))]
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_atomic(args.output, records_to_csv(records, spec.labels) if args.output.lower().endswith(".csv")
                     else records_to_jsonl(records))
        content_free = combine_views(classifier.content_free_probabilities()) if args.calibrate else None
        settings = {
            "model": args.model, "mode": spec.mode, "labels": spec.labels,
            "answers": ("letters by position, each scored as `A` + ` A`" if spec.zero_shot
                        else dict(zip(spec.labels, spec.verbalizers))),
            "prompt": spec.prompt, "max_length": classifier.max_length, "truncated": classifier.truncated,
            "permutations": args.permutations, "calibrate": args.calibrate,
            "content_free_text": args.content_free_text if args.calibrate else None,
            "content_free_probabilities": dict(zip(spec.labels, content_free)) if content_free else None,
            "input": args.input, "text_column": args.text_column, "id_column": args.id_column, "n": len(records),
            "without_text": len(records) - len(present),  # labelled null (--allow_empty_texts)
            "dtype": str(dtype).removeprefix("torch."), "device": str(device),
            "attn_implementation": attn_implementation, "processes": world, "seconds": round(seconds, 3),
        }
        write_atomic(settings_path(args.output), json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
        counts = Counter(r["label"] for r in records)
        shown = [f"{label} {counts[label]}" for label in spec.labels] + [f"null {counts[None]}"] * (None in counts)
        print("labels: " + ", ".join(shown))
        print(f"{len(records)} texts in {seconds:.1f} s ({len(records) / seconds:.1f}/s) on {device}, "
              f"{settings['dtype']}; {classifier.truncated} cut to fit {classifier.max_length} tokens; "
              f"wrote {args.output} and {settings_path(args.output)}")
    end_distributed()


if __name__ == "__main__":
    run_command(main)
