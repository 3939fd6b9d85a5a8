"""Offline fixtures: tiny masked LMs with random weights and tokenizers trained on the spot.

The ModernBERT tokenizer copies what matters of ModernBERT's: byte-level BPE without a prefix space, the
special tokens [UNK] [CLS] [SEP] [PAD], [MASK] with lstrip=True (so `[unused0] [MASK]` eats the space),
[unused0]..., and `[CLS] text [SEP]` around every input. The model has one global layer and two
sliding-window layers with a window small enough that test prompts cross it.

The BERT tokenizer copies bert-base-uncased's: WordPiece, lowercased, with [PAD] [unused0] [unused1] [UNK]
[CLS] [SEP] [MASK] as vocabulary entries, only the five named ones registered as special, so that the text
`[unused0]` splits into pieces until mlm_classifier.load_tokenizer registers it. The RoBERTa tokenizer copies
roberta-base's: byte-level BPE, <s> <pad> </s> <unk>, <mask> with lstrip=True, `<s> text </s>`, and
[unused0] added as a special token.
"""

import csv
import json
import os
import random
import string
import sys

import pytest

# No test may reach a hub: offline, a hub name fails at once instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Under pytest-xdist (`-n 2`) the workers share the cores: one thread each, here and in the commands the tests
# start, since spinning threads that wait for a busy core cost far more than they gain.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

LABEL_WORDS = ["World", "Sports", "Business", "Science", "red", "green", "blue", "yellow"]
WORDS = ("the a of to and in is was for on that with as by at from this which an be are it or "
         "question answer choice option model river city number value energy market team game law "
         "cell plant force system history theory price water light people state first second").split()


def corpus(seed=0):
    """Text in which the letters, ` A`..` T` and the label words are frequent enough to become tokens."""
    rng = random.Random(seed)
    lines = []
    for _ in range(3000):
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        letter = rng.choice("ABCDEFGHIJKLMNOPQRST")
        label = rng.choice(LABEL_WORDS)
        lines.append(f"QUESTION:\n{sentence.capitalize()}?\nCHOICES:\n- {letter}: {sentence}\n"
                     f"ANSWER:\nAnswer: {letter} {label} {letter}{letter} {label.lower()}")
    return lines


def build_tokenizer(path, extra_lines=(), vocab_size=700, model_max_length=512):
    """Train a byte-level BPE (700 entries unless asked) with ModernBERT's special tokens, on the test corpus and
    `extra_lines`, and save it to `path`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus() + list(extra_lines), trainer)
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, normalized=False)]
                           + [AddedToken(f"[unused{i}]", normalized=False) for i in range(4)])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]", model_max_length=model_max_length)
    fast.save_pretrained(path)
    return fast


def save_tiny_model(path, model_class, config, tokenizer, seed):
    """`model_class(config)` with random weights, saved with its tokenizer to `path`. The weights come from a NumPy
    generator seeded with `seed` (matrices normal with the config's initializer_range, cut at two deviations; biases
    0, norms 1), so that they are the same under every torch and transformers version, whose own inits differ."""
    import numpy
    import torch

    model = model_class(config)
    rng, std = numpy.random.default_rng(seed), config.initializer_range
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2:
                drawn = numpy.clip(rng.normal(0.0, std, tuple(parameter.shape)), -2 * std, 2 * std)
                parameter.copy_(torch.from_numpy(drawn))
            else:
                parameter.fill_(0.0 if name.endswith("bias") else 1.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def build_tiny_modernbert(path, tokenizer, seed=0, **overrides):
    """A 3-layer ModernBERT (hidden 32) with random weights, saved with its tokenizer to `path`; `overrides`
    change the config."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                 max_position_embeddings=512, local_attention=16)
    config = ModernBertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id, **{**shape, **overrides})
    return save_tiny_model(path, ModernBertForMaskedLM, config, tokenizer, seed)


def build_bert_tokenizer(path, anchor=True):
    """Train an uncased WordPiece vocabulary as bert-base-uncased's and save it to `path`: [unused0] is an
    ordinary entry (id 1, as in BERT), absent with `anchor=False`, and never registered as special."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    from mlm_classifier import mmlu, prompts

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocabulary_entries = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if not anchor:
        vocabulary_entries.remove("[unused0]")
    mmlu_template = mmlu.build_prompt("question", ["a", "b", "c", "d"])
    templates = [t.replace("[unused0]", "") for t in (prompts.ZERO_SHOT_PROMPT, mmlu_template, PROMPT)]
    lines = corpus() + templates * 50 + [" ".join(string.ascii_lowercase)] * 50  # every letter a word of its own
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=600, special_tokens=vocabulary_entries,
                                                             show_progress=False))
    bert = BertTokenizer(vocab=tok.get_vocab(), do_lower_case=True, model_max_length=512)
    bert.save_pretrained(path)
    return bert


def build_roberta_tokenizer(path):
    """Train a 700-entry byte-level BPE with RoBERTa's special tokens, [unused0] added as special; save to `path`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False),
                            AddedToken("[unused0]", normalized=False)])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")),
                                                      trim_offsets=True, add_prefix_space=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=512)
    fast.save_pretrained(path)
    return fast


