"""Benchmark: classify.py at scale: rows/s and peak memory from 1k to 100k rows, streaming beside the whole-file path.

    python bench/classify_scale.py --device cpu                    # tiny model on the CPU: 1k, 10k and 100k rows
    python bench/classify_scale.py --shape large                   # ModernBERT-Large's shape on a GPU
    python bench/classify_scale.py --device cpu --sizes 1000,10000,100000,1000000 --paths stream   # more rows
    python bench/classify_scale.py --data_dir ~/data --tokenizer ~/modernbert-tokenizer   # from local copies

Real texts, AG News test rows (the hub's SetFit/ag_news, or --data_dir), cycled to each size and written as one
input file (--format, parquet by default), are labelled zero-shot over AG News' four labels by a ModernBERT with
random weights (the time does not depend on the weights). Each size runs in a fresh process per path:
- stream: classify.py itself, reading, checking, scoring and writing --chunk_rows rows at a time;
- whole file: the path classify.py had before it streamed: the whole table read, every text encoded under every
  rotation, one length sort over all of them, scored, and the records written once at the end.
Each process reports rows/s (reading the input to the written output; the model's loading is left out) and its
peak resident memory (ru_maxrss). Then, from token counts alone, padded tokens over real tokens of a chunked and
a whole-file length sort, at the CPU's and the GPU's batch defaults. Prints a table and the three goals (peak
memory from 10k to 100k rows +10% at most, rows/s at 100k within 10% of 10k, padding within 5% of the whole-file
sort); asserts nothing.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

import mlm_classifier as core  # noqa: E402
from sources import TOKENIZER, TOKENIZER_HELP, ag_news_test, load_tokenizer  # noqa: E402

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
PATHS = {"stream": "stream (classify.py)", "whole": "whole file (before)"}


def write_input(texts, n, path):
    """`n` rows, the texts cycled, as the file format `path` names (a column `text`)."""
    rows = [texts[i % len(texts)] for i in range(n)]
    if path.endswith(".parquet"):
        import pyarrow
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.table({"text": rows}), path)  # pyarrow's default row groups
    elif path.endswith(".csv"):
        import pandas

        pandas.DataFrame({"text": rows}).to_csv(path, index=False)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in rows)


def child(args):
    """One path over one input in this process: prints {rows_per_s, peak_rss_mib, seconds, load_seconds}."""
    import torch

    import classify

    if args.threads:
        torch.set_num_threads(args.threads)

    loading = {"seconds": 0.0}
    load = classify.load_masked_lm

    def timed_load(*a, **k):
        start = time.perf_counter()
        model = load(*a, **k)
        loading["seconds"] += time.perf_counter() - start
        return model

    flags = ["--model", args.model, "--labels", ",".join(LABELS), "--input", args.input, "--output", args.output,
             "--device", args.device, "--permutations", str(args.permutations), "--no_progress"]
    start = time.perf_counter()
    if args.child == "stream":
        classify.load_masked_lm = timed_load
        classify.main(flags + ["--chunk_rows", str(args.chunk_rows)])
    else:  # classify.py's whole-file path, as it was before it streamed
        device = core.resolve_device(args.device)
        dtype = core.resolve_dtype("auto", device)
        spec = core.load_spec(args.model, LABELS)
        tokenizer = core.load_tokenizer(args.model)
        model = timed_load(args.model, dtype, core.resolve_attn_implementation("auto", device, dtype), device)
        rows = core.take_columns(core.read_table(args.input, "--input"), args.input, "text")
        clf = core.MLMClassifier(spec, tokenizer, model, args.permutations)
        records = [core.prediction_record(row, text, spec.labels, probs)
                   for row, text, probs in zip(rows.rows, rows.texts, clf.probabilities(rows.texts))]
        core.write_atomic(args.output, core.records_to_jsonl(records))
    seconds = time.perf_counter() - start - loading["seconds"]
    with open(args.output, encoding="utf-8") as f:
        n = sum(1 for _ in f)
    result = {"rows": n, "seconds": seconds, "load_seconds": loading["seconds"], "rows_per_s": n / seconds,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available() and args.device != "cpu":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def padding(model_dir, tokenizer, texts, sizes, permutations, chunk_rows):
    """{size: {batches: (whole-file padded/real, chunked padded/real)}} for the CPU's and the GPU's batch defaults."""
    import torch

    spec = core.ClassifierSpec(model_dir, LABELS, core.ZERO_SHOT_PROMPT, None, 512, "zero-shot")
    encoder = core.MLMClassifier(spec, tokenizer, torch.nn.Linear(1, 1), permutations)  # encodes; scores nothing
    lengths = [len(ids) for ids in encoder.encode(texts)]  # view-major: view v of text t is at v * len(texts) + t
    views = len(encoder.plan.views)
    out = {}
    for n in sizes:
        def of(first, last):  # every view of rows first..last-1, cycled
            return [lengths[v * len(texts) + i % len(texts)] for v in range(views) for i in range(first, last)]

        ratios = {}
        for name, (batch_tokens, multiple) in (("CPU", (8192, 8)), ("GPU", (65536, 64))):
            def ratio(parts):
                padded = real = 0
                for part in parts:
                    for batch in core.length_sorted_batches(part, batch_tokens, multiple):
                        padded += len(batch) * core.padded_width(max(part[i] for i in batch), multiple)
                        real += sum(part[i] for i in batch)
                return padded / real
            whole = ratio([of(0, n)])
            chunked = ratio([of(first, min(first + chunk_rows, n)) for first in range(0, n, chunk_rows)])
            ratios[f"{name} ({batch_tokens} tokens, x{multiple})"] = (whole, chunked)
        out[n] = ratios
    return out


def main(argv=None):
    p = core.make_parser(__doc__)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--shape", default=None, choices=["tiny", "large"], help="default: large on a GPU, tiny on the CPU")
    p.add_argument("--sizes", default="1000,10000,100000", help="rows of each input, comma-separated")
    p.add_argument("--paths", default="stream,whole", help="stream, whole or both")
    p.add_argument("--format", default="parquet", choices=["parquet", "csv", "jsonl"], help="the input's format")
    p.add_argument("--chunk_rows", type=int, default=10000, help="classify.py's --chunk_rows")
    p.add_argument("--permutations", type=int, default=1, help="classify.py's --permutations")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of each path and size: the best rows/s and the highest peak memory are shown")
    p.add_argument("--threads", type=int, default=None,
                   help="torch's CPU threads in each run (default: torch's own; 1 on a CPU that other work shares: "
                        "spinning threads then cost more than they gain)")
    p.add_argument("--data_dir", default=None,
                   help="a folder with a local copy of AG News' original ag_news/test.csv and classes.txt "
                        "(default: the hub's SetFit/ag_news)")
    p.add_argument("--tokenizer", default=TOKENIZER, help=TOKENIZER_HELP)
    p.add_argument("--work_dir", default=None, help="where the inputs, outputs and model go (default: a temporary "
                                                    "folder, removed at the end)")
    for hidden in ("child", "model", "input", "output"):  # how the benchmark runs each path in a process of its own
        p.add_argument(f"--{hidden}", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    import platform

    import torch

    from eval_speed import random_modernbert

    sizes = [int(s) for s in args.sizes.split(",")]
    paths = args.paths.split(",")
    device = core.resolve_device(args.device)
    shape = args.shape or ("large" if device.type == "cuda" else "tiny")
    texts = ag_news_test(args.data_dir)[0]
    tokenizer = load_tokenizer(args.tokenizer)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        model_dir = os.path.join(work, "model")
        random_modernbert(shape, tokenizer).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"{platform.machine()} CPU, {os.cpu_count()} cores")
        print(f"{machine}; ModernBERT {shape} shape, random weights; AG News test texts cycled; {args.format} input; "
              f"--chunk_rows {args.chunk_rows}, --permutations {args.permutations}"
              + (f", {args.threads} torch thread(s)" if args.threads else "")
              + (f", best of {args.repeat} runs" if args.repeat > 1 else ""))
        print(f"{'rows':>10}  {'path':<22}{'rows/s':>10}{'peak RSS':>12}{'model load':>12}")
        results = {}
        for n in sizes:
            source = os.path.join(work, f"in-{n}.{args.format}")
            write_input(texts, n, source)
            for path in paths:
                output = os.path.join(work, f"out-{n}-{path}.jsonl")
                command = [sys.executable, os.path.abspath(__file__), "--child", path, "--model", model_dir, "--input",
                           source, "--output", output, "--device", str(device), "--chunk_rows", str(args.chunk_rows),
                           "--permutations", str(args.permutations)] + (["--threads", str(args.threads)]
                                                                       if args.threads else [])
                runs = []
                for _ in range(args.repeat):
                    done = subprocess.run(command, capture_output=True, text=True)
                    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                    if done.returncode or not lines:
                        sys.exit(f"error: {path} at {n} rows failed:\n{done.stderr[-3000:]}")
                    runs.append(json.loads(lines[0][len("RESULT "):]))
                result = results[n, path] = max(runs, key=lambda r: r["rows_per_s"])
                for key in ("peak_rss_mib", "peak_gpu_mib"):
                    if key in result:
                        result[key] = max(r[key] for r in runs)
                gpu = f", {result['peak_gpu_mib']:,.0f} MiB GPU" if "peak_gpu_mib" in result else ""
                print(f"{n:>10,}  {PATHS[path]:<22}{result['rows_per_s']:>10,.0f}{result['peak_rss_mib']:>8,.0f} MiB"
                      f"{result['load_seconds']:>10.1f} s{gpu}", flush=True)
                os.remove(output)
            os.remove(source)
        ratios = padding(model_dir, tokenizer, texts, sizes, args.permutations, args.chunk_rows)
    print("padded tokens / real tokens, whole-file sort -> --chunk_rows chunks:")
    for n in sizes:
        shown = "; ".join(f"{name} {whole:.4f} -> {chunked:.4f} ({(chunked / whole - 1) * 100:+.2f}%)"
                          for name, (whole, chunked) in ratios[n].items())
        print(f"{n:>10,}  {shown}")
    if "stream" in paths and 10000 in sizes and 100000 in sizes:
        small, big = results[10000, "stream"], results[100000, "stream"]
        rss = (big["peak_rss_mib"] / small["peak_rss_mib"] - 1) * 100
        rate = (big["rows_per_s"] / small["rows_per_s"] - 1) * 100
        worst = max(abs(chunked / whole - 1) * 100 for whole, chunked in ratios[100000].values())
        print(f"goals, streaming: peak RSS 10k -> 100k rows {rss:+.1f}% (at most +10%); rows/s at 100k vs 10k "
              f"{rate:+.1f}% (within 10%); padding of chunks vs the whole-file sort at 100k, worst {worst:.2f}% "
              "(within 5%)")


if __name__ == "__main__":
    core.run_command(main)
