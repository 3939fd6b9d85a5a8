"""classify.py and MLMClassifier: a trained folder reproduces train.py, zero-shot labels, bias controls, errors."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ENV, REPO, build_tiny_modernbert, write

import classify
from mlm_classifier import InputError, MLMClassifier

NEWS = ["World", "Sports", "Business", "Science"]
TEXTS = ["the river city market", "team game first second", "price market value", "energy light force system",
         "history of the law", "a plant cell"]


@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir, tmp_path_factory):
    """A tiny ModernBERT whose larger random weights give each letter a clearly different probability."""
    from transformers import AutoTokenizer

    path = str(tmp_path_factory.mktemp("varied"))
    build_tiny_modernbert(path, AutoTokenizer.from_pretrained(tiny_model_dir), seed=3, initializer_range=0.5)
    return path


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def run_classify(*args):
    """classify.py in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(REPO, "classify.py"), "--no_progress", *args],
                          capture_output=True, text=True, env=ENV, timeout=300)


# -----------------------------------------------------------------------------
# A trained folder


def test_trained_folder_reproduces_train_predictions(trained, files, tmp_path):
    folder, _ = trained
    out = tmp_path / "labelled.jsonl"
    classify.main(["--model", folder, "--input", files["predict"], "--id_column", "uid", "--output", str(out),
                   "--no_progress"])
    ours, theirs = read_jsonl(out), read_jsonl(os.path.join(folder, "predictions.jsonl"))
    assert len(ours) == len(theirs) == 20
    for o, t in zip(ours, theirs):
        assert (o["row"], o["id"], o["text"], o["label"]) == (t["row"], f"u{t['row']}", t["text"], t["label"])
        assert list(o["probabilities"]) == list(t["probabilities"])
        for label, p in t["probabilities"].items():
            assert o["probabilities"][label] == pytest.approx(p, abs=1e-4)
    settings = json.loads((tmp_path / "labelled.jsonl.settings.json").read_text())
    # The folder's classifier.json gave max_length 48, so the 4 long texts were cut as in training.
    assert (settings["max_length"], settings["truncated"], settings["mode"]) == (48, 4, "trained folder")


def test_api_reads_the_folder_and_answers_in_the_documented_shape(trained, files):
    folder, _ = trained
    clf = MLMClassifier.from_pretrained(folder)
    assert clf.labels == ["RED", "GREEN", "BLUE", "YELLOW"] and clf.max_length == 48
    theirs = read_jsonl(os.path.join(folder, "predictions.jsonl"))
    results = clf([t["text"] for t in theirs])
    for result, t in zip(results, theirs):
        assert result["label"] == t["label"]
        assert result["probabilities"] == pytest.approx(t["probabilities"], abs=1e-4)
    single = clf(theirs[1]["text"])
    assert set(single) == {"label", "probabilities"} and single["label"] == theirs[1]["label"]


def test_a_trained_folder_calibrates_by_its_own_answer_tokens(trained, tmp_path, files):
    """--calibrate on a folder trained by train.py: each label's probability divided by the content-free text's, in
    the folder's own prompt, then renormalised (its answers are its verbalizers, not letters)."""
    from mlm_classifier.scoring import calibrate

    folder, _ = trained
    plain, calibrated = MLMClassifier.from_pretrained(folder), MLMClassifier.from_pretrained(folder, calibrate=True)
    free = calibrated.content_free_probabilities()[0]
    assert max(free) - min(free) > 1e-3  # the content-free text leans, so calibration changes something
    texts = ["a red city", "the blue river and a green plant"]
    for raw, result in zip(plain.probabilities(texts), calibrated(texts)):
        assert list(result["probabilities"].values()) == pytest.approx(calibrate(raw, free), abs=1e-6)
    out = tmp_path / "calibrated.jsonl"
    classify.main(["--model", folder, "--input", files["predict"], "--output", str(out), "--calibrate", "--no_progress"])
    settings = json.loads((tmp_path / "calibrated.jsonl.settings.json").read_text())
    assert settings["calibrate"] and list(settings["content_free_probabilities"].values()) == pytest.approx(free)


