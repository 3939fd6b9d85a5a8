"""minimal_train.py: its training prompts, batches and loss are the package's (train.py's), it learns a cue task from
random weights, its dummy MLM is the paper's, and it stands alone."""

import ast
import os
import random
import runpy

import pytest
import torch
from conftest import LABEL_MAP, PROMPT, REPO, build_tiny_modernbert, color_rows
from transformers import AutoModelForMaskedLM, AutoTokenizer

import minimal_train as mt
import mlm_classifier as core
from mlm_classifier import objectives, prompts


def package_path(model, tokenizer, prompt, label_map, texts, labels, pad_to_multiple_of=8, max_length=512):
    """The package's training path, ATP only, as train.py's prepare and ATPTrainer run it (every package call of
    this file's training checks is here): the encoded prompts, their answer positions, each label's answer token,
    one collated batch and, when `model` is given, that batch's loss."""
    template = core.parse_prompt(prompt)
    options = prompts.options_block(label_map)
    answer_ids = prompts.answer_token_ids(tokenizer, template, label_map, options)
    sequences, positions, _ = prompts.encode_prompts(tokenizer, template, texts,
                                                     [label_map[label] for label in labels], options, max_length)
    collator = objectives.ObjectiveCollator(tokenizer.mask_token_id, tokenizer.pad_token_id,
                                            frozenset(tokenizer.all_special_ids), pad_to_multiple_of=pad_to_multiple_of)
    batch = collator([{"input_ids": ids, "answer_position": p} for ids, p in zip(sequences, positions)])
    loss = None if model is None else core.labelled_loss(model, batch["input_ids"], batch["attention_mask"],
                                                         batch["labels"])
    return sequences, positions, answer_ids, batch, loss


def package_probabilities(model, tokenizer, sequences, positions, answer_ids):
    """The package's reading of a trained model (MLMClassifier's for a trained folder): each label's answer token at
    the [MASK] that replaces the answer, renormalised over the labels."""
    masked = prompts.mask_answers(sequences, positions, tokenizer.mask_token_id)
    scores = core.score_sequences(model, masked, tokenizer.mask_token_id, tokenizer.pad_token_id,
                                  [[i] for i in answer_ids], batch_tokens=4096, pad_to_multiple_of=8)
    return [torch.tensor(scores[k], dtype=torch.float64).softmax(dim=0).tolist() for k in range(len(sequences))]


def minimal_answer_ids(tokenizer, template, label_map):
    """Each label's answer token as minimal_train.py's last cell reads it: its prompt's one ATP target."""
    prompts = [mt.filled_prompt(template, "", label_map, v) for v in label_map.values()]
    return mt.atp_batch(tokenizer, prompts)["labels"].amax(dim=1).tolist()


def answer_positions(batch):
    """Each row's labelled position, checking there is exactly one."""
    where = (batch["labels"] != -100).nonzero().tolist()
    assert [row for row, _ in where] == list(range(len(batch["labels"])))
    return [position for _, position in where]


LETTER_MAP = {"World": "A", "Sports": "B", "Business": "C", "Science": "D"}
# (template, label map): conftest's colour prompt (it ends with a newline), the zero-shot prompt with letters, and
# one with {options} first, a literal `{name}` and spaces after {label}
TEMPLATES = {"colour": (PROMPT, LABEL_MAP), "zero-shot": (core.ZERO_SHOT_PROMPT, LETTER_MAP),
             "options-first": ("Pick one.\n{options}\nText: {text} {{name}}\nAnswer: [unused0] {label}   \n",
                               LABEL_MAP)}
