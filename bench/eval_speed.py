"""Benchmark: eval.py's batched path against the published one-question-at-a-time loop.

    python bench/eval_speed.py                         # ModernBERT-Large shape, random weights, all MMLU test
    python bench/eval_speed.py --device cpu --shape tiny --limit 300 --baseline_sample 100   # smoke test
    python bench/eval_speed.py --data_dir ~/mmlu --tokenizer ~/modernbert-tokenizer        # from local copies

Prints questions/s of both, the speedup, and how often their predictions agree. The baseline is the
published eval.py's method (one prompt per forward pass, float32, logits over the whole vocabulary
at every position); it is timed on a seeded sample and extrapolated. Our path is timed from the
question texts in memory to results.json and predictions.jsonl written. Nothing is asserted.

The questions are MMLU's test split from the hub (cais/mmlu, as eval.py reads it), or with --data_dir from
a local copy of the original CSV folder; the tokenizer is ModernBERT-Large-Instruct's from the hub, or a
local folder given by --tokenizer.
"""

import os
import random
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import eval as mc  # noqa: E402  (eval.py, imported under a name that does not shadow the builtin)
import mlm_classifier as core  # noqa: E402
from mlm_classifier.reference import published_predict  # noqa: E402
from sources import TOKENIZER, TOKENIZER_HELP, load_tokenizer  # noqa: E402

# ModernBERT-Large: 28 layers, hidden 1024, 16 heads, GLU intermediate 2624, global attention every 3rd
# layer, a 128-token local window elsewhere.
SHAPES = {
    "large": dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, intermediate_size=2624),
    "tiny": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, intermediate_size=128),
}


def random_modernbert(shape, tokenizer, seed=0):
    """A ModernBERT of the given shape with seeded random weights, sized for `tokenizer`."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(seed)
    config = ModernBertConfig(vocab_size=50368 if len(tokenizer) <= 50368 else len(tokenizer),
                              global_attn_every_n_layers=3, local_attention=128,
                              pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                              sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                              eos_token_id=tokenizer.sep_token_id, **SHAPES[shape])
    return ModernBertForMaskedLM(config)


def run_ours(model, tokenizer, questions, batch_tokens, pad_to_multiple_of, output_dir):
    """eval.py's path from question texts to written files; returns (seconds, records)."""
    start = time.perf_counter()
    sequences, views, _ = mc.encode_questions(tokenizer, questions)
    option_ids = core.letter_token_ids(tokenizer, "ABCD")
    scores = core.score_sequences(model, sequences, tokenizer.mask_token_id, tokenizer.pad_token_id, option_ids,
                                  batch_tokens, pad_to_multiple_of)
    results, records = mc.results_and_records(questions, scores, views, "mmlu")
    mc.write_outputs(output_dir, results, records)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, records


def main():
    p = core.make_parser(__doc__)
    p.add_argument("--model", default=None,
                   help="a real model, hub name or folder, with its tokenizer (default: random weights of --shape)")
    p.add_argument("--shape", default="large", choices=sorted(SHAPES))
    p.add_argument("--tokenizer", default=TOKENIZER, help=TOKENIZER_HELP)
    p.add_argument("--data_dir", default=None,
                   help="a local copy of MMLU's original CSV folder (default: the hub's cais/mmlu, config all)")
    p.add_argument("--limit", type=int, default=None, help="first N questions (default: all 14,042)")
    p.add_argument("--baseline_sample", type=int, default=1000, help="questions timed for the baseline")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--attn_implementation", default="auto")
    p.add_argument("--batch_tokens", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    device = core.resolve_device(args.device, 0)
    dtype = core.resolve_dtype(args.dtype, device)
    attn = core.resolve_attn_implementation(args.attn_implementation, device, dtype)
    on_gpu = device.type == "cuda"
    batch_tokens, pad_to_multiple_of = core.batch_defaults(device, args.batch_tokens)

    questions = mc.load_questions("mmlu", args.data_dir, "test", [], args.limit)
    if args.model:
        tokenizer = core.load_pretrained(AutoTokenizer, args.model)
        reference = core.load_pretrained(AutoModelForMaskedLM, args.model, dtype=torch.float32,
                                         attn_implementation="sdpa")
    else:
        tokenizer = load_tokenizer(args.tokenizer)
        reference = random_modernbert(args.shape, tokenizer, args.seed)
    reference = reference.to(device).eval()
    n_tokens = sum(len(ids) for ids in mc.encode_questions(tokenizer, questions)[0])
    print(f"{len(questions)} questions, {n_tokens / 1e6:.2f} M tokens (mean {n_tokens / len(questions):.0f}), "
          f"{sum(p.numel() for p in reference.parameters()) / 1e6:.0f} M parameters, {device}")

    # The published loop, float32, on a seeded sample.
    sample = sorted(random.Random(args.seed).sample(range(len(questions)), min(args.baseline_sample, len(questions))))
    prompts = [mc.build_prompt(questions[i]["question"], questions[i]["choices"]) for i in sample]
    published_predict(reference, tokenizer, prompts[0])  # warm-up
    start = time.perf_counter()
    baseline = [published_predict(reference, tokenizer, prompt) for prompt in prompts]
    if on_gpu:
        torch.cuda.synchronize()
    baseline_qps = len(sample) / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        # Ours in float32 on the same sample: the predictions must be the published ones.
        _, records32 = run_ours(reference, tokenizer, [questions[i] for i in sample], batch_tokens,
                                pad_to_multiple_of, tmp)
        agree32 = sum(r["pred"] == b for r, b in zip(records32, baseline))

        # Ours at the run's dtype and attention, on every question; a short warm-up first.
        model = reference.to(dtype)
        model.config._attn_implementation = attn
        run_ours(model, tokenizer, questions[:64], batch_tokens, pad_to_multiple_of, tmp)
        seconds, records = run_ours(model, tokenizer, questions, batch_tokens, pad_to_multiple_of, tmp)
        agree = sum(records[i]["pred"] == b for i, b in zip(sample, baseline))

    ours_qps = len(questions) / seconds
    if on_gpu:
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"GPU: {torch.cuda.get_device_name(device)}, peak memory {peak:.1f} GiB")
    print(f"{'':<34}{'questions/s':>12}{'all questions (s)':>19}")
    print(f"{'published loop (float32)':<34}{baseline_qps:>12.1f}{len(questions) / baseline_qps:>19.1f}"
          f"   timed on {len(sample)}, extrapolated")
    print(f"{'eval.py (' + str(dtype).removeprefix('torch.') + ', ' + attn + ')':<34}{ours_qps:>12.1f}{seconds:>19.1f}")
    print(f"speedup {ours_qps / baseline_qps:.1f}x; predictions equal to the published loop's: "
          f"float32 {agree32}/{len(sample)}, {str(dtype).removeprefix('torch.')} {agree}/{len(sample)}")


if __name__ == "__main__":
    core.run_command(main)