def test_model_card_snippets_run_without_warnings_and_agree(trained, capfd):
    folder, _ = trained
    card = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    api_snippet, transformers_snippet = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    text = "a red city by the river"
    expected = MLMClassifier.from_pretrained(folder)(text)
    capfd.readouterr()
    namespace = {}
    exec(transformers_snippet.replace("path/to/this/folder", folder).replace("your text here", text), namespace)
    captured = capfd.readouterr()
    assert "does not exist in the model vocabulary" not in captured.err + captured.out
    assert namespace["label"] == expected["label"] == "RED"  # the label, not a token to strip and map back
    assert namespace["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)  # over the labels
    exec(api_snippet.replace("path/to/this/folder", folder), {})  # the MLMClassifier snippet runs as written


# -----------------------------------------------------------------------------
# Zero-shot, and the bias controls


def test_zero_shot_scores_letters_in_the_default_template(varied_model_dir):
    from transformers import AutoTokenizer

    clf = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS)
    tokenizer = AutoTokenizer.from_pretrained(varied_model_dir)
    ids = clf.encode(["the city"])[0]
    prompt = tokenizer.decode(ids)
    assert "LABELS:\n- A: World\n- B: Sports\n- C: Business\n- D: Science\n\nANSWER:\nAnswer: [unused0][MASK]" in prompt
    assert clf.plan.option_ids[0] == sorted(tokenizer.convert_tokens_to_ids(["A", "ĠA"]))  # `A` + ` A`, as eval.py
    for result in clf(TEXTS):
        assert sum(result["probabilities"].values()) == pytest.approx(1)
        assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)


def test_full_rotations_make_the_result_independent_of_the_label_order(varied_model_dir):
    rotated = NEWS[2:] + NEWS[:2]
    one_order = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS, permutations=1)(TEXTS)
    other_order = MLMClassifier.from_pretrained(varied_model_dir, labels=rotated, permutations=1)(TEXTS)
    # Without rotations the random model's letter preference decides: the order of the labels matters ...
    assert max(abs(a["probabilities"][k] - b["probabilities"][k])
               for a, b in zip(one_order, other_order) for k in NEWS) > 0.1
    full = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS, permutations=4)(TEXTS)
    full_rotated = MLMClassifier.from_pretrained(varied_model_dir, labels=rotated, permutations=4)(TEXTS)
    # ... with all 4 rotations every label is scored once under every letter, whatever order it was given in.
    for a, b in zip(full, full_rotated):
        assert a["label"] == b["label"]
        for label in NEWS:
            assert a["probabilities"][label] == pytest.approx(b["probabilities"][label], abs=1e-6)


def test_calibration_makes_the_content_free_text_uniform(varied_model_dir):
    plain = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS)("N/A")["probabilities"]
    assert max(plain.values()) - min(plain.values()) > 0.1  # the random model is far from uniform
    for permutations in (1, 3):
        clf = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS, permutations=permutations, calibrate=True)
        assert clf("N/A")["probabilities"] == pytest.approx(dict.fromkeys(NEWS, 0.25), abs=1e-9)
    custom = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS, calibrate=True, content_free_text="[EMPTY]")
    assert custom("[EMPTY]")["probabilities"] == pytest.approx(dict.fromkeys(NEWS, 0.25), abs=1e-9)