TEXTS = ["the river red city", "", "  team game first second\n", "a {brace} and [unused0] in the text",
         "price market value " * 12, "blue"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread; threads that wait for a core another process holds cost far more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def spread_model(tokenizer, tmp_path_factory):
    """A tiny ModernBERT whose larger random weights make the loss depend clearly on the labels."""
    path = str(tmp_path_factory.mktemp("spread"))
    build_tiny_modernbert(path, tokenizer, seed=5, initializer_range=0.2)
    return AutoModelForMaskedLM.from_pretrained(path).eval()


def label_cycle(label_map, n, shift=0):
    labels = list(label_map)
    return [labels[(k + shift) % len(labels)] for k in range(n)]


# -----------------------------------------------------------------------------
# Prompts, token ids, batches and loss: the package's


@pytest.mark.parametrize("template,label_map", TEMPLATES.values(), ids=TEMPLATES.keys())
def test_training_prompts_tokenize_to_the_packages_ids(tokenizer, template, label_map):
    labels = label_cycle(label_map, len(TEXTS))
    sequences, positions, answer_ids, batch, _ = package_path(None, tokenizer, template, label_map, TEXTS, labels,
                                                              pad_to_multiple_of=1)
    prompts = [mt.filled_prompt(template, text, label_map, label_map[label]) for text, label in zip(TEXTS, labels)]
    assert [tokenizer(prompt)["input_ids"] for prompt in prompts] == sequences
    mine = mt.atp_batch(tokenizer, prompts)
    assert answer_positions(mine) == positions
    assert minimal_answer_ids(tokenizer, template, label_map) == answer_ids
    assert mine.keys() == batch.keys()
    for key in mine:  # ATP alone, both padded to the longest: the same tensors
        assert torch.equal(mine[key], batch[key]), key
    filled = mt.filled_prompt(template, "x", label_map, "[MASK]")
    assert filled.endswith("Answer: [unused0] [MASK]") and "{" not in filled.replace("{name}", "")


def test_an_answer_of_two_tokens_is_refused(tokenizer):
    two_tokens = {"RED": "red", "BLUE": " blue"}  # `[unused0]  blue`: the tokens `Ġ` and `Ġblue`
    with pytest.raises(AssertionError, match="one token"):
        mt.atp_batch(tokenizer, [mt.filled_prompt(PROMPT, "a text", two_tokens, " blue")])
    with pytest.raises(core.InputError):  # the package refuses it too
        prompts.answer_token_ids(tokenizer, core.parse_prompt(PROMPT), two_tokens, "")


def test_loss_equals_the_packages_and_depends_on_the_labels(tokenizer, spread_model):
    texts = [row["text"] for row in color_rows(7, 5, long_every=3)]  # lengths from a few tokens to 80 words
    losses = []
    for shift in (0, 1):
        labels = label_cycle(LABEL_MAP, len(texts), shift)
        prompts = [mt.filled_prompt(PROMPT, text, LABEL_MAP, LABEL_MAP[label]) for text, label in zip(texts, labels)]
        with torch.no_grad():
            mine = spread_model(**mt.atp_batch(tokenizer, prompts)).loss.item()
            package = package_path(spread_model, tokenizer, PROMPT, LABEL_MAP, texts, labels)[4].item()
        assert mine == pytest.approx(package, abs=1e-5)
        losses.append(mine)
    assert abs(losses[0] - losses[1]) > 1e-2, losses


# -----------------------------------------------------------------------------
# Learning


def colour_probabilities(model, tokenizer, rows):
    """minimal_train.py's answer_probabilities for each row, over the colours."""
    ids = minimal_answer_ids(tokenizer, PROMPT, LABEL_MAP)
    return [mt.answer_probabilities(model, tokenizer, mt.filled_prompt(PROMPT, row["text"], LABEL_MAP, "[MASK]"), ids)
            for row in rows]


def accuracy(probabilities, rows):
    gold = [list(LABEL_MAP).index(row["label_text"]) for row in rows]
    return sum(max(range(len(p)), key=p.__getitem__) == g for p, g in zip(probabilities, gold)) / len(rows)


def test_learns_the_colour_task_from_random_weights(tokenizer, tmp_path):
    # Hidden 128 learns this in 57 steps for every seed tried (0-10); hidden 32 needs far more.
    train_rows, held_out = color_rows(300, 1), color_rows(40, 3)
    texts = [row["text"] for row in train_rows]
    labels = [row["label_text"] for row in train_rows]
    shuffled = random.Random(0).sample(labels, len(labels))
    results = {}
    for name, train_labels in (("true", labels), ("shuffled", shuffled)):
        build_tiny_modernbert(str(tmp_path / name), tokenizer, seed=0, hidden_size=128, intermediate_size=256)
        model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / name))
        model = mt.train(model, tokenizer, PROMPT, LABEL_MAP, texts, train_labels, epochs=3, batch_size=16, lr=1e-3)
        probabilities = colour_probabilities(model, tokenizer, held_out)
        results[name] = accuracy(probabilities, held_out)
        if name == "true":  # the package reads the trained model the same way
            sequences, positions, answer_ids, _, _ = package_path(None, tokenizer, PROMPT, LABEL_MAP,
                                                                  [row["text"] for row in held_out],
                                                                  [row["label_text"] for row in held_out])
            package = package_probabilities(model, tokenizer, sequences, positions, answer_ids)
            for mine, theirs in zip(probabilities, package):
                assert mine == pytest.approx(theirs, abs=1e-5)
    assert results["true"] >= 0.9, results  # chance is 0.25
    assert results["shuffled"] <= 0.6, results


# -----------------------------------------------------------------------------
# Dummy MLM


