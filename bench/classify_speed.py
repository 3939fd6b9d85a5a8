"""Benchmark: classify.py's path against transformers' zero-shot pipelines, at 4 and at 20 labels, single- and
multi-label.

    python bench/classify_speed.py                      # GPU: ModernBERT-Large shape, random weights
    python bench/classify_speed.py --device cpu --tiny  # smoke test, about a minute
    python bench/classify_speed.py --data_dir ~/data --tokenizer ~/modernbert-tokenizer   # from local copies

Three ways to label the same real texts (AG News test rows) zero-shot:
- NLI pipeline: transformers' `zero-shot-classification` on a sequence-classification model with an
  entailment / neutral / contradiction head, which runs one forward pass per (text, label) pair;
- fill-mask loop: transformers' `fill-mask` pipeline, one prompt at a time, the labels' letters as targets;
- ours: `MLMClassifier` (what classify.py runs): one forward pass per text, batched by length under a
  token budget, the MLM head only at [MASK].
Multi-label, both sides pay one pass per (text, label): the NLI pipeline with `multi_label=True` against ours
with `multi_label=True` (a yes/no question per label, the pairs batched by length together).
All three use the same backbone shape with random weights and ModernBERT-Large-Instruct's tokenizer, so
figures compare from one run to the next; with random weights the labels themselves mean nothing, only the
time does. Prints texts/s of each; asserts nothing.

The texts come from the hub's SetFit/ag_news, or with --data_dir from a local copy of the original files
(DIR/ag_news/test.csv and classes.txt); the tokenizer from the hub, or a local folder given by --tokenizer.
"""

import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import mlm_classifier as core  # noqa: E402
from sources import TOKENIZER, TOKENIZER_HELP, ag_news_test, load_tokenizer  # noqa: E402

LARGE = dict(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16,
             global_attn_every_n_layers=3, local_attention=128)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            global_attn_every_n_layers=3, local_attention=32)
NEWSGROUPS = ["atheism", "graphics", "windows", "pc hardware", "mac hardware", "x window", "for sale", "autos",
              "motorcycles", "baseball", "hockey", "cryptography", "electronics", "medicine", "space", "christianity",
              "guns", "middle east", "politics", "religion"]
LABEL_SETS = {4: ["World", "Sports", "Business", "Sci/Tech"], 20: NEWSGROUPS}
NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}


