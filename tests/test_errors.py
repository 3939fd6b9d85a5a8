"""Bad input, as a new user and an adversarial tester would give it: one `error:` line naming the culprit, exit 1,
before any model loads; and the inputs that used to give silently wrong results."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ENV, LABEL_MAP, PROMPT, REPO, base_args, color_rows, make_mmlu_dir, write, write_csv

import classify
import eval
from mlm_classifier import mmlu
import mlm_classifier as core
from mlm_classifier import cli, recipes, table3
import sweep as table3_sweep
import sweep_20newsgroups as sweep
import train
from mlm_classifier import checkpoints


@pytest.fixture(scope="module")
def broken_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with garbage weights: any error reported from it came before the weights loaded."""
    path = tmp_path_factory.mktemp("broken") / "model"
    shutil.copytree(tiny_model_dir, path)
    (path / "model.safetensors").write_bytes(b"not safetensors")
    return str(path)


def error_of(main, args):
    """The InputError message of main(args); the test fails if main ends any other way."""
    with pytest.raises(core.InputError) as error:
        main(args)
    return str(error.value)


# -----------------------------------------------------------------------------
# The one-line promise, per script, from the command line


@pytest.mark.parametrize("script, args, expected", [
    ("eval.py", ["--limit", "0"], "error: --limit 0 must be a positive number"),
    ("train.py", ["--per_device_train_batch_size", "0"], "error: --per_device_train_batch_size 0 must be a positive"),
    ("classify.py", ["--input", "x.csv", "--device", "cuda"], "error: --device cuda: torch sees no GPU here"),
    ("sweep_20newsgroups.py", ["--epochs", "0"], "error: --epochs 0: every value must be a positive number"),
    ("sweep.py", ["--tasks", "mnli", "sst2", "--prompt_file", "p.txt"], "error: --prompt_file replaces one task's"),
    ("train.py", ["--learning_rate", "-1e-5"],
     "error: argument --learning_rate/--learning-rate: expected one argument"),
    ("eval.py", ["--no_such_flag"], "error: unrecognized arguments: --no_such_flag (see --help)"),
])
def test_each_script_prints_one_line_and_exits_1(script, args, expected):
    done = subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True, text=True,
                          env=ENV, timeout=120, cwd=REPO)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.strip().startswith(expected)


# -----------------------------------------------------------------------------
# Silently wrong before: the sweep resumed on runs made with other settings


def fake_finished_sweep(tmp_path, flags):
    """A sweep output folder whose one run finished with `flags`; returns the argv that made it."""
    argv = ["--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--head", "mlm",
            "--learning_rates", "1e-3", "--epochs", "1", "--model", str(tmp_path), *flags]
    args = cli.parse(sweep.build_parser(), argv)[0]
    run = table3.make_grid(["mlm"], args.learning_rates, [], args.epochs, args.seeds)[0]
    os.makedirs(tmp_path / "out" / run["name"])
    record = {**run, "settings": args.run_settings("mlm", sweep.RECIPE.prompt, sweep.RECIPE, args.data_dir),
              "validation_accuracy": 0.5, "test_accuracy": 0.5, "validation_macro_f1": 0.5, "test_macro_f1": 0.5,
              "minutes": 1.0}
    write(tmp_path / "out" / run["name"] / "metrics.json", json.dumps(record))
    return argv


@pytest.mark.parametrize("change, expected", [
    (["--max_length", "1024"], "max_length 4096 (now 1024)"),
    (["--strip_headers"], "strip_headers False (now True)"),
    (["--max_train_samples", "100"], "max_train_samples None (now 100)"),
    (["--effective_batch_size", "16"], "effective_batch_size 32 (now 16)"),
])
def test_a_sweep_refuses_to_resume_runs_made_with_other_settings(tiny_model_dir, tmp_path, change, expected):
    for name in ("config.json", "tokenizer.json", "model.safetensors"):  # a model folder that passes the checks
        shutil.copy(os.path.join(tiny_model_dir, name), tmp_path / name)
    argv = fake_finished_sweep(tmp_path, [])
    message = error_of(sweep.main, argv + change)
    assert "mlm_lr0.001_ep1_seed42 was run with other settings" in message and expected in message
    assert "another --output_dir" in message
    assert sweep.main(argv)  # the same settings resume: the run counts as finished, nothing loads


