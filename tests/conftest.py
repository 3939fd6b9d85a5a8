"""Offline fixtures: a tiny ModernBERT with random weights and a tokenizer trained on the spot.

The tokenizer copies what matters of ModernBERT's: byte-level BPE without a prefix space, the special
tokens [UNK] [CLS] [SEP] [PAD], [MASK] with lstrip=True (so `[unused0] [MASK]` eats the space),
[unused0]..., and `[CLS] text [SEP]` around every input. The model has one global layer and two
sliding-window layers with a window small enough that test prompts cross it.
"""

import csv
import os
import random
import sys

import pytest

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


def build_tokenizer(path):
    """Train a 700-entry byte-level BPE with ModernBERT's special tokens and save it to `path`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, normalized=False)]
                           + [AddedToken(f"[unused{i}]", normalized=False) for i in range(4)])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]", model_max_length=512)
    fast.save_pretrained(path)
    return fast


def build_tiny_modernbert(path, tokenizer, seed=0, **overrides):
    """A 3-layer ModernBERT (hidden 32) with random weights, saved with its tokenizer to `path`; `overrides` change the config."""
    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    torch.manual_seed(seed)
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                 max_position_embeddings=512, local_attention=16)
    config = ModernBertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id, **{**shape, **overrides})
    model = ModernBertForMaskedLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


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
