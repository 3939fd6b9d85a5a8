"""Training speed of train.py's data path against the published one, on a ModernBERT-Large- or BERT-base-shaped model.

published: batches of a fixed size in random order, every example padded to --max_length, and the MLM head's
           logits at every position (the model's own forward and loss);
ours:      train.py's TokenBudgetBatchSampler (similar lengths together, at most 8 examples and as many padded
           tokens as a published batch), padded to the longest example rounded up to 64, and the head only at
           the labelled positions (labelled_loss, what ATPTrainer.compute_loss runs);
ours_full: ours with logits at every position (`--paths ...,ours_full`): against ours, the head's own share.

Both train with ATP on the same examples, built by train.py from real data: AG News' test split (max_length 512,
published batch 8) and 20 Newsgroups' train split (max_length 4096, batch 1, the published sweep's setting; 512
for BERT, whose positions end there). Random weights, and for ModernBERT ModernBERT-Large-Instruct's tokenizer;
for BERT an uncased WordPiece vocabulary of bert-base's size (30,522) trained here on the same data, with
[unused0] an unregistered vocabulary entry as in BERT's, so that figures compare from one run to the next.
Prints figures; asserts nothing.

The data come from the hub (SetFit/ag_news, SetFit/20_newsgroups), or with --data_dir from a folder with local
copies: ag_news/test.csv and classes.txt (the original files) and 20newsgroups/train.jsonl and test.jsonl (as
sweep_20newsgroups.py reads them); the tokenizer from the hub, or a local folder given by --tokenizer.

    python bench/train_speed.py                          # on the GPU: both shapes, bf16 autocast
    python bench/train_speed.py --device cpu --tiny      # a smoke run of about a minute
    python bench/train_speed.py --arch bert --device cpu --steps 5 --warmup 1   # BERT-base on the CPU
    python bench/train_speed.py --data_dir ~/data --tokenizer ~/modernbert-tokenizer   # from local copies
"""

import os
import random
import sys
import threading
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import sweep_20newsgroups as sweep  # noqa: E402
import train  # noqa: E402
from mlm_classifier import (encode_prompts, make_parser, options_block, parse_prompt, register_anchor,  # noqa: E402
                            resolve_attn_implementation, run_command)
from mlm_classifier import objectives  # noqa: E402
from mlm_classifier.scoring import labelled_loss  # noqa: E402
from mlm_classifier.trainer import TokenBudgetBatchSampler  # noqa: E402
from sources import TOKENIZER, TOKENIZER_HELP, ag_news_test, load_tokenizer  # noqa: E402

SHAPES = {  # (arch, tiny): config keyword arguments
    ("modernbert", False): dict(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16,
                                global_attn_every_n_layers=3, local_attention=128),
    ("modernbert", True): dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                               global_attn_every_n_layers=3, local_attention=32),
    ("bert", False): dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    ("bert", True): dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4),
}
BERT_POSITIONS = 512


def newsgroups_train(data_dir=None):
    """(texts, labels) of 20 Newsgroups' train split, read by the sweep: DIR/20newsgroups/*.jsonl, else the hub's."""
    rows = sweep.load_newsgroups(data_dir and os.path.join(data_dir, "20newsgroups"), strip_headers=False)[0]
    return [r["text"] for r in rows], [r["label_text"] for r in rows]