def test_sweep_grid_runs_repeated_points_once_and_refuses_empty_ones():
    runs = table3.make_grid(["mlm"], [1e-3, 0.001], [], [1, 1], [42, 42])
    assert [r["name"] for r in runs] == ["mlm_lr0.001_ep1_seed42"]
    with pytest.raises(core.InputError, match="--epochs 0: every value must be a positive number"):
        table3.make_grid(["mlm"], [1e-3], [], [0], [42])
    with pytest.raises(core.InputError, match="--learning_rates -1: every value must be a positive"):
        table3.make_grid(["mlm"], [-1.0], [], [1], [42])


def test_an_empty_metrics_file_left_by_a_crash_reruns_its_run(tmp_path, capsys):
    args = cli.parse(sweep.build_parser(), ["--output_dir", str(tmp_path), "--head", "mlm", "--learning_rates", "1e-3",
                                            "--epochs", "1"])[0]
    recorded = {"mlm": args.run_settings("mlm", sweep.RECIPE.prompt, sweep.RECIPE, args.data_dir)}
    runs = table3.make_grid(["mlm"], args.learning_rates, [], args.epochs, args.seeds)
    os.makedirs(tmp_path / runs[0]["name"])
    write(tmp_path / runs[0]["name"] / "metrics.json", "")
    assert table3.load_finished(str(tmp_path), runs, recorded) == {}
    assert "is empty or not a JSON object (left by a crash?); the run starts again" in capsys.readouterr().out
    write(tmp_path / runs[0]["name"] / "metrics.json", "[]")
    assert table3.load_finished(str(tmp_path), runs, recorded) == {}


# -----------------------------------------------------------------------------
# Silently wrong before: MMLU-Pro gold letters; and malformed MMLU-Pro records


def mmlu_pro_record(**change):
    record = {"question": "q", "options": ["a", "b", "c"], "answer": "B", "answer_index": 1, "category": "math"}
    record.update(change)
    return {k: v for k, v in record.items() if v is not ...}


@pytest.mark.parametrize("record, expected", [
    (mmlu_pro_record(answer="AB", answer_index=...), "answer 'AB' is not one letter of A, B, C"),
    (mmlu_pro_record(answer="", answer_index=...), "answer '' is not one letter of A, B, C"),
    (mmlu_pro_record(answer=1, answer_index=...), "answer 1 is not one letter of A, B, C"),
    (mmlu_pro_record(answer=..., answer_index=True), "answer_index True is not an integer in 0..2"),
    (mmlu_pro_record(answer=..., answer_index=1.0), "answer_index 1.0 is not an integer in 0..2"),
    (mmlu_pro_record(question=None), "`question` is None, not a non-empty string"),
    (mmlu_pro_record(category=7), "`category` is 7, not a non-empty string"),
    (mmlu_pro_record(options=["a", 2, "c"]), "every option must be a string"),
    (["not", "an", "object"], "a list, not a JSON object"),
])
def test_mmlu_pro_records_are_checked_strictly(tmp_path, record, expected):
    write(tmp_path / "test.jsonl", json.dumps(mmlu_pro_record()) + "\n" + json.dumps(record) + "\n")
    message = error_of(lambda _: mmlu.load_questions("mmlu_pro", str(tmp_path), "test", [], None), None)
    assert message.startswith(f"{tmp_path / 'test.jsonl'}: row 1 (line 2): ") and expected in message


# -----------------------------------------------------------------------------
# Output paths are checked before any model loads (eval threw a whole run away at the end)