class AlwaysHigh(random.Random):
    """Every draw is 0.99: dummy MLM is chosen (below 1.0) but no token reaches 30% on its own."""

    def random(self):
        return 0.99


def special_positions(tokenizer, batch):
    special = torch.tensor(sorted(tokenizer.all_special_ids))
    return torch.isin(batch["input_ids"], special) | (batch["attention_mask"] == 0)


def test_dummy_mlm_masks_30_percent_each_a_mask_target(tokenizer, spread_model):
    texts = [row["text"] for row in color_rows(40, 6)]
    labels = label_cycle(LABEL_MAP, len(texts))
    prompts = [mt.filled_prompt(PROMPT, text, LABEL_MAP, LABEL_MAP[label]) for text, label in zip(texts, labels)]
    plain = mt.atp_batch(tokenizer, prompts)
    plain["input_ids"][plain["labels"] != -100] = plain["labels"][plain["labels"] != -100]  # the unmasked ids
    dummy = mt.atp_batch(tokenizer, prompts, dummy_mlm=1.0, rng=random.Random(0))
    targets = dummy["labels"] != -100
    assert set(dummy["labels"][targets].tolist()) == {tokenizer.mask_token_id}
    assert (dummy["input_ids"][targets] == tokenizer.mask_token_id).all()
    assert torch.equal(dummy["input_ids"][~targets], plain["input_ids"][~targets])
    special = special_positions(tokenizer, plain)
    assert not (targets & special).any() and targets.any(dim=1).all()
    assert 0.25 < targets.sum() / (~special).sum() < 0.35
    with torch.no_grad():  # the model's own loss is the package's on these many targets too
        package = core.labelled_loss(spread_model, dummy["input_ids"], dummy["attention_mask"], dummy["labels"])
        assert spread_model(**dummy).loss.item() == pytest.approx(package.item(), abs=1e-5)

    one_each = mt.atp_batch(tokenizer, prompts[:5], dummy_mlm=1.0, rng=AlwaysHigh(0))  # none drawn: one is chosen
    assert ((one_each["labels"] != -100).sum(dim=1) == 1).all()
    assert set(one_each["labels"][one_each["labels"] != -100].tolist()) == {tokenizer.mask_token_id}


def test_without_dummy_mlm_one_target_each_at_the_answer(tokenizer):
    texts = [row["text"] for row in color_rows(40, 7)]
    labels = label_cycle(LABEL_MAP, len(texts))
    prompts = [mt.filled_prompt(PROMPT, text, LABEL_MAP, LABEL_MAP[label]) for text, label in zip(texts, labels)]
    sequences, positions, answer_ids, _, _ = package_path(None, tokenizer, PROMPT, LABEL_MAP, texts, labels)
    batch = mt.atp_batch(tokenizer, prompts, dummy_mlm=0.0, rng=random.Random(0))
    assert answer_positions(batch) == positions
    for k, (label, position) in enumerate(zip(labels, positions)):
        assert batch["labels"][k, position] == answer_ids[list(LABEL_MAP).index(label)] == sequences[k][position]
        assert batch["input_ids"][k, position] == tokenizer.mask_token_id

    mixed = mt.atp_batch(tokenizer, prompts, dummy_mlm=0.5, rng=random.Random(1))
    per_row = (mixed["labels"] != -100).sum(dim=1)
    atp_rows = [k for k in range(len(prompts)) if mixed["labels"][k, positions[k]] == sequences[k][positions[k]]]
    assert 8 <= len(atp_rows) <= 32  # about half of 40 rows each way
    assert all(per_row[k] == 1 for k in atp_rows)
    assert all(set(mixed["labels"][k][mixed["labels"][k] != -100].tolist()) == {tokenizer.mask_token_id}
               for k in range(len(prompts)) if k not in atp_rows)


# -----------------------------------------------------------------------------
# One screen, standing alone


def test_stands_alone_on_one_screen(tiny_model_dir, tmp_path, capsys):
    with open(os.path.join(REPO, "minimal_train.py"), encoding="utf-8") as f:
        source = f.read()
    assert len(source.splitlines()) <= 80
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported == {"random", "torch", "transformers"}
    assert "sys.argv" not in source  # in Jupyter argv[1] is `-f`
    # The last cell, run as a notebook runs it, on the tiny model instead of the hub's.
    hub_name = 'name = "answerdotai/ModernBERT-Large-Instruct"'
    assert source.count(hub_name) == 1
    script = tmp_path / "minimal_train.py"
    script.write_text(source.replace(hub_name, f"name = {tiny_model_dir!r}"), encoding="utf-8")
    runpy.run_path(str(script), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(set(ast.literal_eval(line)) == {"positive", "negative"} for line in lines)

