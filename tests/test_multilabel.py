"""Multi-label: each label a yes/no question, one ATP example per (text, label) in training, one forward pass per
(text, label) zero-shot; the trained folder is used as multi-label by classify.py and MLMClassifier with no flag."""

import csv
import json
import random
import re
import shutil

import pytest
from conftest import WORDS, build_tiny_modernbert, write
from transformers import AutoTokenizer

import classify
import minimal
import mlm_classifier as core
from mlm_classifier import spec
import train
from mlm_classifier import InputError, MLMClassifier, multilabel, splits, training

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
    assert splits.label_lists(values, ",", "t.csv", "labels") == [["a", "b"], ["a", "b"], [], ["b"], []]
    with pytest.raises(InputError, match=r"t.csv: row 1 has no label in column 'labels' \(an empty list"):
        splits.label_lists(["a", None], ",", "t.csv", "labels")


def test_a_multi_label_prompt_asks_about_one_label_and_ends_with_the_answer_slot():
    template = multilabel.question_template(multilabel.MULTI_LABEL_PROMPT, "Sports")
    assert "LABEL:\nSports\n" in core.parse_prompt(template).prompt and template.endswith("Answer: [unused0] {label}")
    with pytest.raises(InputError, match=r"ends with `\[unused0\] \{answer\}`"):
        multilabel.check_multi_label_prompt("Text: {text}\nAnswer: [unused0] {label}")  # a single-label template
    with pytest.raises(InputError, match="names the label it asks about as {label}"):
        multilabel.check_multi_label_prompt("Text: {text}\nAnswer: [unused0] {answer}")


def test_pairs_are_text_major_and_each_equals_its_single_label_prompt(tiny_model_dir):
    names = {"RED": "red", "BLUE": "blue", "GREEN": "green"}
    texts = ["a red city", "the blue river"]
    split = core.Split("t", texts, [["RED"], []], [0, 1])
    data = core.prepare(tiny_model_dir, PROMPT, "the prompt", names, "the map", {"train": split}, 64, multi_label=True)
    tokenizer = data.tokenizer
    assert tokenizer.convert_ids_to_tokens(data.answer_ids) == ["ĠA", "ĠB"]
    sequences, positions = data.encoded["train"]
    answers = [["A", "B", "B"], ["B", "B", "B"]]  # does RED, BLUE, GREEN apply to each text?
    for t, text in enumerate(texts):
        for v, name in enumerate(names.values()):
            filled = multilabel.question_template(PROMPT, name).replace("{options}", multilabel.OPTIONS).rstrip()
            expected = tokenizer(filled.replace("{text}", text).replace("{label}", answers[t][v]))["input_ids"]
            assert sequences[3 * t + v] == expected
            assert tokenizer.convert_ids_to_tokens([expected[positions[3 * t + v]]]) == [f"Ġ{answers[t][v]}"]