def test_output_paths_that_cannot_be_written_stop_every_script_first(broken_model_dir, tmp_path, files):
    a_file = write(tmp_path / "a_file", "x")
    mmlu_dir = make_mmlu_dir(tmp_path / "mmlu")
    assert "is a file; give a folder" in error_of(eval.main, ["--model", broken_model_dir, "--data_dir", mmlu_dir,
                                                              "--output_dir", a_file])
    assert "is a file, so nothing can be written under it" in error_of(
        eval.main, ["--model", broken_model_dir, "--data_dir", mmlu_dir, "--output_dir", os.path.join(a_file, "x")])
    assert "is a file; give a folder" in error_of(train.main, base_args(broken_model_dir, files, a_file))
    assert "is a file, so nothing can be written under it" in error_of(
        sweep.main, ["--model", broken_model_dir, "--output_dir", os.path.join(a_file, "sweep")])
    source = write(tmp_path / "in.jsonl", json.dumps({"text": "a"}) + "\n")
    assert "is a folder" in error_of(classify.main, ["--model", broken_model_dir, "--labels", "a,b", "--input", source,
                                                     "--output", str(tmp_path)])


# -----------------------------------------------------------------------------
# Unreadable files and malformed records name the file (and the row)


@pytest.mark.parametrize("content, expected", [
    (b"text,label_text\n", "no rows"),
    (b"", "the file is empty"),
    ("text,label_text\ncaf\xe9 red,RED\n".encode("latin-1"), "not UTF-8"),
])
def test_train_files_that_cannot_be_read_name_the_file(broken_model_dir, tmp_path, files, content, expected):
    bad = tmp_path / "train.csv"
    bad.write_bytes(content)
    message = error_of(train.main, base_args(broken_model_dir, {**files, "train": str(bad)}, tmp_path / "out"))
    assert str(bad) in message and expected in message


@pytest.mark.parametrize("name, content, expected", [
    ("train.json", '[{"text": "a red b", "label_text": "RED"},', "not valid JSON"),
    ("train.jsonl", '{"text": "a red b", "label_text": "RED"}\n{"text": oops}\n', "row 1 (line 2): not valid JSON"),
    ("train.parquet", "PAR1 but not really", "cannot be read as parquet"),
])
def test_train_json_and_parquet_that_cannot_be_read_name_the_file(broken_model_dir, tmp_path, files, name, content,
                                                                  expected):
    bad = write(tmp_path / name, content)
    message = error_of(train.main, base_args(broken_model_dir, {**files, "train": bad}, tmp_path / "out"))
    assert bad in message and expected in message


def test_label_map_prompt_and_mmlu_files_that_are_not_utf8_name_the_file(broken_model_dir, tmp_path, files):
    latin1 = "caf\xe9".encode("latin-1")
    (tmp_path / "labels.json").write_bytes(b'{"RED": "' + latin1 + b'"}')
    (tmp_path / "prompt.txt").write_bytes(latin1 + b" {text} [unused0] {label}")
    assert "labels.json: not UTF-8 text (line 1" in error_of(
        train.main, base_args(broken_model_dir, {**files, "label_map": str(tmp_path / "labels.json")}, tmp_path / "o"))
    assert "prompt.txt: not UTF-8 text" in error_of(
        train.main, base_args(broken_model_dir, {**files, "prompt": str(tmp_path / "prompt.txt")}, tmp_path / "o"))
    root = make_mmlu_dir(tmp_path / "mmlu")
    with open(os.path.join(root, "test", "virology_test.csv"), "ab") as f:
        f.write(latin1 + b",a,b,c,d,A\n")
    assert "virology_test.csv: not UTF-8 text (line 9" in error_of(eval.main, ["--model", broken_model_dir,
                                                                               "--data_dir", root])


@pytest.mark.parametrize("line, expected", [
    ({"text": None, "label_text": "sci.space"}, "row 1 (line 2): `text` is None, not a string"),
    ({"text": "x", "label_text": None}, "row 1 (line 2): `label_text` None is not one of the 20 newsgroups"),
    ("just a string", "row 1 (line 2): a str, not a JSON object"),
])
def test_newsgroups_records_are_checked(tmp_path, line, expected):
    good = {"text": "a post", "label_text": "sci.space"}
    for split in ("train", "test"):
        write(tmp_path / f"{split}.jsonl", json.dumps(good) + "\n" + json.dumps(line) + "\n")
    message = error_of(lambda _: recipes.load_rows(sweep.RECIPE, str(tmp_path), False), None)
    assert "train.jsonl" in message and expected in message


