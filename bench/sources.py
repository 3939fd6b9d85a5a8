"""Where the benchmarks' inputs come from: the hub by default, local copies with --data_dir and --tokenizer.

The tokenizer is ModernBERT-Large-Instruct's, from the hub or a local folder; the models are random weights
sized for it. Data that the hub cannot serve, or a tokenizer it cannot, is one `error:` line (run_command).
"""

import csv
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mlm_classifier as core  # noqa: E402

TOKENIZER = "answerdotai/ModernBERT-Large-Instruct"
TOKENIZER_HELP = "hub name or local tokenizer folder (default: %(default)s from the hub)"


def load_tokenizer(name):
    """The tokenizer from the hub or a local folder; one that cannot be loaded is an InputError naming --tokenizer."""
    from transformers import AutoTokenizer

    return core.load_pretrained(AutoTokenizer, name, "--tokenizer")


def ag_news_test(data_dir=None):
    """(texts, labels) of AG News' test split: the hub's SetFit/ag_news (its `text`, `label_text`), or with `data_dir`
    the original headerless DIR/ag_news/test.csv (class 1-4, title, description) and DIR/ag_news/classes.txt,
    each text `title description` as SetFit joins them, the originals' escaped newlines `\\n` as spaces."""
    if data_dir is None:
        split = core.load_hub_dataset("SetFit/ag_news", "give a local copy with --data_dir (DIR/ag_news/test.csv and "
                                      "classes.txt, the original files)", split="test")
        return list(split["text"]), list(split["label_text"])
    folder = os.path.join(data_dir, "ag_news")
    classes = core.read_text(os.path.join(folder, "classes.txt")).split("\n")
    records = list(csv.reader(io.StringIO(core.read_text(os.path.join(folder, "test.csv")), newline="")))
    texts = [f"{title} {description}".replace("\\n", " ") for _, title, description in records]
    return texts, [classes[int(label) - 1].strip() for label, _, _ in records]