def random_models(tokenizer, shape, device, dtype):
    """A masked LM and a 3-way NLI sequence classifier of the same ModernBERT shape, random weights."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM, ModernBertForSequenceClassification

    config = ModernBertConfig(vocab_size=len(tokenizer), max_position_embeddings=8192,
                              pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                              sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                              eos_token_id=tokenizer.sep_token_id, num_labels=3, id2label=NLI_LABELS,
                              label2id={v: k for k, v in NLI_LABELS.items()}, **shape)
    torch.manual_seed(0)
    masked_lm = ModernBertForMaskedLM(config).to(device, dtype).eval()
    nli = ModernBertForSequenceClassification(config).to(device, dtype).eval()
    return masked_lm, nli


def timed(function, device):
    """(seconds, result) of one call, the GPU synchronised."""
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def main(argv=None):
    p = core.make_parser(__doc__)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny model (smoke test)")
    p.add_argument("--texts", type=int, default=None, help="texts for ours (default 2000, tiny 400)")
    p.add_argument("--baseline_texts", type=int, default=None,
                   help="texts timed for each pipeline, extrapolated (default 200, tiny 50)")
    p.add_argument("--pipeline_batch_size", type=int, default=32, help="batch size of the NLI pipeline's pairs")
    p.add_argument("--data_dir", default=None,
                   help="a folder with a local copy of AG News' original ag_news/test.csv and classes.txt "
                        "(default: the hub's SetFit/ag_news)")
    p.add_argument("--tokenizer", default=TOKENIZER, help=TOKENIZER_HELP)
    args = p.parse_args(argv)

    from transformers import pipeline
    from transformers.utils import logging

    logging.set_verbosity_error()  # the pipelines' advice on batching would interleave with the table
    device = core.resolve_device(args.device)
    dtype = core.resolve_dtype("auto", device)
    n_texts = args.texts or (400 if args.tiny else 2000)
    n_baseline = args.baseline_texts or (50 if args.tiny else 200)
    texts = ag_news_test(args.data_dir)[0][:n_texts]
    tokenizer = load_tokenizer(args.tokenizer)
    masked_lm, nli = random_models(tokenizer, TINY if args.tiny else LARGE, device, dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{name}; {'tiny' if args.tiny else 'ModernBERT-Large'} shape, random weights, "
          f"{str(dtype).removeprefix('torch.')}; {len(texts)} AG News texts for ours, {n_baseline} for each pipeline")
    print(f"{'labels':>6}  {'path':<50}{'texts/s':>10}{'vs NLI':>9}")

    nli_pipe = pipeline("zero-shot-classification", model=nli, tokenizer=tokenizer, device=device)
    fill_pipe = pipeline("fill-mask", model=masked_lm, tokenizer=tokenizer, device=device)
    speedups = {}
    for n_labels, labels in LABEL_SETS.items():
        spec = core.ClassifierSpec("random weights", labels, core.ZERO_SHOT_PROMPT, None, 512, "zero-shot")
        ours = core.MLMClassifier(spec, tokenizer, masked_lm)
        ours(texts[:16])  # warm-up
        seconds, _ = timed(lambda: ours.probabilities(texts), device)
        ours_rate = len(texts) / seconds

        sample = texts[:n_baseline]
        nli_pipe(sample[:2], candidate_labels=labels)  # warm-up
        seconds, _ = timed(lambda: nli_pipe(sample, candidate_labels=labels, batch_size=args.pipeline_batch_size),
                           device)
        nli_rate = len(sample) / seconds

        template = core.parse_prompt(core.ZERO_SHOT_PROMPT)
        label_map = dict(zip(labels, core.LETTERS))
        options = core.options_block(label_map)
        prompts = [core.fill_prompt(*template, text, tokenizer.mask_token, options)[0] for text in sample]
        targets = [tokenizer.convert_ids_to_tokens(core.single_token_id(tokenizer, " " + letter))
                   for letter in label_map.values()]  # ` A` as the vocabulary spells it: no warning, no lookup
        seconds, _ = timed(lambda: [fill_pipe(prompt, targets=targets, top_k=n_labels) for prompt in prompts], device)
        fill_rate = len(sample) / seconds

        # Multi-label: a pass per (text, label) on both sides, so ours gets fewer texts at more labels.
        multi_texts = texts[:max(n_baseline, len(texts) * 4 // n_labels)]
        spec = core.ClassifierSpec("random weights", labels, core.MULTI_LABEL_PROMPT, None, 512, "zero-shot",
                                   multi_label=True, threshold=core.THRESHOLD)
        ours_multi = core.MLMClassifier(spec, tokenizer, masked_lm)
        ours_multi(multi_texts[:4])  # warm-up
        seconds, _ = timed(lambda: ours_multi.probabilities(multi_texts), device)
        ours_multi_rate = len(multi_texts) / seconds
        seconds, _ = timed(lambda: nli_pipe(sample, candidate_labels=labels, multi_label=True,
                                            batch_size=args.pipeline_batch_size), device)
        nli_multi_rate = len(sample) / seconds

        speedups[n_labels] = (ours_rate / nli_rate, ours_multi_rate / nli_multi_rate)
        for path, rate, base in (
                (f"NLI pipeline (batch {args.pipeline_batch_size} pairs)", nli_rate, nli_rate),
                ("fill-mask pipeline, one text at a time", fill_rate, nli_rate),
                ("ours: MLMClassifier (classify.py)", ours_rate, nli_rate),
                ("multi-label: NLI pipeline, multi_label=True", nli_multi_rate, nli_multi_rate),
                ("multi-label: ours, multi_label=True", ours_multi_rate, nli_multi_rate)):
            print(f"{n_labels:>6}  {path:<50}{rate:>10.1f}{rate / base:>8.1f}x")
        print(f"{'':>6}  ours vs fill-mask loop: {ours_rate / fill_rate:.1f}x")
    print(f"speedup vs NLI pipeline: {speedups[4][0]:.1f}x at 4 labels, {speedups[20][0]:.1f}x at 20 labels; "
          f"multi-label {speedups[4][1]:.1f}x at 4 labels, {speedups[20][1]:.1f}x at 20 labels")


if __name__ == "__main__":
    core.run_command(main)