def test_sweep_data_that_is_not_there_is_named(tmp_path):
    assert "--data_dir /no/such/dir: no such folder" in error_of(
        lambda _: recipes.load_rows(sweep.RECIPE, "/no/such/dir", False), None)
    write(tmp_path / "train.jsonl", json.dumps({"text": "a", "label_text": "sci.space"}) + "\n")
    assert f"{tmp_path / 'test.jsonl'}: no such file" in error_of(
        lambda _: recipes.load_rows(sweep.RECIPE, str(tmp_path), False), None)


# -----------------------------------------------------------------------------
# Models and the hub


@pytest.mark.parametrize("make, expected", [
    (lambda root: str(root / "no-such-folder"), "no such folder (a hub model is named as org/name)"),
    (lambda root: write(root / "file-not-folder", "x"), "no such folder"),
    (lambda root: str(root), "the folder has no config.json, no tokenizer files, no weights"),
])
def test_model_folders_that_cannot_serve_are_named(tmp_path, files, make, expected):
    model = make(tmp_path)
    source = write(tmp_path / "in.jsonl", json.dumps({"text": "a"}) + "\n")
    for main, args in ((train.main, base_args(model, files, tmp_path / "out")),
                       (eval.main, ["--model", model, "--data_dir", make_mmlu_dir(tmp_path / "mmlu")]),
                       (classify.main, ["--model", model, "--labels", "a,b", "--input", source]),
                       (sweep.main, ["--model", model, "--head", "mlm", "--output_dir", str(tmp_path / "sweep")])):
        assert expected in error_of(main, args), main.__module__


def test_hub_names_that_cannot_be_reached_say_what_to_do(tmp_path, files):
    # conftest sets HF_HUB_OFFLINE and HF_DATASETS_OFFLINE: the hub cannot serve anything here.
    source = write(tmp_path / "in.jsonl", json.dumps({"text": "a"}) + "\n")
    model_error = error_of(classify.main, ["--model", "no-org/no-model", "--labels", "a,b", "--input", source])
    assert "--model no-org/no-model: not a local folder, and the model hub cannot serve it" in model_error
    assert "give a local folder" in model_error
    train_error = error_of(train.main, ["--model", "no-org/no-model", "--output_dir", str(tmp_path / "out")])
    assert "--dataset SetFit/ag_news: the dataset hub cannot serve it" in train_error and "--train_file" in train_error
    assert "give local files with --data_dir" in error_of(eval.main, ["--model", "no-org/no-model", "--limit", "5"])
    newsgroups = tmp_path / "newsgroups"
    os.makedirs(newsgroups)
    for split in ("train", "test"):
        write(newsgroups / f"{split}.jsonl", "".join(json.dumps({"text": f"post {i}", "label_text": name}) + "\n"
                                                     for i, (name, _) in enumerate(recipes.NEWSGROUPS * 3)))
    cls_error = error_of(sweep.main, ["--head", "cls", "--cls_model", "no-org/no-model", "--data_dir", str(newsgroups),
                                      "--output_dir", str(tmp_path / "sweep"), "--validation_fraction", "0.34"])
    assert "--cls_model no-org/no-model: not a local folder, and the model hub cannot serve it" in cls_error


# -----------------------------------------------------------------------------
# Flags, checked before anything loads