# BERT's and RoBERTa's tiny shape. No dropout, as in ModernBERT's defaults: with 0.1 some seeds stall at 3 of
# the colour task's 4 classes.
TINY_ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def build_tiny_bert(path, tokenizer, seed=0):
    """A 2-layer BertForMaskedLM (hidden 32) with random weights, saved with its tokenizer to `path`."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                        **TINY_ENCODER)
    return save_tiny_model(path, BertForMaskedLM, config, tokenizer, seed)


def build_tiny_roberta(path, tokenizer, seed=0):
    """A 2-layer RobertaForMaskedLM (hidden 32) with random weights, saved with its tokenizer to `path`.

    RoBERTa numbers positions from pad_token_id + 1, hence 2 more position embeddings than tokens."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=514, type_vocab_size=1,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                           eos_token_id=tokenizer.sep_token_id, **TINY_ENCODER)
    return save_tiny_model(path, RobertaForMaskedLM, config, tokenizer, seed)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """Path of a saved tiny uncased BERT whose [unused0] is an unregistered vocabulary entry; read it, never write."""
    path = str(tmp_path_factory.mktemp("tiny-bert"))
    build_tiny_bert(path, build_bert_tokenizer(path))
    return path


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory):
    """Path of a saved tiny RoBERTa-style model and tokenizer; read it, never write to it."""
    path = str(tmp_path_factory.mktemp("tiny-roberta"))
    build_tiny_roberta(path, build_roberta_tokenizer(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Path of a saved tiny ModernBERT + tokenizer; read it, never write to it."""
    path = str(tmp_path_factory.mktemp("tiny-modernbert"))
    build_tiny_modernbert(path, build_tokenizer(path))
    return path


def write_mmlu_csv(path, rows):
    """Write headerless MMLU rows (question, A, B, C, D, answer) with minimal quoting, as the originals."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def make_mmlu_dir(root, subjects=("astronomy", "virology", "formal_logic"), per_subject=7, seed=0):
    """A small MMLU folder in the original layout (root/test/<subject>_test.csv); returns root."""
    rng = random.Random(seed)
    for subject in subjects:
        rows = []
        for i in range(per_subject):
            question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))
            if i == 1:
                question = f"{question},\nwith a comma and a second line"  # a record spanning two lines
            choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(4)]
            rows.append([question.capitalize() + "?", *choices, rng.choice("ABCD")])
        write_mmlu_csv(os.path.join(root, "test", f"{subject}_test.csv"), rows)
    return str(root)


# -----------------------------------------------------------------------------
# The colour task: the label is the colour word in the text, learnable from scratch in seconds


COLORS = ["red", "green", "blue", "yellow"]
LABEL_MAP = {c.upper(): c for c in COLORS}  # raw label RED -> verbalizer `red`, one token ` red` after [unused0]
PROMPT = "Text: {text}\nAnswer: [unused0] {label}\n"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def color_rows(n, seed, long_every=0):
    """Rows whose label is the colour word in the text (learnable from scratch); every `long_every`-th is long."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        color = rng.choice(COLORS)
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 10))]
        words.insert(rng.randint(0, len(words)), color)
        if long_every and i % long_every == 0:
            words = [color] + [rng.choice(WORDS) for _ in range(80)]  # cut to fit; the colour comes first
        rows.append({"text": " ".join(words), "label_text": color.upper()})
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """The colour task's files: train and predict (each with a few long rows), validation, test, label map, prompt."""
    d = tmp_path_factory.mktemp("data")
    return {
        "train": write_csv(d / "train.csv", color_rows(600, 1, long_every=100)),
        "validation": write_csv(d / "validation.csv", color_rows(80, 2)),
        "test": write_csv(d / "test.csv", color_rows(80, 3)),
        "predict": write(d / "predict.jsonl", "".join(json.dumps({"text": r["text"], "uid": f"u{i}"}) + "\n"
                                                      for i, r in enumerate(color_rows(20, 4, long_every=5)))),
        "label_map": write(d / "labels.json", json.dumps(LABEL_MAP)),
        "prompt": write(d / "prompt.txt", PROMPT),
        "dir": d,
    }


def base_args(tiny_model_dir, files, output_dir, *extra):
    return ["--model", tiny_model_dir, "--train_file", files["train"], "--label_map", files["label_map"],
            "--prompt_file", files["prompt"], "--output_dir", str(output_dir), "--max_length", "48",
            "--learning_rate", "1e-2", "--warmup_ratio", "0.1", "--per_device_train_batch_size", "16",
            "--logging_steps", "10",
            *extra]  # warm-up: at 1e-2 without it, some random inits stall at 3 of 4 classes


@pytest.fixture(scope="session")
def trained(tiny_model_dir, files):
    """A tiny ModernBERT trained on the colour task by train.py: (its folder, its metrics)."""
    import train

    output_dir = files["dir"] / "run"
    metrics = train.main(base_args(
        tiny_model_dir, files, output_dir, "--validation_file", files["validation"], "--test_file", files["test"],
        "--predict_file", files["predict"], "--num_train_epochs", "4", "--eval_steps", "25"))
    return str(output_dir), metrics


