"""Multi-label training learns label sets that depend on the text, not only on the label asked about.

The task is built so that its answers are known: RED applies to a text iff the word ` red` is in it, BLUE iff
` blue` is (the words the questions show, single tokens of the test tokenizer). A quarter of the texts have both
labels, a quarter each one of them, a quarter none, so answering a pair right needs the text and the label together:
the all-negative answer gets a quarter of the texts exactly, and an answer blind to the label asked about (yes to
every label when the text has any cue) gets half of them and micro-F1 0.8.

The model is wider than conftest's: there hidden 32 stays at a constant answer and hidden 64 at times at the
label-blind one, where hidden 128 with a window covering the whole prompt learns the task within 150 of its 250 steps
for every seed tried, at a learning rate of 1e-3 (at 2e-3 some seeds swing between all-yes and all-no).
"""

import json
import random

import torch
from conftest import WORDS, build_tiny_modernbert, write
from transformers import AutoTokenizer

import train

CUES = {"RED": "red", "BLUE": "blue"}  # raw label -> its name in the question, and the word that makes it apply
LABEL_SETS = [("RED", "BLUE"), ("RED",), ("BLUE",), ()]  # drawn in turn, so each is a quarter of the texts
PROMPT = "Text: {text}\nIs it {label}? [unused0] {answer}\n"
WIDE = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4, "local_attention": 128}


def cued_rows(n, seed):
    """Texts of 2-6 filler words with the cue of each label of their set put in at random places; each row's labels
    are read back from its words, so they hold by construction."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
        for label in LABEL_SETS[i % len(LABEL_SETS)]:
            words.insert(rng.randint(0, len(words)), CUES[label])
        rows.append({"text": " ".join(words), "labels": [label for label, cue in CUES.items() if cue in words]})
    rng.shuffle(rows)
    return rows


def scores(predicted, gold):
    """Exact match and micro-F1 of predicted label sets against gold ones."""
    tp = sum(len(set(p) & set(g)) for p, g in zip(predicted, gold))
    fp = sum(len(set(p) - set(g)) for p, g in zip(predicted, gold))
    fn = sum(len(set(g) - set(p)) for p, g in zip(predicted, gold))
    exact = sum(set(p) == set(g) for p, g in zip(predicted, gold)) / len(gold)
    return exact, 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def train_cued_task(tiny_model_dir, tmp_path, model_seed=0, data_seed=0, train_seed=0):
    """Train a wide tiny ModernBERT on the cued task with train.py --multi_label: (metrics, validation rows)."""
    model_dir = str(tmp_path / "model")
    build_tiny_modernbert(model_dir, AutoTokenizer.from_pretrained(tiny_model_dir), seed=model_seed, **WIDE)
    train_rows, validation_rows = cued_rows(200, 2 * data_seed + 1), cued_rows(40, 2 * data_seed + 2)
    files = {name: write(tmp_path / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
             for name, rows in (("train", train_rows), ("validation", validation_rows))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fast as 2 for this size, and not slowed down many times when the CPUs are busy
    try:
        metrics = train.main([
            "--model", model_dir, "--multi_label", "--train_file", files["train"], "--validation_file",
            files["validation"], "--label_column", "labels", "--label_map",
            write(tmp_path / "labels.json", json.dumps(CUES)), "--prompt_file", write(tmp_path / "prompt.txt", PROMPT),
            "--output_dir", str(tmp_path / "out"), "--max_length", "48", "--learning_rate", "1e-3", "--warmup_ratio",
            "0.1", "--per_device_train_batch_size", "16", "--num_train_epochs", "10", "--eval_steps", "25",
            "--seed", str(train_seed)])
    finally:
        torch.set_num_threads(threads)
    return metrics, validation_rows


def test_multi_label_training_learns_text_dependent_label_sets_well_above_all_negative(tiny_model_dir, tmp_path):
    metrics, validation = train_cued_task(tiny_model_dir, tmp_path)
    gold = [row["labels"] for row in validation]
    all_negative = scores([[] for _ in gold], gold)  # (a quarter, 0.0)
    label_blind = scores([list(CUES) if labels else [] for labels in gold], gold)  # (a half, 0.8)
    assert metrics["truncated"] == {"train": 0, "validation": 0}  # no cue was cut off
    assert all_negative[1] == 0.0 and 0 < all_negative[0] < 0.5 and label_blind[1] < 0.9
    exact_match, micro_f1 = metrics["validation_exact_match"], metrics["validation_micro_f1"]
    assert exact_match >= all_negative[0] + 0.5 and exact_match >= label_blind[0] + 0.2, metrics
    assert micro_f1 >= 0.9, metrics
    assert min(label["f1"] for label in metrics["validation_per_label"].values()) >= 0.8, metrics