@pytest.mark.parametrize("flags, expected", [
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0 must be a positive number"),
    (["--gradient_accumulation_steps", "-1"], "--gradient_accumulation_steps -1 must be a positive number"),
    (["--pad_to_multiple_of", "0"], "--pad_to_multiple_of 0 must be a positive number"),
    (["--max_batch_tokens", "0"], "--max_batch_tokens 0 must be a positive number"),
    (["--learning_rate=-1e-5"], "--learning_rate -1e-05 must be a positive number"),
    (["--max_train_samples", "0"], "--max_train_samples 0 must be a positive number"),
    (["--max_eval_samples", "-1"], "--max_eval_samples -1 must be a positive number"),
    (["--max_steps", "0"], "--max_steps 0 must be a positive number, or -1"),
    (["--num_train_epochs", "0"], "--num_train_epochs 0.0 must be a positive number"),
    (["--validation_fraction", "0.9999"], "leaves no rows to train on"),
    (["--validation_fraction", "0.002"], "holds out 1 of 600 rows, fewer than the 4 labels"),
    (["--resume_from_checkpoint", "/no/such/checkpoint"], "--resume_from_checkpoint /no/such/checkpoint: no such"),
    (["--max_length", "100000"], "--max_length 100000 is more than the 512 positions"),
])
def test_train_flags_out_of_range_are_named(tiny_model_dir, tmp_path, files, flags, expected):
    assert expected in error_of(train.main, base_args(tiny_model_dir, files, tmp_path / "out", *flags))
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("flags, expected", [
    (["--limit", "0"], "--limit 0 must be a positive number"),
    (["--limit", "-1"], "--limit -1 must be a positive number"),
    (["--batch_tokens", "0"], "--batch_tokens 0 must be a positive number"),
    (["--pad_to_multiple_of", "-8"], "--pad_to_multiple_of -8 must be a positive number"),
    (["--device", "cuda"], "--device cuda: torch sees no GPU here"),
    (["--device", "gpu"], "--device gpu: not a device"),
])
def test_eval_flags_out_of_range_are_named(broken_model_dir, tmp_path, flags, expected):
    root = make_mmlu_dir(tmp_path / "mmlu")
    assert expected in error_of(eval.main, ["--model", broken_model_dir, "--data_dir", root, *flags])


def test_empty_verbalizer_is_an_error(tiny_model_dir, tmp_path, files):
    labels = write(tmp_path / "labels.json", json.dumps({**LABEL_MAP, "RED": ""}))
    assert "the verbalizer of 'RED' is empty" in error_of(
        train.main, base_args(tiny_model_dir, {**files, "label_map": labels}, tmp_path / "out"))


# -----------------------------------------------------------------------------
# Resuming: `last` finds the newest complete checkpoint, and train_loss covers the whole run


def test_last_checkpoint_skips_a_half_written_one(tmp_path, capsys):
    for step, names in ((10, checkpoints.CHECKPOINT_FILES + ("model.safetensors",)), (20, ("trainer_state.json",))):
        os.makedirs(tmp_path / f"checkpoint-{step}")
        for name in names:
            write(tmp_path / f"checkpoint-{step}" / name, "{}")
    for step in (10, 20):  # checkpoint-20 has its state but nothing else: half-written
        write(tmp_path / f"checkpoint-{step}" / "trainer_state.json", f'{{"global_step": {step}}}')
    assert checkpoints.resolve_checkpoint("last", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert "skipping" in capsys.readouterr().out
    os.makedirs(tmp_path / "checkpoint-30")  # complete but for a trainer_state.json cut short by a crash
    for name in checkpoints.CHECKPOINT_FILES + ("model.safetensors",):
        write(tmp_path / "checkpoint-30" / name, "{}")
    write(tmp_path / "checkpoint-30" / "trainer_state.json", '{"global_st')
    assert checkpoints.resolve_checkpoint("last", str(tmp_path)) == str(tmp_path / "checkpoint-10")
    assert "lacks a readable trainer_state.json" in error_of(
        lambda _: checkpoints.resolve_checkpoint(str(tmp_path / "checkpoint-30"), str(tmp_path)), None)
    message = error_of(lambda _: checkpoints.resolve_checkpoint(str(tmp_path / "checkpoint-20"), str(tmp_path)), None)
    assert "lacks optimizer.pt, scheduler.pt, the model weights, so it was not finished" in message
    assert "does not exist yet" in error_of(lambda _: checkpoints.resolve_checkpoint("last", str(tmp_path / "x")), None)


def test_a_resumed_run_reports_the_whole_runs_training_loss(tiny_model_dir, tmp_path):
    data = {"train": write_csv(tmp_path / "train.csv", color_rows(200, 5)),
            "label_map": write(tmp_path / "labels.json", json.dumps(LABEL_MAP)),
            "prompt": write(tmp_path / "prompt.txt", PROMPT)}
    steps = ["--max_steps", "20", "--save_strategy", "steps", "--save_steps", "10", "--save_total_limit", "2",
             "--logging_steps", "5"]
    whole = train.main(base_args(tiny_model_dir, data, tmp_path / "whole", *steps, "--keep_checkpoints"))
    shutil.rmtree(tmp_path / "whole" / "checkpoint-20")  # as if the run had stopped after step 10
    resumed = train.main(base_args(tiny_model_dir, data, tmp_path / "whole", *steps,
                                   "--resume_from_checkpoint", "last"))
    assert resumed["resumed_from_step"] == 10 and resumed["global_step"] == 20
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=0.02)


