"""sweep_20newsgroups.py: a two-run micro grid on generated files, resuming, and choosing on validation only."""

import csv
import json
import os
import random

import pytest
from conftest import WORDS, build_tiny_modernbert

import mlm_classifier as mc
from mlm_classifier import cli, prompts, recipes, table3
import sweep_20newsgroups as sweep

POST = ("From: someone@example.com\nSubject: {subject}\nLines: 9\n\n{body}\n"
        "In article <1@x.org> other@x.org writes:\n> a quoted reply\n\n--\nSignature Line {name}")


def write_newsgroups(path, n, seed):
    """A 20 Newsgroups-style JSONL file (text, label, label_text), every group present, headers and all."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            label = i % 20
            name = recipes.NEWSGROUPS[label][0]
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
            text = POST.format(subject=f"post {i}", body=body, name=name)
            f.write(json.dumps({"text": text, "label": label, "label_text": name}) + "\n")


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """A tiny ModernBERT with room for the 20-option prompt (about 990 tokens in the tiny vocabulary), and data."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("sweep")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.model_max_length = 1280
    build_tiny_modernbert(str(root / "model"), tokenizer, max_position_embeddings=1280)
    write_newsgroups(root / "train.jsonl", 60, seed=1)
    write_newsgroups(root / "test.jsonl", 40, seed=2)
    return root


def micro_grid(root, model, *extra):
    return ["--model", model, "--cls_model", model, "--data_dir", str(root), "--strip_headers",
            "--output_dir", str(root / "out"), "--learning_rates", "1e-3", "--cls_learning_rates", "1e-3",
            "--epochs", "1", "--max_length", "1280", "--per_device_train_batch_size", "4",
            "--effective_batch_size", "8", "--validation_fraction", "0.34", *extra]


def test_default_prompt_is_the_published_one_character_for_character():
    # The published sweep's newsgroup_template for a post about cars (label H), written out here in full.
    template = mc.parse_prompt(sweep.RECIPE.prompt)
    text = table3.to_splits({"test": [{"text": "  My brakes squeal when it rains.\n\n", "label_text": "rec.autos"}]},
                            template, sweep.RECIPE)
    filled, _ = prompts.fill_template(template, text["test"].texts[0], sweep.RECIPE.label_map["rec.autos"], "")
    assert filled == (
        "** Instructions **    \n"
        "Given a short post from an online forum, determine which newsgroup category it belongs to.\n"
        "** Content **\n"
        "My brakes squeal when it rains.\n"
        "What's the category of the post above?\n"
        "** Options **\n"
        "A: alt.atheism, Discussion of atheism and criticism of religion\n"
        "B: comp.graphics, Computer graphics, rendering, and visualization\n"
        "C: comp.os.ms-windows.misc, General Microsoft Windows topics and issues\n"
        "D: comp.sys.ibm.pc.hardware, IBM PC compatible hardware and components\n"
        "E: comp.sys.mac.hardware, Apple Macintosh hardware and components\n"
        "F: comp.windows.x, X Window System software and configuration\n"
        "G: misc.forsale, General marketplace for selling items\n"
        "H: rec.autos, Cars, automotive repair and motorsports\n"
        "I: rec.motorcycles, Motorcycles, riding and maintenance\n"
        "J: rec.sport.baseball, Baseball discussion and news\n"
        "K: rec.sport.hockey, Hockey discussion and news\n"
        "L: sci.crypt, Cryptography and data security\n"
        "M: sci.electronics, Electronics and electrical engineering\n"
        "N: sci.med, Medicine, health and medical science\n"
        "O: sci.space, Space exploration and astronomy\n"
        "P: soc.religion.christian, Christianity-specific religious discussion\n"
        "Q: talk.politics.guns, Gun politics and firearm regulations\n"
        "R: talk.politics.mideast, Middle East politics and current events\n"
        "S: talk.politics.misc, General political discussion and debate\n"
        "T: talk.religion.misc, General religious discussion across faiths\n"
        "** Answer **\n"
        "Answer: [unused0] H"
    )