def test_metrics_count_each_label_on_its_own():
    yes, no = [0.0, -5.0], [-5.0, 0.0]  # log P(yes), log P(no) of one pair
    scores = [yes, no, yes, yes]  # text 0: {a}, text 1: {a, b}
    metrics = training.multi_label_metrics(scores, [["a"], ["b"]], ["a", "b"])
    assert metrics["exact_match"] == 0.5 and metrics["n"] == 2
    assert metrics["per_label"]["a"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert metrics["per_label"]["b"]["recall"] == 1.0 and metrics["micro_f1"] == pytest.approx(0.8)


@pytest.fixture(scope="module")
def ml_trained(tiny_model_dir, tmp_path_factory):
    """A multi-label folder trained by train.py, with its predictions.jsonl: (folder, metrics, predict file)."""
    d = tmp_path_factory.mktemp("multi")
    # Every text has the label RED and never BLUE: the right answer depends on the label asked about alone.
    train_file = write_jsonl(d / "train.jsonl", rows(120, 1, lambda rng: ["RED"]))
    validation = write_jsonl(d / "validation.jsonl", rows(20, 2, lambda rng: ["RED"]))
    predict = write_jsonl(d / "predict.jsonl", [{"text": r["text"]} for r in rows(9, 3, lambda rng: [])])
    label_map = write(d / "labels.json", json.dumps({"RED": "red", "BLUE": "blue"}))
    prompt = write(d / "prompt.txt", PROMPT)
    out = d / "out"
    metrics = train.main([
        "--model", tiny_model_dir, "--multi_label", "--train_file", train_file, "--validation_file", validation,
        "--predict_file", predict, "--label_column", "labels", "--label_map", label_map, "--prompt_file", prompt,
        "--output_dir", str(out), "--max_length", "64", "--learning_rate", "1e-2", "--warmup_ratio", "0.1",
        "--per_device_train_batch_size", "16", "--num_train_epochs", "3", "--eval_steps", "10"])
    return str(out), metrics, predict


def test_train_learns_label_conditioned_answers_and_saves_a_multi_label_folder(ml_trained):
    out, metrics, _ = ml_trained
    assert metrics["validation_exact_match"] == 1.0 and metrics["validation_micro_f1"] == 1.0  # all-no: 0 and 0
    assert metrics["best_step"] and set(metrics["validation_per_label"]) == {"RED", "BLUE"}
    with open(f"{out}/classifier.json") as f:
        settings = json.load(f)
    assert settings["multi_label"] is True and settings["threshold"] == 0.5
    with open(f"{out}/prompt.txt") as f:
        assert f.read() == PROMPT


def test_the_folder_is_multi_label_in_classify_py_and_the_api_with_no_flag(ml_trained, tmp_path):
    out, _, predict = ml_trained
    with open(f"{out}/predictions.jsonl") as f:
        expected = [json.loads(line) for line in f]
    assert all(e["labels"] == ["RED"] for e in expected)  # what it learned
    output = tmp_path / "labelled.jsonl"
    classify.main(["--model", out, "--input", predict, "--output", str(output), "--no_progress"])
    with open(output) as f:
        records = [json.loads(line) for line in f]
    assert [r["labels"] for r in records] == [e["labels"] for e in expected]
    for r, e in zip(records, expected):
        assert r["probabilities"] == pytest.approx(e["probabilities"], abs=1e-5)
    settings = json.loads((tmp_path / "labelled.jsonl.settings.json").read_text())
    assert settings["multi_label"] is True and settings["threshold"] == 0.5
    assert settings["questions"] == {"RED": "red", "BLUE": "blue"}

    clf = MLMClassifier.from_pretrained(out, device="cpu")
    assert clf.multi_label and clf([e["text"] for e in expected]) == [
        {"labels": r["labels"], "probabilities": pytest.approx(r["probabilities"], abs=1e-5)} for r in records]
    strict = MLMClassifier.from_pretrained(out, device="cpu", threshold=1.0)  # the user's threshold wins
    assert strict(expected[0]["text"])["labels"] == []
    with pytest.raises(InputError, match="was trained multi-label"):
        MLMClassifier.from_pretrained(out, multi_label=False)


def test_a_single_label_folder_refuses_multi_label(trained, files, tmp_path):
    with pytest.raises(InputError, match=r"--multi_label: .* was trained single-label"):
        classify.main(["--model", trained[0], "--multi_label", "--input", files["predict"],
                       "--output", str(tmp_path / "o.jsonl")])


@pytest.fixture(scope="module")
def spread_model_dir(tiny_model_dir, tmp_path_factory):
    """A tiny ModernBERT whose large random weights give yes and no clearly different probabilities."""
    path = str(tmp_path_factory.mktemp("spread"))
    build_tiny_modernbert(path, AutoTokenizer.from_pretrained(tiny_model_dir), seed=3, initializer_range=0.5)
    return path


TEXTS = ["the river city market", "team game first second", "a plant cell in the water"]


def test_zero_shot_asks_each_label_on_its_own_as_one_plain_forward_pass(spread_model_dir):
    import torch
    from transformers import AutoModelForMaskedLM

    labels = ["red", "blue", "green"]
    clf = MLMClassifier.from_pretrained(spread_model_dir, labels=labels, multi_label=True, device="cpu")
    results = clf(TEXTS)
    tokenizer = core.load_tokenizer(spread_model_dir)
    model = AutoModelForMaskedLM.from_pretrained(spread_model_dir).eval()
    for text, result in zip(TEXTS, results):
        for label in labels:  # the default template, filled by hand, scored by minimal.py's one function
            prompt = (multilabel.MULTI_LABEL_PROMPT.replace("{text}", text).replace("{label}", label)
                      .replace("{options}", "- A: yes\n- B: no").replace("{answer}", tokenizer.mask_token))
            with torch.no_grad():
                yes, _ = minimal.answer_probabilities(model, tokenizer, prompt, ["A", "B"])
            assert result["probabilities"][label] == pytest.approx(yes, abs=1e-5)
        assert result["labels"] == [label for label in labels if result["probabilities"][label] >= 0.5]
    chosen = [len(r["labels"]) for r in results]  # the model tells the questions apart: the checks above can fail
    assert sum(chosen) and sum(chosen) < len(labels) * len(TEXTS)

    # Each label is judged on its own: the other labels, and their order, change nothing.
    reordered = MLMClassifier(spec.load_spec(spread_model_dir, labels[::-1], multi_label=True), tokenizer, model)
    alone = MLMClassifier(spec.load_spec(spread_model_dir, ["blue"], multi_label=True), tokenizer, model)
    for result, other, single in zip(results, reordered(TEXTS), alone(TEXTS)):
        assert other["probabilities"] == pytest.approx(result["probabilities"], abs=1e-6)
        assert single["probabilities"]["blue"] == pytest.approx(result["probabilities"]["blue"], abs=1e-6)

    # Calibration per label: each label's P(yes) divided by its own question's content-free P(yes), renormalised.
    calibrated = MLMClassifier(clf.spec, tokenizer, model, calibrate=True)
    free = dict(zip(labels, calibrated.content_free_probabilities()))
    for result, cal in zip(results, calibrated(TEXTS)):
        for label in labels:
            p, (q_yes, q_no) = result["probabilities"][label], free[label]
            assert cal["probabilities"][label] == pytest.approx(p / q_yes / (p / q_yes + (1 - p) / q_no), abs=1e-6)
    assert len({tuple(q) for q in free.values()}) == 3  # each label its own content-free answer


def test_classify_py_zero_shot_multi_label_writes_lists_and_each_labels_probability(spread_model_dir, tmp_path):
    labels = ["red", "blue", "green"]
    texts = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    args = ["--model", spread_model_dir, "--labels", ",".join(labels), "--multi_label", "--input", texts,
            "--no_progress", "--threshold", "0.4"]
    classify.main(args + ["--output", str(tmp_path / "out.jsonl")])
    with open(tmp_path / "out.jsonl") as f:
        records = [json.loads(line) for line in f]
    clf = MLMClassifier.from_pretrained(spread_model_dir, labels=labels, multi_label=True, threshold=0.4, device="cpu")
    for record, result in zip(records, clf(TEXTS)):
        assert record["labels"] == result["labels"] and set(record) == {"row", "text", "labels", "probabilities"}
        assert record["probabilities"] == pytest.approx(result["probabilities"], abs=1e-5)
    settings = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    assert settings["multi_label"] is True and settings["threshold"] == 0.4 and settings["mode"] == "zero-shot"
    assert settings["prompt"] == multilabel.MULTI_LABEL_PROMPT
    classify.main(args + ["--output", str(tmp_path / "out.csv")])
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [json.loads(r["labels"]) for r in rows] == [r["labels"] for r in records]
    assert [float(r["p_blue"]) for r in rows] == [r["probabilities"]["blue"] for r in records]


@pytest.mark.parametrize("extra, expected", [
    (["--abstain_label", "none", "--threshold", "0.5"], "--abstain_label: multi-label, a text whose every label"),
    (["--permutations", "2"], "--permutations: a multi-label question always offers yes and no"),
    (["--prompt_file", "{single}"], "ends with `[unused0] {answer}`"),
    (["--prompt_file", "{no_options}"], "must list `- A: yes` and `- B: no`"),
])
def test_multi_label_flags_are_checked_before_any_model_loads(tiny_model_dir, tmp_path, extra, expected):
    broken = tmp_path / "model"  # garbage weights: every error here comes first
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    prompts = {"{single}": "Text: {text}\n{options}\nAnswer: [unused0] {label}",
               "{no_options}": "Text: {text}\nIs it {label}? Answer: [unused0] {answer}"}
    extra = [str(write(tmp_path / "p.txt", prompts[a])) if a in prompts else a for a in extra]
    texts = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    with pytest.raises(InputError, match=re.escape(expected)):
        classify.main(["--model", str(broken), "--labels", "red,blue", "--multi_label", "--input", texts,
                       "--output", str(tmp_path / "o.jsonl"), *extra])


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