def bert_tokenizer(texts, vocab_size=30522):
    """An uncased WordPiece tokenizer of bert-base-uncased's size, trained on `texts` (AG News' and 20 Newsgroups').

    [unused0] is an ordinary vocabulary entry, as in BERT's; train.py's load_tokenizer registers it (here too).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False))
    tokenizer = BertTokenizer(vocab=tok.get_vocab(), do_lower_case=True, model_max_length=BERT_POSITIONS)
    register_anchor(tokenizer, "the bench's WordPiece tokenizer")
    return tokenizer


def model_config(arch, tiny, tokenizer):
    """A ModernBERT or BERT config of the bench's shape, its vocabulary the tokenizer's."""
    from transformers import BertConfig, ModernBertConfig

    shape = SHAPES[(arch, tiny)]
    if arch == "bert":
        return BertConfig(vocab_size=len(tokenizer), max_position_embeddings=BERT_POSITIONS,
                          pad_token_id=tokenizer.pad_token_id, **shape)
    return ModernBertConfig(vocab_size=len(tokenizer), max_position_embeddings=8192,
                            pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                            sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                            eos_token_id=tokenizer.sep_token_id, **shape)


def build_examples(tokenizer, texts, labels, prompt, label_map, max_length, n, seed=0):
    """`n` seeded rows encoded by train.py: [{"input_ids", "answer_position"}], and how many were cut."""
    picked = random.Random(seed).sample(range(len(texts)), min(n, len(texts)))
    before, after = parse_prompt(prompt)
    sequences, positions, n_cut = encode_prompts(
        tokenizer, before, after, [texts[i].strip() for i in picked], [label_map[labels[i]] for i in picked],
        options_block(label_map), max_length)
    return [{"input_ids": s, "answer_position": p} for s, p in zip(sequences, positions)], n_cut


class PeakMemory:
    """Peak memory over a block: allocated GPU memory, or on the CPU the process's RSS sampled every 5 ms."""

    def __init__(self, device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def _sample(self, process):
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            import psutil

            self._thread = threading.Thread(target=self._sample, args=(psutil.Process(),), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()

    def label(self):
        return f"{self.peak / 2**30:.2f} GiB" + ("" if self.device.type == "cuda" else " RSS")


def run_path(config, batches, collate, head_at_labels, device, attn_implementation, warmup, steps):
    """Train a fresh model on `batches` (lists of examples); the head at labelled rows only, or everywhere.

    Returns examples/s, real (non-pad) tokens/s, padded tokens/s and peak memory over the warm-up and timed steps.
    """
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config, attn_implementation=attn_implementation).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(batch):
        inputs = {k: v.to(device, non_blocking=True) for k, v in collate(batch).items()}
        with autocast:
            if head_at_labels:
                loss = labelled_loss(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
            else:
                loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return inputs["attention_mask"]

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with PeakMemory(device) as memory:
        for batch in batches[:warmup]:
            step(batch)
        synchronize()
        start, examples, real, padded = time.perf_counter(), 0, 0, 0
        for batch in batches[warmup:warmup + steps]:
            attention_mask = step(batch)
            examples += len(batch)
            real += int(attention_mask.sum())
            padded += attention_mask.numel()
        synchronize()
        seconds = time.perf_counter() - start
    return examples / seconds, real / seconds, padded / seconds, memory.label()


def main(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--arch", default="modernbert", choices=["modernbert", "bert"],
                   help="ModernBERT-Large's shape, or BERT-base's (12 layers, hidden 768, vocabulary 30,522)")
    p.add_argument("--tiny", action="store_true", help="a tiny model, short sequences and few steps (smoke run)")
    p.add_argument("--shapes", default="ag_news,20newsgroups")
    p.add_argument("--paths", default="published,ours", help="comma list of published, ours, ours_full")
    p.add_argument("--steps", type=int, default=None, help="timed steps per path (default 30, tiny 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5, tiny 1)")
    p.add_argument("--max_examples", type=int, default=8, help="ours: at most this many examples per batch")
    p.add_argument("--max_tokens", type=int, default=None,
                   help="ours: padded tokens per batch (default: as many as a published batch)")
    p.add_argument("--rows", type=int, default=2000, help="rows drawn from each data set")
    p.add_argument("--data_dir", default=None,
                   help="a folder with local copies of ag_news/ (test.csv, classes.txt) and 20newsgroups/ "
                        "(train.jsonl, test.jsonl) (default: the hub's SetFit/ag_news and SetFit/20_newsgroups)")
    p.add_argument("--tokenizer", default=TOKENIZER, help=f"ModernBERT's tokenizer, a {TOKENIZER_HELP}; BERT's is "
                                                          "trained on the data")
    args = p.parse_args(argv)

    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (3 if args.tiny else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    loaders = {"ag_news": ag_news_test, "20newsgroups": newsgroups_train}  # BERT's tokenizer is trained on both
    data = {name: loaders[name](args.data_dir) for name in (loaders if args.arch == "bert" else args.shapes.split(","))}
    if args.arch == "bert":
        start = time.perf_counter()
        tokenizer = bert_tokenizer(data["ag_news"][0] + data["20newsgroups"][0])
        described = f"WordPiece {len(tokenizer)} trained in {time.perf_counter() - start:.0f} s"
    else:
        tokenizer, described = load_tokenizer(args.tokenizer), args.tokenizer
    config = model_config(args.arch, args.tiny, tokenizer)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    attn_implementation = resolve_attn_implementation("auto", device, dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    shape_name = "tiny" if args.tiny else {"modernbert": "ModernBERT-Large", "bert": "BERT-base"}[args.arch]
    print(f"{name}; {shape_name} shape ({args.arch}), random weights; tokenizer: {described}; {attn_implementation}; "
          f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}; {warmup} warm-up + {steps} timed steps per path")

    def max_length(length):
        return min(length, BERT_POSITIONS) if args.arch == "bert" else length

    shapes = {  # name: (prompt, label map, max_length (tiny), published batch size)
        "ag_news": (train.PUBLISHED_PROMPT, train.PUBLISHED_LABEL_MAP, max_length(256 if args.tiny else 512), 8),
        "20newsgroups": (sweep.PROMPT, sweep.LABEL_MAP, max_length(1024 if args.tiny else 4096), 1),
    }
    print(f"{'shape':<26}{'path':<11}{'batches':<26}{'examples/s':>11}{'real tok/s':>12}{'padded tok/s':>14}"
          f"{'peak memory':>16}")
    for shape in args.shapes.split(","):
        prompt, label_map, length, batch_size = shapes[shape]
        texts, labels = data[shape]
        examples, n_cut = build_examples(tokenizer, texts, labels, prompt, label_map, length, args.rows)
        lengths = [len(e["input_ids"]) for e in examples]
        special = frozenset(tokenizer.all_special_ids)

        order = list(range(len(examples)))
        random.Random(0).shuffle(order)
        published = [[examples[i] for i in order[k:k + batch_size]] for k in range(0, len(order), batch_size)]
        max_tokens = args.max_tokens or batch_size * length
        sampler = TokenBudgetBatchSampler(lengths, args.max_examples, max_tokens, 64, seed=0)
        ours = [[examples[i] for i in batch] for batch in sampler]
        label = f"{shape} (max {length})"
        print(f"{label:<26}{'':<11}{len(examples)} examples, mean {sum(lengths) / len(lengths):.0f} tokens, "
              f"{n_cut} cut")
        paths = {  # name: (batches, pad to, head only at labelled rows, batches described)
            "published": (published, length, False, f"{batch_size} x {length}"),
            "ours": (ours, 64, True, f"<= {args.max_examples}, <= {max_tokens} tokens"),
            "ours_full": (ours, 64, False, "as ours, logits everywhere"),
        }
        for path in args.paths.split(","):
            batches, pad, head_at_labels, batches_described = paths[path]
            collate = objectives.ObjectiveCollator(tokenizer.mask_token_id, tokenizer.pad_token_id, special,
                                              pad_to_multiple_of=pad)
            rate, real, padded, peak = run_path(config, batches, collate, head_at_labels, device, attn_implementation,
                                                warmup, steps)
            print(f"{label:<26}{path:<11}{batches_described:<26}{rate:>11.2f}{real:>12.0f}{padded:>14.0f}{peak:>16}")


if __name__ == "__main__":
    run_command(main)