def test_micro_grid_runs_both_heads_writes_summaries_and_resumes(setup, capsys, monkeypatch):
    out = setup / "out"
    finished = sweep.main(micro_grid(setup, str(setup / "model")))
    assert sorted(finished) == ["cls_lr0.001_ep1_seed42", "mlm_lr0.001_ep1_seed42"]
    for name in finished:
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert 0 <= metrics["validation_accuracy"] <= 1 and 0 <= metrics["test_accuracy"] <= 1
        assert metrics["validation_n"] == 21 and metrics["test_n"] == 40  # stratified 34% of 60; all of test
        assert metrics["gradient_accumulation_steps"] == 2 and metrics["effective_batch_size"] == 8
        assert "headers, signatures and quotes removed" in metrics["text"]
        assert not (out / name / "model").exists()  # weights only with --save_models
        if name.startswith("mlm"):  # the prompt defines an MLM head run, so it is recorded with it
            assert metrics["settings"]["prompt"] == sweep.RECIPE.prompt and metrics["prompt_source"] == sweep.RECIPE.prompt_source
        else:
            assert "prompt" not in metrics  # the classification head reads the raw text
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["head"], r["selected"]) for r in rows] == [("mlm", "True"), ("cls", "True")]
    markdown = (out / "summary.md").read_text()
    assert "| MLM head |" in markdown and "| classification head |" in markdown and "**(selected)**" in markdown
    assert f"MLM head prompt: {sweep.RECIPE.prompt_source}" in markdown and sweep.RECIPE.prompt in markdown
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second call finds every run finished and returns before loading any data or model (the data files
    # are moved away); under two processes the accumulation steps halve, and the settings stay the same.
    capsys.readouterr()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("train.jsonl", "test.jsonl"):
        os.rename(setup / name, setup / f"{name}.away")
    try:
        again = sweep.main(micro_grid(setup, str(setup / "model")))
    finally:
        for name in ("train.jsonl", "test.jsonl"):
            os.rename(setup / f"{name}.away", setup / name)
    assert again == {name: json.loads((out / name / "metrics.json").read_text()) for name in finished}
    assert "2 already finished; 2 process(es), 4 per device x 1 accumulation steps" in capsys.readouterr().out


def test_prompt_file_replaces_the_prompt_is_kept_with_the_model_and_guards_resuming(setup, tmp_path):
    prompt = "Post: {text}\nNewsgroups:\n{options}\nAnswer: [unused0] {label}\n"
    (tmp_path / "prompt.txt").write_text(prompt)
    grid = micro_grid(setup, str(setup / "model"), "--head", "mlm", "--save_models",
                      "--output_dir", str(tmp_path / "out"),
                      "--max_train_samples", "8", "--max_eval_samples", "8")
    finished = sweep.main(grid + ["--prompt_file", str(tmp_path / "prompt.txt")])
    run = tmp_path / "out" / "mlm_lr0.001_ep1_seed42"
    metrics = finished["mlm_lr0.001_ep1_seed42"]
    assert metrics["settings"]["prompt"] == prompt.rstrip()
    assert metrics["prompt_source"] == f"--prompt_file {tmp_path / 'prompt.txt'}"
    assert (run / "model" / "prompt.txt").read_text() == prompt.rstrip() + "\n"  # the run's folder answers as trained
    card = (run / "model" / "README.md").read_text()  # its fill-mask snippet holds the filled template as JSON
    assert json.dumps("- A: alt.atheism\n- B: comp.graphics")[1:-1] in card  # train.py's {options} lines
    assert f"MLM head prompt: --prompt_file {tmp_path / 'prompt.txt'}" in (tmp_path / "out" / "summary.md").read_text()
    # Resuming under the default prompt would mix two settings in one grid: refused before anything loads.
    with pytest.raises(mc.InputError, match=r"mlm_lr0\.001_ep1_seed42 was run with other settings: prompt 'Post: "):
        sweep.main(grid)


def test_accumulation_steps_follow_the_process_count():
    assert [table3.accumulation_steps(32, 8, n) for n in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(mc.InputError, match="--effective_batch_size 32 is not a multiple of "
                                            "--per_device_train_batch_size 8 x 3 processes"):
        table3.accumulation_steps(32, 8, 3)


def test_runs_are_chosen_on_validation_never_on_test():
    runs = table3.make_grid(["mlm"], [2e-5, 3e-5], [], [1], [42])
    finished = {
        runs[0]["name"]: {"validation_accuracy": 0.80, "test_accuracy": 0.50, "validation_macro_f1": 0.8,
                          "test_macro_f1": 0.5, "minutes": 1.0},
        runs[1]["name"]: {"validation_accuracy": 0.70, "test_accuracy": 0.95, "validation_macro_f1": 0.7,
                          "test_macro_f1": 0.9, "minutes": 1.0},
    }
    assert table3.select_best(runs, finished) == {"mlm": runs[0]["name"]}
    assert [r["selected"] for r in table3.summary_rows(runs, finished)] == [True, False]


def test_strip_headers_removes_headers_quotes_and_signature():
    text = POST.format(subject="hello", body="the body stays", name="sci.space")
    assert recipes.strip_post(text).strip() == "the body stays"


def test_validation_split_is_stratified_and_seeded():
    rows = [{"text": str(i), "label_text": recipes.NEWSGROUPS[i % 20][0]} for i in range(200)]
    train_rows, validation_rows = table3.stratified_split(rows, 0.1, seed=42)
    assert len(validation_rows) == 20 and {r["label_text"] for r in validation_rows} == set(sweep.RECIPE.label_map)
    assert validation_rows == table3.stratified_split(rows, 0.1, seed=42)[1]
    assert {r["text"] for r in train_rows} | {r["text"] for r in validation_rows} == {str(i) for i in range(200)}


def test_unknown_newsgroup_names_file_and_line(tmp_path):
    write_newsgroups(tmp_path / "train.jsonl", 3, seed=0)
    with open(tmp_path / "train.jsonl", "a") as f:
        f.write(json.dumps({"text": "x", "label": 99, "label_text": "rec.gardening"}) + "\n")
    write_newsgroups(tmp_path / "test.jsonl", 3, seed=0)
    with pytest.raises(mc.InputError, match=r"train\.jsonl: row 3 \(line 4\): .*'rec\.gardening'"):
        recipes.load_rows(sweep.RECIPE, str(tmp_path), False)


def test_a_run_records_the_settings_it_always_recorded_so_older_sweeps_resume(tmp_path):
    """sweep_20newsgroups.py is sweep.py's 20 Newsgroups sweep now; a run's settings are still the keys and values
    the command wrote before, so a sweep folder it made then resumes instead of being refused."""
    args = cli.parse(sweep.build_parser(), ["--data_dir", str(tmp_path), "--strip_headers", "--max_train_samples",
                                            "100"])[0]
    assert args.run_settings("mlm", sweep.RECIPE.prompt, sweep.RECIPE, args.data_dir) == {
        "model": "answerdotai/ModernBERT-Large-Instruct", "data": str(tmp_path), "strip_headers": True,
        "max_length": 4096, "max_train_samples": 100, "max_eval_samples": None, "validation_fraction": 0.1,
        "data_seed": 42, "per_device_train_batch_size": 8, "effective_batch_size": 32, "weight_decay": 0.01,
        "warmup_ratio": 0.05, "prompt": sweep.RECIPE.prompt}
    hub = cli.parse(sweep.build_parser(), [])[0].run_settings("cls", None, sweep.RECIPE)
    assert hub["data"] == "SetFit/20_newsgroups" and hub["model"] == "answerdotai/ModernBERT-large"
    assert "prompt" not in hub and "tasks" not in vars(cli.parse(sweep.build_parser(), [])[0])  # one task: no --tasks flag


def test_the_classification_heads_train_loss_does_not_grow_with_gradient_accumulation(tiny_model_dir, tmp_path):
    """The same examples per optimizer step, taken in 1 or 4 batches, at a learning rate too small to move the
    weights: the loss Trainer reports is the same mean (it was 4x larger at 4 steps, and the head is seeded)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(32)]
    data = Dataset.from_dict({**tokenizer(texts, truncation=True, max_length=32), "labels": [i % 2 for i in range(32)]})
    losses = []
    for per_device, steps in ((8, 1), (2, 4)):
        settings = mc.TrainSettings(model=tiny_model_dir, output_dir=str(tmp_path / f"acc{steps}"),
                                    per_device_train_batch_size=per_device, gradient_accumulation_steps=steps,
                                    learning_rate=1e-12, num_train_epochs=1, logging_steps=1, eval_strategy="no",
                                    save_strategy="no", seed=0)
        metrics = mc.fit_classifier(settings, tokenizer, {"train": data, "validation": data, "test": data}, ["a", "b"])
        losses.append(metrics["train_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)  # the same seeded head, the same examples per step