def test_trainers_loss_after_a_resume_is_read_by_its_versions_convention():
    # 30 steps in all, resumed after step 10: before transformers 5.19, Trainer divided the last 20 steps' sum by 30
    assert checkpoints.loss_since_resume(1.0, 10, 30, "5.18.0") == pytest.approx(1.5)
    assert checkpoints.loss_since_resume(1.5, 10, 30, "5.19.0") == 1.5
    assert checkpoints.loss_since_resume(1.5, None, 30, "5.17.0") == 1.5


# -----------------------------------------------------------------------------
# --help and docs/ agree


SCRIPTS = {"eval.py": eval.build_parser, "train.py": train.build_parser, "classify.py": classify.build_parser,
           "sweep.py": table3_sweep.build_parser, "sweep_20newsgroups.py": sweep.build_parser}
HARNESS_FLAGS = {"--model_args", "--tasks", "--metadata", "--include_path", "--num_fewshot", "--limit",
                 "--apply_chat_template", "--batch_size", "--device", "--output_path", "--log_samples", "--config",
                 "--nproc_per_node", "--standalone", "--index-url", "--system-site-packages", "--no-build-isolation"}  # torchrun, pip


def test_docs_name_only_flags_that_exist():
    """--help is the flag reference; the pages explain. A flag a page names must be one some script takes (or the
    harness CLI's), so that a renamed or removed flag cannot live on in the docs."""
    import re

    flags = set(HARNESS_FLAGS)
    for build in SCRIPTS.values():
        flags |= {option for action in build()._actions for option in action.option_strings}
    pages = set(os.listdir(os.path.join(REPO, "docs"))) - {"benchmarks.md"} | {"../README.md"}  # not the benches'
    for page in pages:
        text = open(os.path.join(REPO, "docs", page), encoding="utf-8").read()
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z_-]*[a-z]", text))
        assert named <= flags, (page, sorted(named - flags))


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_each_default_once_and_takes_hyphens(script):
    parser = SCRIPTS[script]()
    for action in parser._actions:
        if not action.option_strings or action.help == "==SUPPRESS==":
            continue
        shown = parser._get_formatter()._expand_help(action) if action.help else ""
        assert shown.lower().count("default") <= 1, action.option_strings
        if action.default is not None and action.default is not False and action.dest != "help":  # 0 shows too
            assert "default" in shown.lower(), action.option_strings  # every real default is shown
        long = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
        for option in long:
            if "_" in option:
                assert option.replace("_", "-") in action.option_strings, option


def test_a_trained_folders_own_files_are_checked(trained, tmp_path):
    folder = tmp_path / "folder"
    shutil.copytree(trained[0], folder)
    source = write(tmp_path / "in.jsonl", json.dumps({"text": "a red city"}) + "\n")
    write(folder / "classifier.json", '{"max_length": "48"}')
    assert "classifier.json: needs a positive integer max_length" in error_of(
        classify.main, ["--model", str(folder), "--input", source])
    write(folder / "classifier.json", "{")
    assert "classifier.json: not valid JSON" in error_of(classify.main, ["--model", str(folder), "--input", source])


def test_labels_file_and_texts_of_the_wrong_kind_are_named(tiny_model_dir, tmp_path):
    (tmp_path / "labels.txt").write_bytes("caf\xe9\nbar\n".encode("latin-1"))
    source = write(tmp_path / "in.jsonl", json.dumps({"text": {"nested": "x"}}) + "\n")
    assert "labels.txt: not UTF-8 text" in error_of(
        classify.main, ["--model", tiny_model_dir, "--labels", str(tmp_path / "labels.txt"), "--input", source])
    assert "row 0: column 'text' holds a dict, not a text" in error_of(
        classify.main, ["--model", tiny_model_dir, "--labels", "a,b", "--input", source])
