"""Streaming: inputs read a chunk at a time say what a whole-file read says; classify.py holds one chunk, writes as it
goes, and a run killed mid-way resumes to the very file an uninterrupted run writes, with one process or two."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ENV, REPO, color_rows, write

import classify
import mlm_classifier as core
from mlm_classifier import partial, stream

NEWS = ["World", "Sports", "Business", "Science"]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_table(path, rows):
    """`rows` (dicts) as the file format its name says."""
    import pandas

    path = str(path)
    if path.endswith(".csv"):
        pandas.DataFrame(rows).to_csv(path, index=False)
    elif path.endswith(".parquet"):
        pandas.DataFrame(rows).to_parquet(path, row_group_size=4)  # row groups that chunks cut across
    elif path.endswith(".json"):
        write(path, json.dumps(rows))
    else:
        write(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def whole_file_error(path, text_column="text", id_column=None):
    """The message of the whole-file read that classify.py did before it streamed (read_table, take_columns)."""
    with pytest.raises(core.InputError) as error:
        table = core.read_table(path, "--input")
        core.take_columns(table, path, text_column, id_column=id_column)
    return str(error.value)


def chunked_error(path, chunk_rows, text_column="text", id_column=None):
    with pytest.raises(core.InputError) as error:
        stream.check_input(path, "--input", text_column, id_column, chunk_rows=chunk_rows)
    return str(error.value)


# -----------------------------------------------------------------------------
# Reading a chunk at a time


@pytest.mark.parametrize("extension", ["csv", "jsonl", "json", "parquet"])
def test_chunks_hold_the_rows_of_a_whole_file_read(tmp_path, extension):
    rows = [{"text": f"text {i}, with a comma" if i % 3 else f"text {i}", "uid": f"u{i}"} for i in range(11)]
    path = write_table(tmp_path / f"t.{extension}", rows)
    whole = core.read_table(path, "--input")
    for chunk_rows in (1, 3, 5, 100):
        chunks = list(stream.TableChunks(path, "--input", chunk_rows, ["text", "uid"]))
        assert all(len(c.table["text"]) == c.size <= chunk_rows for c in chunks)
        assert [c.first_row for c in chunks] == list(range(0, 11, chunk_rows))
        assert [t for c in chunks for t in c.table["text"]] == whole["text"]
        assert [u for c in chunks for u in c.table["uid"]] == whole["uid"]
    passed_over = list(stream.TableChunks(path, "--input", 3, ["text"]).chunks(keep=lambda index: index == 2))
    assert [c.table is None for c in passed_over] == [True, True, False, True]
    assert passed_over[2].table["text"] == whole["text"][6:9] and passed_over[2].first_row == 6


def test_a_json_lines_chunk_keeps_line_numbers_and_a_key_that_comes_late(tmp_path):
    lines = [json.dumps({"uid": 0}), "", json.dumps({"uid": 1, "text": "late"}), json.dumps({"text": "b"})]
    path = write(tmp_path / "t.jsonl", "\ufeff" + "\n".join(lines) + "\n")
    chunks = list(stream.TableChunks(path, "--input", 2, ["text", "uid"]))
    assert [c.table for c in chunks] == [{"text": [None, "late"], "uid": [0, 1]}, {"text": ["b"], "uid": [None]}]
    write(tmp_path / "bad.jsonl", "\n".join(lines[:3] + ["{oops"]) + "\n")
    message = chunked_error(str(tmp_path / "bad.jsonl"), 2)
    assert message == whole_file_error(str(tmp_path / "bad.jsonl"))
    assert message.endswith("row 2 (line 4): not valid JSON (Expecting property name enclosed in double quotes)")


@pytest.mark.parametrize("name, content", [
    ("empty.jsonl", ""),
    ("latin1.jsonl", '{"text": "a"}\n{"text": "caf\xe9"}\n'.encode("latin-1")),
    ("bom-latin1.jsonl", b"\xef\xbb\xbf" + '{"text": "a"}\n{"text": "caf\xe9"}\n'.encode("latin-1")),
    ("list.jsonl", '{"text": "a"}\n["text"]\n'),
    ("nested.jsonl", "".join(json.dumps({"text": "t"}) + "\n" for _ in range(7)) + json.dumps({"text": {"a": 1}})),
    ("no-column.jsonl", "".join(json.dumps({"body": "t"}) + "\n" for _ in range(7))),
    ("some-empty.jsonl", "".join(json.dumps({"text": "" if i in (1, 4, 7, 8, 9, 11, 13) else "t"}) + "\n"
                                 for i in range(15))),
    ("one-empty.jsonl", "".join(json.dumps({"text": " " if i == 8 else "t"}) + "\n" for i in range(9))),
    ("no-column.csv", "body\n" + "t\n" * 7),
    ("twice.csv", "text,text\na,b\n"),
    ("unclosed.csv", "text\n" + "t\n" * 7 + '"unclosed\n'),
    ("some-empty.csv", "text,uid\n" + "".join(("" if i % 4 == 2 else "t") + f",{i}\n" for i in range(15))),
    ("no-id.csv", "text\nt\n"),
    ("parquet.parquet", "not parquet at all"),
    ("array.json", json.dumps([{"text": "t"}] * 5 + [{"text": None}] + [["not", "an", "object"]])),
    ("header-only.csv", "text\n"),
])
def test_the_checking_pass_says_what_a_whole_file_read_says(tmp_path, name, content):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(content.encode("utf-8") if isinstance(content, str) else content)
    id_column = "uid" if name == "no-id.csv" else None
    expected = ("--input " + path + ": no rows" if name == "header-only.csv"
                else whole_file_error(path, id_column=id_column))
    if name.endswith(".parquet"):  # pyarrow words the reason its own way per reader: the rest is the same
        expected = expected.split(" (")[0]
    for chunk_rows in (1, 3, 1000):
        message = chunked_error(path, chunk_rows, id_column=id_column)
        assert (message.split(" (")[0] if name.endswith(".parquet") else message) == expected, chunk_rows


def test_the_checking_pass_counts_rows_and_chunks(tmp_path):
    path = write_table(tmp_path / "t.parquet", [{"text": "t" if i % 5 else " "} for i in range(23)])
    summary = stream.check_input(path, "--input", "text", allow_empty=True, chunk_rows=10)
    assert (summary.rows, summary.chunk_sizes, summary.without_text) == (23, [10, 10, 3], 5)


# -----------------------------------------------------------------------------
# classify.py holds one chunk


def test_classify_scores_and_checks_one_chunk_at_a_time(tiny_model_dir, tmp_path, monkeypatch):
    path = write_table(tmp_path / "in.jsonl", [{"text": r["text"]} for r in color_rows(57, 7)])
    scored, checked = [], []
    probabilities, take_columns = core.MLMClassifier.probabilities, stream.take_columns
    monkeypatch.setattr(core.MLMClassifier, "probabilities",
                        lambda self, texts, *a, **k: scored.append(len(texts)) or probabilities(self, texts, *a, **k))
    monkeypatch.setattr(stream, "take_columns",
                        lambda table, *a, **k: checked.append(len(table["text"])) or take_columns(table, *a, **k))
    out = tmp_path / "out.jsonl"
    classify.main(["--model", tiny_model_dir, "--labels", ",".join(NEWS), "--input", path, "--output", str(out),
                   "--chunk_rows", "10", "--no_progress"])
    assert [n for n in checked if n] == [10] * 5 + [7]  # the checking pass (and its column check, of no rows)
    assert scored == [10] * 5 + [7]  # the scoring pass (and the content-free text is not scored: no --calibrate)
    assert [r["row"] for r in read_jsonl(out)] == list(range(57))
    settings = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    assert (settings["chunk_rows"], settings["n"], settings["resumed_rows"]) == (10, 57, 0)
    assert not [name for name in os.listdir(tmp_path) if ".partial" in name or ".tmp" in name]


def test_progress_counts_rows_out_of_the_total(tiny_model_dir, tmp_path):
    path = write_table(tmp_path / "in.csv", [{"text": r["text"]} for r in color_rows(23, 8)])
    done = subprocess.run([sys.executable, os.path.join(REPO, "classify.py"), "--model", tiny_model_dir, "--labels",
                           ",".join(NEWS), "--input", path, "--output", str(tmp_path / "out.csv"), "--chunk_rows", "5"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "classifying: 100%" in done.stderr and "23/23" in done.stderr and "rows/s" in done.stderr


# -----------------------------------------------------------------------------
# MLMClassifier.stream


def test_stream_takes_any_iterable_and_yields_in_order_a_chunk_at_a_time(tiny_model_dir, monkeypatch):
    clf = core.MLMClassifier.from_pretrained(tiny_model_dir, labels=NEWS)
    texts = [r["text"] for r in color_rows(23, 9)]
    expected = clf(texts)
    sizes = []
    probabilities = core.MLMClassifier.probabilities
    monkeypatch.setattr(core.MLMClassifier, "probabilities",
                        lambda self, texts, *a, **k: sizes.append(len(texts)) or probabilities(self, texts, *a, **k))
    streamed = list(clf.stream((text for text in texts), chunk_size=10))
    assert sizes == [10, 10, 3]
    assert [r["label"] for r in streamed] == [r["label"] for r in expected]
    for a, b in zip(streamed, expected):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    endless = (texts[k % len(texts)] for k in itertools.count())  # never ends: only a stream can label it
    assert len(list(itertools.islice(clf.stream(endless, chunk_size=4), 9))) == 9
    with pytest.raises(ValueError, match=r"texts\[12\] is empty"):
        list(clf.stream(texts[:12] + ["  "], chunk_size=5))
    with pytest.raises(TypeError, match="for one text, call the classifier"):
        clf.stream("one text")
    with pytest.raises(ValueError, match="chunk_size 0 must be a positive integer"):
        clf.stream(texts, chunk_size=0)


# -----------------------------------------------------------------------------
# Killed, interrupted, resumed


def classify_command(model, source, output, *extra):
    return [sys.executable, os.path.join(REPO, "classify.py"), "--model", model, "--labels", ",".join(NEWS),
            "--input", source, "--output", str(output), "--no_progress", "--permutations", "2", *extra]


def wait_for_rows(progress_paths, rows, process, timeout=120):
    """Wait until every progress record counts at least `rows` rows; fail if the run ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        counts = []
        for path in progress_paths:
            try:
                with open(path, encoding="utf-8") as f:
                    counts.append(json.load(f)["rows"])
            except (OSError, ValueError):
                counts.append(0)
        if min(counts) >= rows:
            return
        time.sleep(0.005)
    raise AssertionError("no progress")


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """3,000 rows with a few long ones, and one process's uninterrupted output of them in JSON lines and CSV."""
    return write_table(tmp_path_factory.mktemp("many") / "in.jsonl",
                       [{"text": r["text"], "uid": f"u{i}"} for i, r in enumerate(color_rows(3000, 10, long_every=97))])


