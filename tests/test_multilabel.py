"""Multi-label training: each label a yes/no question, one ATP example per (text, label)."""

import json
import random

import pytest
from conftest import WORDS, write
from transformers import AutoTokenizer

import mlm_classifier as core
import train
from mlm_classifier import InputError, multilabel

PROMPT = "{options}\nText: {text}\nIs it {label}? [unused0] {answer}\n"  # the label next to the answer


def rows(n, seed, labels_of):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        out.append({"text": text, "labels": labels_of(rng)})
    return out


def write_jsonl(path, records):
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def test_label_cells_become_lists_and_a_missing_cell_is_named():
    values = [["a", "b"], "a, b", "", "b", ()]
    assert multilabel.label_lists(values, ",", "t.csv", "labels") == [["a", "b"], ["a", "b"], [], ["b"], []]
    with pytest.raises(InputError, match=r"t.csv: row 1 has no label in column 'labels' \(an empty list"):
        multilabel.label_lists(["a", None], ",", "t.csv", "labels")


def test_a_multi_label_prompt_asks_about_one_label_and_ends_with_the_answer_slot():
    template = multilabel.question_template(multilabel.MULTI_LABEL_PROMPT, "Sports")
    before, after = core.parse_prompt(template)
    assert "LABEL:\nSports\n" in before + after and template.endswith("Answer: [unused0] {label}")
    with pytest.raises(InputError, match=r"ends with `\[unused0\] \{answer\}`"):
        multilabel.check_multi_label_prompt("Text: {text}\nAnswer: [unused0] {label}")  # a single-label template
    with pytest.raises(InputError, match="names the label it asks about as {label}"):
        multilabel.check_multi_label_prompt("Text: {text}\nAnswer: [unused0] {answer}")


def test_pairs_are_text_major_and_each_equals_its_single_label_prompt(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    names = ["red", "blue", "green"]
    halves, answer_ids = multilabel.plan_questions(tokenizer, PROMPT, names, 64)
    assert tokenizer.convert_ids_to_tokens(answer_ids) == ["ĠA", "ĠB"]
    texts = ["a red city", "the blue river"]
    answers = multilabel.pair_answers([["RED"], []], ["RED", "BLUE", "GREEN"])
    assert answers == [["A", "B", "B"], ["B", "B", "B"]]
    sequences, positions, _ = multilabel.encode_pairs(tokenizer, halves, texts, answers, 64)
    for t, text in enumerate(texts):
        for l, name in enumerate(names):
            filled = multilabel.question_template(PROMPT, name).replace("{options}", multilabel.OPTIONS).rstrip()
            expected = tokenizer(filled.replace("{text}", text).replace("{label}", answers[t][l]))["input_ids"]
            assert sequences[3 * t + l] == expected
            assert tokenizer.convert_ids_to_tokens([expected[positions[3 * t + l]]]) == [f"Ġ{answers[t][l]}"]


def test_metrics_count_each_label_on_its_own():
    yes, no = [0.0, -5.0], [-5.0, 0.0]  # log P(yes), log P(no) of one pair
    scores = [yes, no, yes, yes]  # text 0: {a}, text 1: {a, b}
    metrics = multilabel.multi_label_metrics(scores, [["a"], ["b"]], ["a", "b"])
    assert metrics["exact_match"] == 0.5 and metrics["n"] == 2
    assert metrics["per_label"]["a"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert metrics["per_label"]["b"]["recall"] == 1.0 and metrics["micro_f1"] == pytest.approx(0.8)


def test_train_learns_label_conditioned_answers_and_saves_a_multi_label_folder(tiny_model_dir, tmp_path):
    # Every text has the label RED and never BLUE: the right answer depends on the label asked about alone.
    train_file = write_jsonl(tmp_path / "train.jsonl", rows(120, 1, lambda rng: ["RED"]))
    validation = write_jsonl(tmp_path / "validation.jsonl", rows(20, 2, lambda rng: ["RED"]))
    label_map = write(tmp_path / "labels.json", json.dumps({"RED": "red", "BLUE": "blue"}))
    prompt = write(tmp_path / "prompt.txt", PROMPT)
    out = tmp_path / "out"
    metrics = train.main([
        "--model", tiny_model_dir, "--multi_label", "--train_file", train_file, "--validation_file", validation,
        "--label_column", "labels", "--label_map", label_map, "--prompt_file", prompt, "--output_dir", str(out),
        "--max_length", "64", "--learning_rate", "1e-2", "--warmup_ratio", "0.1", "--per_device_train_batch_size",
        "16", "--num_train_epochs", "3", "--eval_steps", "10"])
    assert metrics["validation_exact_match"] == 1.0 and metrics["validation_micro_f1"] == 1.0  # all-no: 0 and 0
    assert metrics["best_step"] and set(metrics["validation_per_label"]) == {"RED", "BLUE"}
    settings = json.loads((out / "classifier.json").read_text())
    assert settings["multi_label"] is True and settings["threshold"] == 0.5
    assert (out / "prompt.txt").read_text() == PROMPT


def test_multi_label_needs_a_label_map_and_names_unknown_labels(tiny_model_dir, tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": ["RED"]},
                                                        {"text": "b", "labels": ["PINK"]}])
    common = ["--model", tiny_model_dir, "--multi_label", "--train_file", train_file, "--label_column", "labels",
              "--output_dir", str(tmp_path / "o")]
    with pytest.raises(InputError, match="--multi_label needs --label_map"):
        train.main(common)
    label_map = write(tmp_path / "labels.json", json.dumps({"RED": "red"}))  # one label is fine multi-label
    with pytest.raises(InputError, match=r"labels missing from --label_map .*'PINK' \(row 1\)"):
        train.main(common + ["--label_map", label_map])