def test_cli_zero_shot_writes_csv_in_input_order_with_ids_and_settings(varied_model_dir, tmp_path):
    rows = [{"body": text, "key": f"k{i}"} for i, text in enumerate(TEXTS)]
    source = write(tmp_path / "news.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    labels = write(tmp_path / "labels.txt", "World\nSports\n\nBusiness\nScience\n")  # blank lines are skipped
    out = tmp_path / "out" / "labelled.csv"
    classify.main(["--model", varied_model_dir, "--labels", labels, "--input", source, "--text-column", "body",
                   "--id-column", "key", "--output", str(out), "--permutations", "2", "--calibrate", "--no_progress"])
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["row", "id", "text", "label", "p_World", "p_Sports", "p_Business", "p_Science"]
    assert [(r["row"], r["id"], r["text"]) for r in table] == [(str(i), f"k{i}", t) for i, t in enumerate(TEXTS)]
    api = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS, permutations=2, calibrate=True)(TEXTS)
    assert [r["label"] for r in table] == [a["label"] for a in api]
    settings = json.loads((tmp_path / "out" / "labelled.csv.settings.json").read_text())
    assert (settings["permutations"], settings["calibrate"], settings["content_free_text"]) == (2, True, "N/A")
    assert sum(settings["content_free_probabilities"].values()) == pytest.approx(1)  # what the texts were divided by
    assert settings["labels"] == NEWS and settings["mode"] == "zero-shot" and "{options}" in settings["prompt"]


def test_torchrun_two_processes_write_the_same_file_as_one(varied_model_dir, tmp_path):
    source = write(tmp_path / "in.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 5))
    common = ["--model", varied_model_dir, "--labels", ",".join(NEWS), "--input", source, "--no_progress",
              "--batch_tokens", "256", "--permutations", "2", "--chunk_rows", "4"]  # 8 chunks: 4 for each process
    one = subprocess.run([sys.executable, "classify.py", *common, "--output", str(tmp_path / "one.jsonl")],
                         capture_output=True, text=True, cwd=REPO, env=ENV)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "classify.py", *common, "--output", str(tmp_path / "two.jsonl")],
                         capture_output=True, text=True, cwd=REPO, env=ENV)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert (tmp_path / "one.jsonl").read_text() == (tmp_path / "two.jsonl").read_text()
    assert json.loads((tmp_path / "two.jsonl.settings.json").read_text())["processes"] == 2
    assert not [name for name in os.listdir(tmp_path) if ".partial" in name]


def test_a_threshold_abstains_in_the_api_the_stream_and_the_cli(varied_model_dir, tmp_path):
    plain = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS)(TEXTS)
    tops = sorted(max(r["probabilities"].values()) for r in plain)
    assert tops[2] < tops[3]
    threshold = (tops[2] + tops[3]) / 2  # the three least sure texts abstain
    below = [max(r["probabilities"].values()) < threshold for r in plain]
    results = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS, threshold=threshold)(TEXTS)
    assert [r["label"] for r in results] == [None if b else r["label"] for b, r in zip(below, plain)]
    assert [r["probabilities"] for r in results] == [r["probabilities"] for r in plain]  # still there
    named = MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS, threshold=threshold, abstain_label="unsure")
    assert [r["label"] for r in named.stream(iter(TEXTS), chunk_size=4)] == [
        "unsure" if b else r["label"] for b, r in zip(below, plain)]
    source = write(tmp_path / "in.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "out.jsonl"
    classify.main(["--model", varied_model_dir, "--labels", ",".join(NEWS), "--input", source, "--output", str(out),
                   "--threshold", str(threshold), "--no_progress"])
    records = read_jsonl(out)
    assert [r["label"] for r in records] == [r["label"] for r in results]
    assert all(set(r["probabilities"]) == set(NEWS) for r in records)
    settings = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    assert (settings["threshold"], settings["abstain_label"], settings["abstained"]) == (threshold, None, 3)
    with pytest.raises(InputError, match="threshold 0 must be above 0 and at most 1"):
        MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS, threshold=0)
    with pytest.raises(InputError, match="abstain_label 'world' reads as the label 'World'"):
        MLMClassifier.from_pretrained(varied_model_dir, labels=NEWS, threshold=0.5, abstain_label="world")


# -----------------------------------------------------------------------------
# Bad input: one line naming the culprit, before the model loads