def test_a_killed_run_resumes_to_the_file_an_uninterrupted_run_writes(tiny_model_dir, many, tmp_path):
    common = ["--chunk_rows", "20", "--id_column", "uid", "--max_length", "150"]
    done = subprocess.run(classify_command(tiny_model_dir, many, tmp_path / "whole.jsonl", *common), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "killed.jsonl"
    run = subprocess.Popen(classify_command(tiny_model_dir, many, out, *common), env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    wait_for_rows([f"{out}.partial.progress.json"], 100, run)
    run.kill()  # kill -9: no handler runs
    run.wait()
    assert not out.exists()  # a file under the output name is always complete
    with open(f"{out}.partial", "ab") as f:
        f.write(b'{"row": 12345, "te')  # a chunk torn by the kill
    refused = subprocess.run(classify_command(tiny_model_dir, many, out, *common), env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 1 and "--resume" in refused.stderr and "delete" in refused.stderr
    resumed = subprocess.run(classify_command(tiny_model_dir, many, out, *common, "--resume"), env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    settings = json.loads((tmp_path / "killed.jsonl.settings.json").read_text())
    assert settings["resumed_rows"] >= 100 and settings["n"] == 3000
    assert settings["truncated"] == json.loads((tmp_path / "whole.jsonl.settings.json").read_text())["truncated"] > 0
    assert sorted(os.listdir(tmp_path)) == ["killed.jsonl", "killed.jsonl.settings.json", "whole.jsonl",
                                            "whole.jsonl.settings.json"]


def test_sigterm_keeps_the_rows_and_says_how_to_resume_and_a_csv_resumes_whole(tiny_model_dir, many, tmp_path):
    whole, out = tmp_path / "whole.csv", tmp_path / "stopped.csv"
    assert subprocess.run(classify_command(tiny_model_dir, many, whole, "--chunk_rows", "30"), env=ENV,
                          capture_output=True, timeout=300).returncode == 0
    run = subprocess.Popen(classify_command(tiny_model_dir, many, out, "--chunk_rows", "30"), env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_rows([f"{out}.partial.progress.json"], 60, run)
    run.send_signal(signal.SIGTERM)
    stderr = run.communicate(timeout=60)[1]
    assert run.returncode == 130
    line, = stderr.strip().splitlines()
    assert line.startswith("interrupted: ") and f"of 3000 rows are kept in {out}.partial" in line and "--resume" in line
    resumed = subprocess.run(classify_command(tiny_model_dir, many, out, "--chunk_rows", "30", "--resume"), env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert out.read_bytes() == whole.read_bytes()
    assert out.read_bytes().count(b"row,text,label,") == 1  # the header once


def stopped_run(args, monkeypatch, after_chunks):
    """classify.main(args) stopped by Ctrl-C once `after_chunks` chunks are written, as a user would stop it."""
    append, calls = partial.Partial.append, []

    def append_then_stop(self, data, rows, *output):
        if len(calls) == after_chunks:
            raise KeyboardInterrupt
        calls.append(rows)
        append(self, data, rows, *output)

    with monkeypatch.context() as patch:
        patch.setattr(partial.Partial, "append", append_then_stop)
        with pytest.raises(KeyboardInterrupt):
            classify.main(args)
    return core.cli.INTERRUPTED["message"]


def test_an_unfinished_run_is_resumed_only_when_asked_and_with_the_same_settings(tiny_model_dir, tmp_path,
                                                                                 monkeypatch):
    source = write_table(tmp_path / "in.jsonl", [{"text": r["text"]} for r in color_rows(7, 11)])
    out, whole = tmp_path / "out.jsonl", tmp_path / "whole.jsonl"
    args = ["--model", tiny_model_dir, "--labels", ",".join(NEWS), "--input", source, "--chunk_rows", "3",
            "--no_progress"]
    classify.main(args + ["--output", str(whole)])
    args += ["--output", str(out)]
    assert stopped_run(args, monkeypatch, 1) == (f"interrupted: 3 of 7 rows are kept in {out}.partial; the same "
                                                 "command with --resume carries on from there")
    with pytest.raises(core.InputError) as error:
        classify.main(args)
    assert str(error.value) == (f"--output {out}: a run that did not finish left its rows in {out}.partial; add "
                                f"--resume to carry on from there, or delete {out}.partial* to start over")
    with pytest.raises(core.InputError) as error:
        classify.main(args + ["--resume", "--labels", "World,Sports,Business", "--permutations", "3",
                              "--threshold", "0.5"])
    message = str(error.value)
    assert message.startswith(f"--resume: {out}.partial was written with other settings: labels ['World', 'Sports', "
                              "'Business', 'Science'] (now ['World', 'Sports', 'Business']); permutations 1 (now 3); "
                              "threshold None (now 0.5). Resume with the settings it was started with")
    stat = os.stat(source)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as an editor saving the file would
    with pytest.raises(core.InputError, match=r"other settings: input_modified .* \(now .*\)\. Resume"):
        classify.main(args + ["--resume"])
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.path.getsize(f"{out}.partial") > 0 and not out.exists()  # refused: nothing touched
    classify.main(args + ["--resume"])
    assert out.read_bytes() == whole.read_bytes()
    with pytest.raises(core.InputError, match=f"there is no {out}.partial to carry on from, and {out} is there: its "
                                              r"run finished \(leave out --resume to label again\)"):
        classify.main(args + ["--resume"])


def test_a_run_stopped_before_its_first_chunk_leaves_nothing_in_the_way(tiny_model_dir, tmp_path, monkeypatch):
    source = write_table(tmp_path / "in.jsonl", [{"text": "a red city"}] * 3)
    args = ["--model", tiny_model_dir, "--labels", ",".join(NEWS), "--input", source, "--output",
            str(tmp_path / "out.jsonl"), "--no_progress"]
    assert stopped_run(args, monkeypatch, 0).startswith("interrupted: 0 of 3 rows are kept")
    classify.main(args + ["--permutations", "2"])  # no rows to keep: another run may start, with other settings
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 3
    os.remove(tmp_path / "out.jsonl")
    classify.main(args + ["--resume"])  # nothing to resume: from the first row
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 3


# -----------------------------------------------------------------------------
# torchrun


def children(pid):
    """The ids of the processes that `pid` started (torchrun starts each in a session of its own)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            os.path.join(REPO, "classify.py"), *args]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds torchrun's processes in /proc")
def test_torchrun_takes_every_other_chunk_resumes_per_process_and_writes_one_processs_file(tiny_model_dir, many,
                                                                                          tmp_path):
    common = ["--chunk_rows", "25", "--id_column", "uid", "--calibrate"]
    one = tmp_path / "one.jsonl"
    done = subprocess.run(classify_command(tiny_model_dir, many, one, *common), env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    two = tmp_path / "two.jsonl"
    run = subprocess.Popen(torchrun(*classify_command(tiny_model_dir, many, two, *common)[2:]), env=ENV, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_rows([f"{two}.partial.rank0.progress.json", f"{two}.partial.rank1.progress.json"], 50, run)
    for pid in [*children(run.pid), run.pid]:  # both processes and torchrun, at once, as a lost machine would
        os.kill(pid, signal.SIGKILL)
    run.wait()
    assert not two.exists() and os.path.exists(f"{two}.partial.rank1")
    single = subprocess.run(classify_command(tiny_model_dir, many, two, *common, "--resume"), env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 1 and "processes 2 (now 1)" in single.stderr
    resumed = subprocess.run(torchrun(*classify_command(tiny_model_dir, many, two, *common, "--resume")[2:]),
                             env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert two.read_bytes() == one.read_bytes()
    settings = json.loads((tmp_path / "two.jsonl.settings.json").read_text())
    assert settings["processes"] == 2 and settings["resumed_rows"] >= 100
    assert settings["content_free_probabilities"] == json.loads(
        (tmp_path / "one.jsonl.settings.json").read_text())["content_free_probabilities"]
    assert sorted(os.listdir(tmp_path)) == ["one.jsonl", "one.jsonl.settings.json", "two.jsonl",
                                            "two.jsonl.settings.json"]
