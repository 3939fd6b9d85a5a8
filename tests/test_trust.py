"""Inputs and outputs a user can trust: nothing the user brought is written over, no odd value becomes a wrong answer,
no result is replaced silently, editors' files just work, the API fails like the command line, Ctrl-C is not a crash.
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pandas
import pytest
from conftest import ENV, LABEL_MAP, PROMPT, REPO, base_args, color_rows, make_mmlu_dir, write, write_csv

import classify
import eval
from mlm_classifier import mmlu
import mlm_classifier as core
from mlm_classifier import cli, data
import train
from mlm_classifier import InputError, MLMClassifier


def error_of(main, args):
    """The InputError message of main(args); the test fails if main ends any other way."""
    with pytest.raises(InputError) as error:
        main(args)
    return str(error.value)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture()
def texts_csv(tmp_path):
    return write(tmp_path / "in.csv", "text\na red city\nthe blue river\n")


# -----------------------------------------------------------------------------
# Never destroy what the user brought


def spellings(path, tmp_path):
    """The same file named four ways: as given, relative with ./, absolute, and through a symlink."""
    link = tmp_path / "link.csv"
    link.symlink_to(path)
    relative = "./" + os.path.relpath(path)
    return [path, relative, os.path.abspath(path), str(link)]


@pytest.mark.parametrize("way", range(4))
def test_classify_never_writes_over_its_input(tiny_model_dir, texts_csv, tmp_path, monkeypatch, way):
    monkeypatch.chdir(tmp_path)
    before = open(texts_csv, encoding="utf-8").read()
    output = spellings(texts_csv, tmp_path)[way]
    message = error_of(classify.main, ["--model", tiny_model_dir, "--labels", "a,b", "--input", texts_csv,
                                       "--output", output])
    assert message.startswith(f"--output {output}: is --input {texts_csv}")
    assert open(texts_csv, encoding="utf-8").read() == before


def test_classify_never_writes_over_a_labels_file_or_a_folders_own_files(tiny_model_dir, trained, texts_csv,
                                                                         tmp_path):
    labels = write(tmp_path / "labels.txt", "World\nSports\n")
    assert "is --labels" in error_of(classify.main, ["--model", tiny_model_dir, "--labels", labels, "--input",
                                                     texts_csv, "--output", labels])
    predictions = os.path.join(trained[0], "predictions.jsonl")
    assert f"would replace {os.path.realpath(predictions)}, a file of --model" in error_of(
        classify.main, ["--model", trained[0], "--input", texts_csv, "--output", predictions])


def test_train_never_writes_over_its_model_or_inputs(tiny_model_dir, files, tmp_path):
    before = open(os.path.join(tiny_model_dir, "model.safetensors"), "rb").read()
    assert error_of(train.main, base_args(tiny_model_dir, files, tiny_model_dir)).startswith(
        f"--output_dir {tiny_model_dir}: is --model {tiny_model_dir}")
    assert open(os.path.join(tiny_model_dir, "model.safetensors"), "rb").read() == before
    run = tmp_path / "run"
    run.mkdir()
    label_map = write(run / "label_map.json", json.dumps(LABEL_MAP))  # what train.py would write there itself
    args = base_args(tiny_model_dir, {**files, "label_map": label_map}, run)
    assert "is --label_map" in error_of(train.main, args)


def test_eval_never_writes_over_a_model_folders_predictions(trained, tmp_path):
    root = make_mmlu_dir(tmp_path / "mmlu", per_subject=2)
    message = error_of(eval.main, ["--model", trained[0], "--data_dir", root, "--output_dir", trained[0]])
    assert "predictions.jsonl, a file of --model" in message


def test_two_outputs_in_one_folder_keep_a_record_each(tiny_model_dir, texts_csv, tmp_path):
    for name, permutations in (("preds.csv", "1"), ("preds.jsonl", "2")):
        classify.main(["--model", tiny_model_dir, "--labels", "a,b", "--input", texts_csv, "--no_progress",
                       "--output", str(tmp_path / name), "--permutations", permutations])
    assert json.loads((tmp_path / "preds.csv.settings.json").read_text())["permutations"] == 1
    assert json.loads((tmp_path / "preds.jsonl.settings.json").read_text())["permutations"] == 2


# -----------------------------------------------------------------------------
# Never turn a missing or odd value into a wrong answer


@pytest.mark.parametrize("name, make", [
    ("in.csv", lambda p: write(p, "text,id\na red city,1\n,2\n   ,3\nok,4\n")),
    ("in.jsonl", lambda p: write(p, "".join(json.dumps(r) + "\n" for r in [
        {"text": "a red city", "id": 1}, {"text": None, "id": 2}, {"text": " ", "id": 3}, {"text": "ok", "id": 4}]))),
    ("in.parquet", lambda p: pandas.DataFrame({"text": ["a red city", float("nan"), "", "ok"],
                                               "id": [1, 2, 3, 4]}).to_parquet(p)),
])
def test_rows_without_a_text_are_refused_by_row_or_labelled_null(tiny_model_dir, tmp_path, name, make):
    source = str(tmp_path / name)
    make(source)
    message = error_of(classify.main, ["--model", tiny_model_dir, "--labels", "a,b", "--input", source])
    assert message == (f"{source}: rows 1, 2 have no text in column 'text' (2 rows): a missing, empty or "
                       "white-space text")
    out = tmp_path / "out.jsonl"
    classify.main(["--model", tiny_model_dir, "--labels", "a,b", "--input", source, "--id_column", "id",
                   "--output", str(out), "--allow_empty_texts", "--no_progress"])
    records = read_jsonl(out)
    ids = ["1", "2", "3", "4"] if name.endswith(".csv") else [1, 2, 3, 4]  # a CSV cell is a text
    assert [(r["id"], r["label"] is None, r["probabilities"] is None) for r in records] == [
        (ids[0], False, False), (ids[1], True, True), (ids[2], True, True), (ids[3], False, False)]
    assert json.loads((tmp_path / "out.jsonl.settings.json").read_text())["without_text"] == 2


def test_ids_pass_through_by_one_rule_and_bytes_are_decoded(tiny_model_dir, tmp_path):
    source = str(tmp_path / "in.parquet")
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    pandas.DataFrame({"text": ["caf\u00e9 red".encode(), b"blue"], "id": [when, when]}).to_parquet(source)
    out = tmp_path / "out.jsonl"
    classify.main(["--model", tiny_model_dir, "--labels", "a,b", "--input", source, "--id_column", "id",
                   "--output", str(out), "--no_progress"])
    assert [(r["id"], r["text"]) for r in read_jsonl(out)] == [("2026-01-02T03:04:05", "caf\u00e9 red"),
                                                                ("2026-01-02T03:04:05", "blue")]
    pandas.DataFrame({"text": [b"\xff\xfe"]}).to_parquet(source)
    assert "row 0: column 'text' holds bytes that are not UTF-8 text" in error_of(
        classify.main, ["--model", tiny_model_dir, "--labels", "a,b", "--input", source])


@pytest.mark.parametrize("name, content", [
    ("in.jsonl", '{"text": "a", "id": ""}\n{"text": "b", "id": "x"}\n'),
    ("in.csv", "text,id\na,\nb,x\n"),
])
def test_an_empty_id_stays_empty(tiny_model_dir, tmp_path, name, content):
    source = write(tmp_path / name, content)
    out = tmp_path / "out.jsonl"
    classify.main(["--model", tiny_model_dir, "--labels", "a,b", "--input", source, "--id_column", "id",
                   "--output", str(out), "--no_progress"])
    assert [r["id"] for r in read_jsonl(out)] == ["", "x"]


def test_train_refuses_an_empty_text_naming_the_row(tiny_model_dir, files, tmp_path):
    rows = color_rows(20, 1)
    rows[7]["text"] = "   "
    train_file = write_csv(tmp_path / "train.csv", rows)
    message = error_of(train.main, base_args(tiny_model_dir, {**files, "train": train_file}, tmp_path / "out"))
    assert message == f"{train_file}: row 7 has no text in column 'text': a missing, empty or white-space text"


def test_eval_refuses_an_empty_subject_file(tiny_model_dir, tmp_path):
    root = make_mmlu_dir(tmp_path / "mmlu", per_subject=2)
    empty = write(tmp_path / "mmlu" / "test" / "virology_test.csv", "")
    assert error_of(eval.main, ["--model", tiny_model_dir, "--data_dir", root]).startswith(
        f"{empty}: no questions (the file is empty)")


def test_a_csv_header_naming_a_column_twice_is_refused(tiny_model_dir, tmp_path):
    source = write(tmp_path / "in.csv", "text,id,text\na,1,b\n")
    assert error_of(classify.main, ["--model", tiny_model_dir, "--labels", "a,b", "--input", source]) == (
        f"--input {source}: the header names 'text' more than once; rename the columns so that each is named once")


def test_a_label_map_repeating_a_key_is_refused(tiny_model_dir, files, tmp_path):
    label_map = write(tmp_path / "labels.json", '{"RED": "red", "GREEN": "green", "RED": "blue"}')
    assert error_of(train.main, base_args(tiny_model_dir, {**files, "label_map": label_map}, tmp_path / "o")) == (
        f"--label_map {label_map}: the key 'RED' is given more than once")


@pytest.mark.parametrize("value", ["labels.txt", "data/labels", "./missing.csv"])
def test_labels_that_look_like_a_missing_file_say_so(tiny_model_dir, texts_csv, value):
    assert error_of(classify.main, ["--model", tiny_model_dir, "--labels", value, "--input", texts_csv]) == (
        f"--labels {value}: no such file (a list of labels is written with commas: \"World,Sports\")")


def test_labels_that_differ_only_by_case_or_spaces_are_refused(tiny_model_dir, texts_csv, tmp_path):
    labels = write(tmp_path / "labels.txt", "World\nSports\nworld \n")
    expected = "'World' and 'world' differ only by case or surrounding spaces"
    assert expected in error_of(classify.main, ["--model", tiny_model_dir, "--labels", labels, "--input", texts_csv])
    with pytest.raises(ValueError, match="'World' and 'world ' differ only by case"):
        MLMClassifier.from_pretrained(tiny_model_dir, labels=["World", "Sports", "world "])


def test_max_length_beyond_the_models_positions_is_refused(tiny_model_dir, texts_csv):
    assert error_of(classify.main, ["--model", tiny_model_dir, "--labels", "a,b", "--input", texts_csv,
                                    "--max_length", "100000"]) == (
        f"--max_length 100000 is more than the 512 positions of --model {tiny_model_dir}")


# -----------------------------------------------------------------------------
# Never replace a result silently


def test_eval_keeps_each_settings_results_apart_and_refuses_to_mix_them(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = make_mmlu_dir(tmp_path / "mmlu", per_subject=2)
    common = ["--model", tiny_model_dir, "--data_dir", root, "--no_progress"]
    eval.main(common)
    eval.main(common + ["--permutations", "2", "--subjects", "virology"])
    name = os.path.basename(tiny_model_dir)
    assert sorted(os.listdir("results")) == [f"mmlu_test_{name}", f"mmlu_test_{name}_perm2_virology"]
    first = json.loads((tmp_path / "results" / f"mmlu_test_{name}" / "results.json").read_text())
    assert first["settings"]["permutations"] == 1 and first["n"] == 6
    message = error_of(eval.main, common + ["--permutations", "2", "--output_dir", f"results/mmlu_test_{name}"])
    assert "its results were made with other settings: permutations 1 (now 2)" in message
    eval.main(common + ["--sample", "3", "--seed", "1"])
    sampled = json.loads((tmp_path / "results" / f"mmlu_test_{name}_sample3-seed1" / "results.json").read_text())
    assert sampled["n"] == 3 and sampled["settings"]["sample"] == 3


def test_a_sample_is_drawn_across_subjects_and_limit_takes_the_first_of_each(tmp_path):
    root = make_mmlu_dir(tmp_path / "mmlu", per_subject=7)
    first = mmlu.load_questions("mmlu", root, "test", [], 2)
    sample = mmlu.load_questions("mmlu", root, "test", [], None, sample=7, seed=0)
    every = mmlu.load_questions("mmlu", root, "test", [], None)
    assert first == [q for q in every if q["row"] < 2] and len(first) == 6  # README's recipe: N of each subject
    assert len({q["subject"] for q in sample}) > 1 and sample == mmlu.load_questions("mmlu", root, "test", [], None,
                                                                                      sample=7, seed=0)


# -----------------------------------------------------------------------------
# Files from ordinary editors just work: a byte-order mark and CRLF line ends, everywhere


BOM = "\ufeff"


def test_bom_and_crlf_are_fine_in_every_file_a_training_run_reads(tiny_model_dir, tmp_path):
    rows = color_rows(40, 1)
    train_file = tmp_path / "train.csv"
    train_file.write_text(BOM + "text,label_text\r\n" + "".join(f"{r['text']},{r['label_text']}\r\n" for r in rows),
                          encoding="utf-8", newline="")
    label_map = write(tmp_path / "labels.json", BOM + json.dumps(LABEL_MAP))
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(BOM + PROMPT.replace("\n", "\r\n"), encoding="utf-8", newline="")
    data = {"train": str(train_file), "label_map": label_map, "prompt": str(prompt)}
    metrics = train.main(base_args(tiny_model_dir, data, tmp_path / "out", "--max_steps", "1"))
    assert metrics["global_step"] == 1
    assert (tmp_path / "out" / "prompt.txt").read_text() == PROMPT.rstrip() + "\n"  # the same prompt as LF


def test_bom_is_fine_in_labels_files_jsonl_json_and_mmlu_files(tiny_model_dir, tmp_path):
    labels = write(tmp_path / "labels.txt", BOM + "World\r\nSports\r\n")
    assert data.parse_labels(labels) == ["World", "Sports"]
    jsonl = write(tmp_path / "in.jsonl", BOM + '{"text": "a"}\r\n{"text": "b"}\r\n')
    assert core.read_table(jsonl, "--input")["text"] == ["a", "b"]
    as_json = write(tmp_path / "in.json", BOM + '[{"text": "a"}]')
    assert core.read_table(as_json, "--input")["text"] == ["a"]
    mmlu_file = tmp_path / "astronomy_test.csv"
    mmlu_file.write_text(BOM + "What?,a,b,c,d,B\r\n", encoding="utf-8", newline="")
    assert mmlu.read_mmlu_csv(str(mmlu_file), "astronomy")[0]["question"] == "What?"


# -----------------------------------------------------------------------------
# The notebook API fails like the command line


def test_the_api_refuses_one_string_of_labels(tiny_model_dir):
    with pytest.raises(ValueError, match=r"'pos,neg' is one string; give a list of labels, e.g. \['pos', 'neg'\]"):
        MLMClassifier.from_pretrained(tiny_model_dir, labels="pos,neg")


@pytest.mark.parametrize("texts, error, expected", [
    (42, TypeError, "texts must be a string or a list of strings, not int"),
    ([None, "text"], ValueError, r"texts\[0\] is missing \(None\)"),
    (["text", 7], TypeError, r"texts\[1\] is a int \(7\), not a string"),
    (pandas.Series(["a", float("nan")]), ValueError, r"texts\[1\] is missing \(nan\)"),
    (["a", "  "], ValueError, r"texts\[1\] is empty"),
])
def test_the_api_names_the_position_of_a_bad_text(tiny_model_dir, texts, error, expected):
    clf = MLMClassifier.from_pretrained(tiny_model_dir, labels=["a", "b"])
    with pytest.raises(error, match=expected):
        clf(texts)


# -----------------------------------------------------------------------------
# Ctrl-C is not a crash


def test_run_command_turns_an_interrupt_into_one_line_and_status_130(capsys):
    def interrupted():
        cli.on_interrupt("interrupted: what was kept, and how to resume")
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as done:
        cli.run_command(interrupted)
    assert done.value.code == 130
    assert capsys.readouterr().err == "interrupted: what was kept, and how to resume\n"
    cli.on_interrupt("interrupted: nothing written")


def test_ctrl_c_during_training_says_how_to_resume(tiny_model_dir, files, tmp_path):
    args = base_args(tiny_model_dir, files, tmp_path / "out", "--num_train_epochs", "50", "--save_strategy",
                     "steps", "--save_steps", "5")
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    for line in process.stdout:  # wait until training runs
        if line.startswith("objectives:"):
            break
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert (f"interrupted: no model saved; any checkpoint-<step>/ saved so far is under {tmp_path / 'out'}, from "
            "which the same command with --resume_from_checkpoint last carries on") in stderr.splitlines()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