@pytest.mark.parametrize("flags, expected", [
    ([], "no label_map.json there"),
    (["--labels", "World,,Sports"], "--labels: label 2 is empty"),
    (["--labels", "World,Sports,World"], "'World' given more than once"),
    (["--labels", "World"], "at least two"),
    (["--labels", ",".join(f"L{i}" for i in range(21))], "21 labels, but this tokenizer writes only 20 letters (A-T) "
                                                         "as single tokens, so at most 20 labels fit"),
    (["--labels", "World,Sports", "--permutations", "3"], "--permutations 3 must be between 1 and the number of"),
    (["--labels", "World,Sports", "--permutations", "0"], "--permutations 0 must be a positive number"),
    (["--labels", "World,Sports", "--text_column", "body"], "no column 'body' (--text_column); its columns are 'text'"),
    (["--labels", "World,Sports", "--input", "missing.csv"], "--input missing.csv: no such file"),
    (["--labels", "World,Sports", "--input", "texts.txt"], "unknown format '.txt'"),
    (["--labels", "World,Sports", "--output", "{file}/out.jsonl"], "is a file, so nothing can be written under it"),
    (["--labels", "World,Sports", "--prompt_file", "{prompt}"], "must list them with {options}"),
    (["--labels", "World,Sports", "--chunk_rows", "0"], "--chunk_rows 0 must be a positive number"),
    (["--labels", "World,Sports", "--threshold", "1.5"], "--threshold 1.5 must be above 0 and at most 1"),
    (["--labels", "World,Sports", "--threshold", "nan"], "--threshold nan must be above 0 and at most 1"),
    (["--labels", "World,Sports", "--abstain_label", "unsure"], "--abstain_label 'unsure' needs --threshold"),
    (["--labels", "World,Sports", "--threshold", "0.6", "--abstain_label", "sports "],
     "--abstain_label 'sports ' reads as the label 'Sports'"),
])
def test_bad_zero_shot_input_names_the_culprit(tiny_model_dir, tmp_path, flags, expected):
    source = write(tmp_path / "in.jsonl", json.dumps({"text": "a red city"}) + "\n")
    prompt = write(tmp_path / "prompt.txt", "Text: {text}\nAnswer: [unused0] {label}")
    flags = [f.format(file=source, prompt=prompt) for f in flags]
    args = ["--model", tiny_model_dir, "--input", source, "--output", str(tmp_path / "out.jsonl"), *flags]
    with pytest.raises(InputError) as error:
        classify.main(args)
    assert expected in str(error.value)
    assert not os.path.exists(tmp_path / "out.jsonl")


@pytest.mark.parametrize("flags, expected", [
    (["--labels", "World,Sports"], "trained folder with its own label_map.json"),
    (["--prompt_file", "{prompt}"], "trained folder with its own prompt.txt"),
])
def test_a_trained_folder_keeps_its_own_labels_and_prompt(trained, tmp_path, flags, expected):
    folder, _ = trained
    source = write(tmp_path / "in.jsonl", json.dumps({"text": "a red city"}) + "\n")
    prompt = write(tmp_path / "p.txt", "T: {text} {options}\nAnswer: [unused0] {label}")
    flags = [f.format(prompt=prompt) for f in flags]
    with pytest.raises(InputError, match=re.escape(expected)):
        classify.main(["--model", folder, "--input", source, *flags])


def test_errors_print_one_line_and_exit_1_before_the_weights_load(tiny_model_dir, tmp_path):
    weightless = tmp_path / "weightless"  # garbage for weights: loading the model would fail loudly
    shutil.copytree(tiny_model_dir, weightless)
    (weightless / "model.safetensors").write_bytes(b"not a safetensors file")
    source = write(tmp_path / "in.csv", "body\na red city\n")
    done = run_classify("--model", str(weightless), "--labels", "World,Sports", "--input", source)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: in.csv: no column 'text' (--text_column); its columns are "
                                                "'body'".replace("in.csv", source)]
    trained_like = tmp_path / "half-trained"
    shutil.copytree(weightless, trained_like)
    write(trained_like / "label_map.json", json.dumps({"RED": "red", "BLUE": "blue"}))
    done = run_classify("--model", str(trained_like), "--input", source, "--text_column", "body")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: --model {trained_like}: has label_map.json but no prompt.txt; " \
                                  "train.py writes both"
