"""What a newcomer and an adversary found: concurrent runs, tampered state, odd objects, files that shift their
columns, results replaced without a word. Each class fails on the code before it was fixed."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy
import pandas
import pytest
from conftest import LABEL_MAP, base_args, color_rows, write, write_csv

import classify
import train
from mlm_classifier import InputError, MLMClassifier, partial
from mlm_classifier.lm_eval_tasks.mmlu_mask.utils import load_mmlu

NEWS = ["World", "Sports", "Business", "Science"]


def texts_file(path, n=12):
    return write(path, "".join(json.dumps({"text": row["text"]}) + "\n" for row in color_rows(n, 5)))


def classify_args(model, source, out, *extra):
    return ["--model", model, "--labels", ",".join(NEWS), "--input", source, "--output", str(out), "--no_progress",
            *extra]


@pytest.fixture(scope="module")
def clf(tiny_model_dir):
    return MLMClassifier.from_pretrained(tiny_model_dir, labels=NEWS, device="cpu")


# -----------------------------------------------------------------------------
# One run owns an output; a progress record that does not add up is refused; a failed write says what is kept


def test_a_live_runs_output_is_refused_and_a_killed_runs_lock_is_taken_over(tiny_model_dir, tmp_path):
    source, out = texts_file(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    write(f"{out}.lock", f"{os.uname().nodename} {os.getpid()}\n")  # this very process: alive
    with pytest.raises(InputError, match=rf"--output {out}: another run \(process {os.getpid()} on "):
        classify.main(classify_args(tiny_model_dir, source, out))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write(f"{out}.lock", f"{os.uname().nodename} {gone.pid}\n")  # a run killed before it could unlock
    classify.main(classify_args(tiny_model_dir, source, out))
    assert len(out.read_text().splitlines()) == 12 and not os.path.exists(f"{out}.lock")


@pytest.mark.parametrize("tamper, expected", [
    (lambda progress, data: ({}, data), "is not a progress record this script wrote"),
    (lambda progress, data: ({**progress, "rows": progress["rows"] + 3}, data), "counts 15 rows in 2 chunks"),
    (lambda progress, data: (progress, data[:-40]), "does not hold the"),
    (lambda progress, data: ({**progress, "ends": progress["ends"][::-1]}, data), "is not a progress record"),
])
def test_a_progress_record_that_does_not_add_up_with_its_partial_is_refused(tiny_model_dir, tmp_path, monkeypatch,
                                                                             tamper, expected):
    source, out = texts_file(tmp_path / "in.jsonl", 24), tmp_path / "out.jsonl"
    append, calls = partial.Partial.append, []

    def append_then_stop(self, *args):  # Ctrl-C once two chunks are written
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args)
        append(self, *args)

    monkeypatch.setattr(partial.Partial, "append", append_then_stop)
    with pytest.raises(KeyboardInterrupt):
        classify.main(classify_args(tiny_model_dir, source, out, "--chunk_rows", "6"))
    monkeypatch.undo()
    progress = json.loads((tmp_path / "out.jsonl.partial.progress.json").read_text())
    progress, data = tamper(progress, (tmp_path / "out.jsonl.partial").read_bytes())
    (tmp_path / "out.jsonl.partial").write_bytes(data)
    write(tmp_path / "out.jsonl.partial.progress.json", json.dumps(progress))
    with pytest.raises(InputError, match=expected):
        classify.main(classify_args(tiny_model_dir, source, out, "--chunk_rows", "6", "--resume"))


def test_a_write_that_fails_mid_run_keeps_the_rows_and_says_how_to_resume(tiny_model_dir, tmp_path, monkeypatch):
    source = texts_file(tmp_path / "in.jsonl", 18)
    whole, out = tmp_path / "whole.jsonl", tmp_path / "out.jsonl"
    classify.main(classify_args(tiny_model_dir, source, whole, "--chunk_rows", "6"))
    fsync, calls = os.fsync, []

    def full_disk(fd):  # the disk fills up while the second chunk's records are written
        if sys._getframe(1).f_code.co_name == "append":
            calls.append(fd)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full_disk)
        with pytest.raises(InputError, match=r"writing .*out\.jsonl\.partial failed \(\[Errno 28\] No space left on "
                                             r"device\); the 6 rows before it are kept there: make room, then run the "
                                             r"same command with --resume"):
            classify.main(classify_args(tiny_model_dir, source, out, "--chunk_rows", "6"))
    classify.main(classify_args(tiny_model_dir, source, out, "--chunk_rows", "6", "--resume"))
    assert out.read_bytes() == whole.read_bytes()


def test_an_output_under_a_link_to_nowhere_is_one_error_line(tiny_model_dir, tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(InputError, match="loop is a link that leads nowhere"):
        classify.main(classify_args(tiny_model_dir, texts_file(tmp_path / "in.jsonl"), tmp_path / "loop" / "o.jsonl"))


# -----------------------------------------------------------------------------
# Odd values and objects, named before any model loads or by position


def test_a_lone_surrogate_is_named_by_row_and_by_position(tiny_model_dir, tmp_path, clf):
    source = write(tmp_path / "in.jsonl", '{"text": "fine"}\n{"text": "bad \\ud800 text"}\n')
    with pytest.raises(InputError, match=r"in\.jsonl: row 1: column 'text' holds a lone surrogate"):
        classify.main(classify_args(tiny_model_dir, source, tmp_path / "o.jsonl"))
    with pytest.raises(ValueError, match=r"texts\[1\] is a lone surrogate"):
        clf(["fine", "bad \ud800 text"])


@pytest.mark.parametrize("threshold", ['"0.5"', "7", "true", "NaN", "0"])
def test_a_folders_threshold_that_is_no_probability_is_refused_when_the_folder_is_read(tiny_model_dir, tmp_path,
                                                                                      threshold):
    folder = tmp_path / "folder"
    shutil.copytree(tiny_model_dir, folder)
    write(folder / "label_map.json", json.dumps({"RED": "red", "BLUE": "blue"}))
    write(folder / "prompt.txt", "Text: {text}\nIs it {label}?\n{options}\nAnswer: [unused0] {answer}\n")
    write(folder / "classifier.json", f'{{"max_length": 64, "multi_label": true, "threshold": {threshold}}}')
    with pytest.raises(InputError, match=r"classifier\.json: threshold .* must be a number above 0 and at most 1"):
        MLMClassifier.from_pretrained(str(folder))


def test_numbers_of_any_real_type_are_thresholds_and_bool_and_nan_are_not(tiny_model_dir):
    from mlm_classifier.classifier import check_abstention

    for good in (numpy.float64(0.6), numpy.float32(0.5), 1, 0.25):
        check_abstention(good, None, NEWS)
    for bad in (True, float("nan"), numpy.float64("nan"), "0.5", 0, 1.5):
        with pytest.raises(InputError, match="must be above 0 and at most 1"):
            check_abstention(bad, None, NEWS)


def test_a_dataframe_is_classified_row_by_row_and_a_mapping_never_by_its_keys(clf):
    texts = ["the red city", "a market by the river", "the first team"]
    expected = clf(texts)
    assert clf(pandas.DataFrame({"id": [1, 2, 3], "text": texts})) == expected
    assert clf(pandas.Series(texts)) == expected
    assert list(clf.stream(pandas.DataFrame({"text": texts}), chunk_size=2)) == expected
    with pytest.raises(ValueError, match=r"the DataFrame has no column 'text'.* its columns are 'body'"):
        clf(pandas.DataFrame({"body": texts}))
    with pytest.raises(TypeError, match="stream takes an iterable of texts"):
        list(clf.stream({"text": "one", "other": "two"}))


def test_label_cells_that_are_objects_and_labels_asking_one_question_are_refused(tiny_model_dir, tmp_path):
    rows = [{"text": "a red b", "labels": ["RED"]}, {"text": "a blue b", "labels": {"BLUE": 1}}]
    train_file = write(tmp_path / "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    prompt = write(tmp_path / "p.txt", "Text: {text}\nIs it {label}?\n{options}\nAnswer: [unused0] {answer}\n")
    args = ["--model", tiny_model_dir, "--multi_label", "--train_file", train_file, "--label_column", "labels",
            "--prompt_file", prompt, "--output_dir", str(tmp_path / "out"), "--max_length", "64"]
    label_map = write(tmp_path / "map.json", json.dumps({"RED": "red", "BLUE": "blue"}))
    with pytest.raises(InputError, match=r"t\.jsonl: row 1: the labels in column 'labels' are \{'BLUE': 1\}"):
        train.main(args + ["--label_map", label_map])
    write(train_file, json.dumps(rows[0]) + "\n")
    same = write(tmp_path / "same.json", json.dumps({"RED": "red", "CRIMSON": "Red "}))
    with pytest.raises(InputError, match="labels 'RED' and 'CRIMSON' both ask about 'Red '"):
        train.main(args + ["--label_map", same])
    with pytest.raises(InputError, match="--label_separator is empty"):
        train.main(args + ["--label_map", label_map, "--label_separator", ""])


def test_a_harness_question_without_an_answer_is_refused_as_eval_py_refuses_it(tmp_path):
    pytest.importorskip("datasets")
    os.makedirs(tmp_path / "test")
    write(tmp_path / "test" / "astronomy_test.csv", "What is red?,a,b,c,d,\n")
    with pytest.raises(InputError, match=r"astronomy_test\.csv: row 0 \(line 1\): answer '' is not one of A, B, C, D"):
        load_mmlu("astronomy", data_dir=str(tmp_path))


# -----------------------------------------------------------------------------
# Files that would shift or drop rows


def test_a_csv_with_a_field_more_than_its_header_is_refused_by_row_and_line(tiny_model_dir, tmp_path, files):
    shifted = write(tmp_path / "in.csv", "text,source\nthe red city,reuters,\nthe sea,ap,\n")
    with pytest.raises(InputError, match=r"in\.csv: row 0 \(line 2\) has 3 fields, more than the header's 2"):
        classify.main(classify_args(tiny_model_dir, shifted, tmp_path / "o.jsonl"))
    rows = color_rows(20, 1)
    train_file = write(tmp_path / "train.csv", "text,label_text\n" + "".join(f"{r['text']},{r['label_text']},\n"
                                                                             for r in rows))
    with pytest.raises(InputError, match=r"train\.csv: row 0 \(line 2\) has 3 fields"):
        train.main(base_args(tiny_model_dir, {**files, "train": train_file}, tmp_path / "run"))


def test_a_white_space_line_of_a_one_column_csv_is_a_row_never_dropped(tiny_model_dir, tmp_path):
    source = write(tmp_path / "in.csv", "text\n   \nthe red city\n")
    with pytest.raises(InputError, match=r"row 0 has no text in column 'text'"):
        classify.main(classify_args(tiny_model_dir, source, tmp_path / "o.jsonl"))
    classify.main(classify_args(tiny_model_dir, source, tmp_path / "o.jsonl", "--allow_empty_texts"))
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["label"] is None for r in records] == [True, False]


# -----------------------------------------------------------------------------
# A result made with other settings is replaced only when asked


def test_an_output_made_otherwise_is_replaced_only_with_overwrite_and_its_settings_follow(tiny_model_dir, tmp_path):
    source, out = texts_file(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    classify.main(classify_args(tiny_model_dir, source, out, "--multi_label")[:3] + ["World,Sports,Science"]
                  + classify_args(tiny_model_dir, source, out, "--multi_label")[4:])
    before = out.read_bytes()
    with pytest.raises(InputError, match=r"out\.jsonl: it was written with other settings: labels \['World', "
                                         r"'Sports', 'Science'\] \(now \['World', 'Sports'\]\); multi_label True "):
        classify.main(["--model", tiny_model_dir, "--labels", "World,Sports", "--input", source, "--output", str(out),
                       "--no_progress"])
    assert out.read_bytes() == before  # untouched
    classify.main(classify_args(tiny_model_dir, source, out, "--multi_label")[:3] + ["World,Sports,Science"]
                  + classify_args(tiny_model_dir, source, out, "--multi_label")[4:])  # the same settings replace it
    classify.main(["--model", tiny_model_dir, "--labels", "World,Sports", "--input", source, "--output", str(out),
                   "--no_progress", "--overwrite_output"])
    settings = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    assert settings["labels"] == ["World", "Sports"] and not settings["multi_label"]
    assert all("label" in json.loads(line) for line in out.read_text().splitlines())


def test_a_trained_folder_is_replaced_only_with_overwrite_and_none_of_its_files_stay(tiny_model_dir, tmp_path, files):
    out = tmp_path / "run"
    small = write_csv(tmp_path / "small.csv", color_rows(32, 1))
    args = base_args(tiny_model_dir, {**files, "train": small}, out, "--max_steps", "2")
    train.main(args + ["--predict_file", files["predict"]])
    assert (out / "predictions.jsonl").exists()
    with pytest.raises(InputError, match=r"--output_dir .*run: holds an earlier run's .* add --overwrite_output_dir"):
        train.main(args)
    letters = write(tmp_path / "letters.json", json.dumps(dict(zip(LABEL_MAP, "ABCD"))))
    train.main(args + ["--overwrite_output_dir", "--label_map", letters])
    assert not (out / "predictions.jsonl").exists()  # the earlier run's file did not stay beside the new model
    assert json.loads((out / "label_map.json").read_text())["RED"] == "A"

