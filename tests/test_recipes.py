"""The seven tasks of Table 3 as recipes: each one's data path offline, on a few rows written here in the hub's
layout, through sweep.py's loading, splitting, templating and tokenizing; a micro sweep over two tasks, both
heads, with the table beside the paper's; and the errors a recipe's data and flags can raise."""

import csv
import json
import os
import random
import shutil

import pytest
from conftest import WORDS, build_tiny_modernbert, build_tokenizer, write

import mlm_classifier as mc
from mlm_classifier import cli, prompts, recipes, scoring, sweeps
from mlm_classifier import table3 as reports
import sweep
import train
from mlm_classifier.recipes import PAPER_TABLE_3, RECIPES, load_rows


def build_recipe_tokenizer(path):
    """conftest's ModernBERT-style tokenizer, trained with every recipe's prompt in its corpus, so that the
    prompts are short and each verbalizer (the letters, AG News' words) is one token after `[unused0] `."""
    prompts = [recipe.prompt.replace("[unused0]", "") + " " + " ".join(recipe.label_map.values())
               for recipe in RECIPES.values()]
    return build_tokenizer(path, prompts * 40, vocab_size=1500, model_max_length=1024)


def hub_record(recipe, label_index, rng, k):
    """One row as the hub's copy of the task has it: its text columns, and its label as the dataset writes it."""
    record = {column: " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) for column in recipe.columns}
    if "question_content" in record and k % 3 == 0:
        record["question_content"] = ""  # Yahoo! Answers: many questions are a title alone
    if recipe.label_is_index:
        record[recipe.label_column] = label_index
    else:
        record["label"], record[recipe.label_column] = label_index, recipe.labels[label_index]
    return record


def write_task(folder, recipe, per_label=(3, 2), seed=0, fmt="jsonl"):
    """A few rows per label of the recipe's train and test splits, in the hub's layout: folder/<split>.<fmt>."""
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    for (name, split), n in zip(recipe.splits.items(), per_label):
        records = [hub_record(recipe, i, rng, k) for k in range(n) for i in range(len(recipe.labels))]
        path = os.path.join(folder, f"{split}.{fmt}")
        if fmt == "csv":
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, list(records[0]))
                writer.writeheader()
                writer.writerows(records)
        else:
            write(path, "".join(json.dumps(r) + "\n" for r in records))
    return str(folder)


@pytest.fixture(scope="module")
def table3(tmp_path_factory):
    """A tiny ModernBERT whose tokenizer knows the recipes' prompts, and every task's rows under data/<task>/."""
    root = tmp_path_factory.mktemp("table3")
    build_tiny_modernbert(str(root / "model"), build_recipe_tokenizer(str(root / "model")),
                          max_position_embeddings=1024)
    for name, recipe in RECIPES.items():
        write_task(root / "data" / name, recipe, fmt="csv" if name == "sst5" else "jsonl")
    return root


def sweep_args(root, *extra):
    return ["--model", str(root / "model"), "--cls_model", str(root / "model"), "--data_dir", str(root / "data"),
            "--output_dir", str(root / "out"), "--learning_rates", "1e-3", "--cls_learning_rates", "1e-3",
            "--epochs", "1", "--max_length", "512", "--per_device_train_batch_size", "4",
            "--effective_batch_size", "8", "--validation_fraction", "0.34", *extra]


# -----------------------------------------------------------------------------
# The recipes themselves


def test_every_recipe_is_complete_and_its_prompt_keeps_the_rules():
    assert list(RECIPES) == ["mnli", "yahoo", "20newsgroups", "ag_news", "sst2", "imdb", "sst5"]  # Table 3's order
    for name, recipe in RECIPES.items():
        template = mc.parse_prompt(recipe.prompt, recipe.prompt_source)
        assert set(recipes.recipe_fields(template, recipe).values()) == set(recipe.columns), name  # every column shown
        if name != "ag_news":  # the letters follow the dataset's order; AG News keeps the published map's
            assert list(recipe.label_map.items()) == list(zip(recipe.labels, scoring.LETTERS)), name
        assert set(recipe.label_map) == set(recipe.labels) and len(set(recipe.label_map.values())) == len(recipe.labels)
        assert set(PAPER_TABLE_3[name]) == {"mlm", "cls"}
        assert recipe.published == (name in ("20newsgroups", "ag_news")), name
    assert PAPER_TABLE_3["20newsgroups"] == {"mlm": 73.96, "cls": 73.96}
    assert all(isinstance(figure, float) for task in PAPER_TABLE_3.values() for figure in task.values())
    assert RECIPES["mnli"].cls_pair and RECIPES["mnli"].hub_name == "nyu-mll/glue/mnli[validation_matched]"
    assert train.AG_NEWS_PROMPT is RECIPES["ag_news"].prompt  # one copy of the published prompt


def test_the_ag_news_prompt_is_the_published_one_character_for_character():
    template = mc.parse_prompt(RECIPES["ag_news"].prompt)
    filled, _ = prompts.fill_template(template, "Stocks fell on Monday.", "Business", "")
    assert filled == (
        "** Instructions **    \n"
        "Given a short news report, determine which news category it belongs to.\n"
        "** Content **\n"
        "What is the category of the following news report?\n"
        "News Report: Stocks fell on Monday.\n"
        "** Options **\n"
        "- Business: It is about business or financial news.\n"
        "- World: It's about world news.\n"
        "- Sports: It's about sports.\n"
        "- Tech: It's about Science or Technology, or related companies.\n"
        "** Answer **\n"
        "Answer: [unused0] Business"
    )
    assert RECIPES["ag_news"].label_map == {"Business": "Business", "World": "World", "Sports": "Sports",
                                            "Sci/Tech": "Tech"}


def test_our_mnli_prompt_holds_the_pair_and_its_options():
    filled, spans = prompts.fill_template(mc.parse_prompt(RECIPES["mnli"].prompt),
                                     {"premise": "A man plays.", "hypothesis": "Someone plays."}, "A", "")
    assert filled.startswith("** Instructions **\nGiven a premise and a hypothesis, determine whether the premise "
                             "entails the hypothesis, contradicts it, or neither.\n** Content **\nPremise: A man plays."
                             "\nHypothesis: Someone plays.\nWhat is the relation")
    assert "\nA: entailment, " in filled and "\nC: contradiction, " in filled and filled.endswith("[unused0] A")
    assert [filled[a:b] for a, b in spans] == ["A man plays.", "Someone plays."]


# -----------------------------------------------------------------------------
# Every recipe's data path, offline


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipes_data_path_runs_offline(table3, name):
    recipe = RECIPES[name]
    _, settings = cli.parse(sweep.build_parser(), sweep_args(table3, "--tasks", name))
    folder = str(table3 / "data" / name)
    rows = load_rows(recipe, folder)
    n_labels = len(recipe.labels)
    assert len(rows["train"]) == 3 * n_labels and len(rows["test"]) == 2 * n_labels
    assert {r["label_text"] for r in rows["train"]} == set(recipe.labels)
    plan = (recipe.prompt, recipe.prompt_source, folder, None)
    mlm_data, (tokenizer, cls_data) = sweeps.task_data(settings, recipe, plan, {"mlm", "cls"})
    splits = mlm_data.splits
    assert {n: len(s) for n, s in splits.items()} == {"train": len(rows["train"]) - len(splits["validation"]),
                                                      "validation": splits["validation"].__len__(),
                                                      "test": 2 * n_labels}
    assert len(splits["validation"]) >= n_labels  # stratified: at least one row of each label
    template = mc.parse_prompt(recipe.prompt)
    first = splits["test"].texts[0]
    if template.text_only:
        assert isinstance(first, str)
    else:
        assert set(first) == set(recipe.columns)
    if name == "yahoo":
        assert splits["train"].empty_fields().get("question_content", 0) > 0  # filled as "", counted
    # The MLM head's examples: the answer token of each row's label right after [unused0], the rest the prompt.
    anchor = tokenizer.convert_tokens_to_ids("[unused0]")
    for (ids, position), label in zip(zip(*mlm_data.encoded["test"]), splits["test"].labels):
        assert ids[position - 1] == anchor and ids[position] == mlm_data.answer_ids[list(recipe.label_map).index(label)]
    filled, _ = prompts.fill_template(template, splits["test"].texts[0], recipe.label_map[splits["test"].labels[0]], "")
    assert mlm_data.encoded["test"][0][0] == tokenizer(filled)["input_ids"]  # it fits: exactly the prompt's ids
    # The classification head: the raw text (MNLI's pair as a sentence pair), the label's index in the dataset.
    assert cls_data["test"]["labels"] == [recipe.labels.index(label) for label in splits["test"].labels]
    sep = tokenizer.sep_token_id
    assert all(ids.count(sep) == (2 if recipe.cls_pair else 1) for ids in cls_data["test"]["input_ids"])


# -----------------------------------------------------------------------------
# A micro sweep over two tasks: both heads, resuming, the table beside the paper's


def test_a_micro_sweep_over_two_tasks_writes_the_table_beside_the_papers(table3, capsys):
    out = table3 / "out"
    finished = sweep.main(sweep_args(table3, "--tasks", "mnli", "20newsgroups"))
    assert {task: sorted(runs) for task, runs in finished.items()} == {
        task: ["cls_lr0.001_ep1_seed42", "mlm_lr0.001_ep1_seed42"] for task in ("mnli", "20newsgroups")}
    for task in ("mnli", "20newsgroups"):
        for name, metrics in finished[task].items():
            saved = json.loads((out / task / name / "metrics.json").read_text())
            assert saved["task"] == task and saved["settings"]["data"] == str(table3 / "data" / task)
            assert saved["test_n"] == 2 * len(RECIPES[task].labels)
        assert (out / task / "summary.png").read_bytes()[:4] == b"\x89PNG"
        assert f"# {RECIPES[task].title} sweep" in (out / task / "summary.md").read_text()
    assert finished["mnli"]["mlm_lr0.001_ep1_seed42"]["settings"]["prompt"] == RECIPES["mnli"].prompt
    assert finished["mnli"]["cls_lr0.001_ep1_seed42"]["labels"] == list(RECIPES["mnli"].labels)

    with open(out / "table3.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], r["head"]) for r in rows] == [("mnli", "mlm"), ("mnli", "cls"), ("20newsgroups", "mlm"),
                                                      ("20newsgroups", "cls"), ("average (2 tasks)", "mlm"),
                                                      ("average (2 tasks)", "cls")]
    by = {(r["task"], r["head"]): r for r in rows}
    assert by[("20newsgroups", "mlm")]["paper_test_accuracy"] == "73.96" == by[("20newsgroups", "cls")][
        "paper_test_accuracy"]
    assert by[("mnli", "mlm")]["paper_test_accuracy"] == "91.03" and by[("mnli", "cls")]["paper_test_accuracy"] == "90.8"
    assert by[("average (2 tasks)", "mlm")]["paper_test_accuracy"] == "82.5"  # (91.03 + 73.96) / 2, rounded
    ours = 100 * finished["20newsgroups"]["mlm_lr0.001_ep1_seed42"]["test_accuracy"]
    assert float(by[("20newsgroups", "mlm")]["test_accuracy"]) == round(ours, 2)
    assert float(by[("20newsgroups", "mlm")]["difference"]) == pytest.approx(round(ours, 2) - 73.96, abs=0.011)
    mean = (float(by[("mnli", "cls")]["test_accuracy"]) + float(by[("20newsgroups", "cls")]["test_accuracy"])) / 2
    assert float(by[("average (2 tasks)", "cls")]["test_accuracy"]) == pytest.approx(mean, abs=0.006)
    markdown = (out / "table3.md").read_text()
    assert "| 20 Newsgroups | MLM head | mlm_lr0.001_ep1_seed42 | 1/1 |" in markdown and "| 73.96 |" in markdown
    assert "| MNLI | classification head |" in markdown and "| 90.80 |" in markdown and "arXiv 2502.03793" in markdown
    assert "MNLI: our MNLI prompt; 20 Newsgroups: the published 20 Newsgroups prompt" in markdown
    assert "not the paper's models" in markdown  # a tiny model: the figures are not its to match

    # The same command finds every run finished and loads nothing (the data are moved away); another setting is
    # refused for the task it would mix, before anything loads.
    capsys.readouterr()
    os.rename(table3 / "data", table3 / "data.away")
    os.makedirs(table3 / "data" / "mnli")
    os.makedirs(table3 / "data" / "20newsgroups")
    try:
        again = sweep.main(sweep_args(table3, "--tasks", "mnli", "20newsgroups"))
        with pytest.raises(mc.InputError, match=r"mnli.*mlm_lr0\.001_ep1_seed42 was run with other settings: "
                                                r"max_length 512 \(now 256\)"):
            sweep.main(sweep_args(table3, "--tasks", "mnli", "20newsgroups", "--max_length", "256"))
    finally:
        for task in ("mnli", "20newsgroups"):
            os.rmdir(table3 / "data" / task)
        os.rmdir(table3 / "data")
        os.rename(table3 / "data.away", table3 / "data")
    assert again == finished
    assert "4 runs in the grid across 2 tasks, 4 already finished" in capsys.readouterr().out


def test_the_average_of_all_seven_tasks_is_the_papers_own():
    runs = reports.make_grid(["mlm", "cls"], [1e-3], [1e-3], [1], [42])
    metrics = {"validation_accuracy": 0.5, "test_accuracy": 0.8, "validation_macro_f1": 0.5, "test_macro_f1": 0.5,
               "minutes": 1.0}
    finished = {name: {run["name"]: metrics for run in runs} for name in RECIPES}
    rows = reports.table_rows(list(RECIPES.values()), runs, finished)
    average = {r["head"]: r for r in rows if r["task"].startswith("average")}
    assert average["mlm"]["task"] == "average (7 tasks)" and average["mlm"]["paper_test_accuracy"] == 84.67
    assert average["cls"]["paper_test_accuracy"] == 84.39 and average["cls"]["difference"] == round(80 - 84.39, 2)
    one = reports.table_rows([RECIPES["20newsgroups"]], runs, {"20newsgroups": finished["20newsgroups"]})
    assert one[-1]["task"] == "average (1 task)"
    assert one[-1]["paper_test_accuracy"] == 73.96  # the average of the tasks run, when the paper has each


# -----------------------------------------------------------------------------
# What a recipe's data and flags can get wrong: one error naming it, before any model loads


def test_a_label_outside_the_recipe_names_file_row_and_line(tmp_path):
    folder = write_task(tmp_path / "mnli", RECIPES["mnli"])
    with open(os.path.join(folder, "train.jsonl"), "a") as f:
        f.write(json.dumps({"premise": "p", "hypothesis": "h", "label": -1}) + "\n")
    with pytest.raises(mc.InputError) as error:
        load_rows(RECIPES["mnli"], folder)
    assert str(error.value) == (f"{folder}/train.jsonl: row 9 (line 10): `label` -1 is not one of the class ids 0-2 "
                                "of MNLI (entailment, neutral, contradiction)")


def test_a_missing_split_file_says_what_the_recipe_reads_there(tmp_path):
    folder = write_task(tmp_path / "mnli", RECIPES["mnli"])
    os.remove(os.path.join(folder, "validation_matched.jsonl"))
    with pytest.raises(mc.InputError) as error:
        load_rows(RECIPES["mnli"], folder)
    assert str(error.value).startswith(f"{folder}/validation_matched.jsonl: no such file (nor "
                                       "validation_matched.parquet, validation_matched.csv or validation_matched.json)")
    assert "`premise`, `hypothesis`, `label`" in str(error.value)


@pytest.mark.parametrize("flags, expected", [
    (["--tasks", "mnli", "sst2", "--prompt_file", "PROMPT"], "--prompt_file replaces one task's prompt, but --tasks "
                                                             "names 2: mnli, sst2"),
    (["--tasks", "mnli", "--prompt_file", "PROMPT"], "{text} is no column of the MNLI rows; they fill {premise}, "
                                                     "{hypothesis} ({text} is not one of them)"),
    (["--tasks", "sst2", "--strip_headers"], "--strip_headers strips 20newsgroups' local posts, and --tasks does not "
                                             "name it"),
    (["--tasks", "imdb"], "no folder imdb/ for the IMDB task"),
    (["--tasks", "sst2", "20newsgroups", "--max_length", "200"],  # sst2 fits: 20newsgroups is checked before it runs
     "--tasks 20newsgroups: the prompt needs"),
    (["--tasks", "mnlx"], None),
])
def test_bad_sweep_flags_are_named_before_any_model_loads(table3, tmp_path, flags, expected):
    prompt = write(tmp_path / "prompt.txt", "Text: {text}\nAnswer: [unused0] {label}\n")
    os.makedirs(tmp_path / "data" / "mnli")
    os.makedirs(tmp_path / "data" / "sst2")
    os.makedirs(tmp_path / "data" / "20newsgroups")
    broken = tmp_path / "model"  # garbage weights: every error here comes before the model loads
    shutil.copytree(table3 / "model", broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    argv = ["--model", str(broken), "--cls_model", str(broken), "--data_dir", str(tmp_path / "data"),
            "--output_dir", str(tmp_path / "out")] + [prompt if f == "PROMPT" else f for f in flags]
    if expected is None:
        with pytest.raises(SystemExit, match="invalid choice: 'mnlx'"):
            sweep.main(argv)
        return
    with pytest.raises(mc.InputError) as error:
        sweep.main(argv)
    assert expected in str(error.value)
    assert not os.path.exists(tmp_path / "out")


def fake_hub(recipe, names=None, drop=None):
    """What datasets.load_dataset gives for the recipe: its splits, the label a ClassLabel with `names`."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    rng = random.Random(0)
    splits = {}
    for split in recipe.splits.values():
        records = [hub_record(recipe, i, rng, k) for k in range(2) for i in range(len(recipe.labels))]
        columns = {key: [r[key] for r in records] for key in records[0] if key != drop}
        features = Features({key: ClassLabel(names=list(names or recipe.labels)) if key == recipe.label_column
                             else Value("string") for key in columns})
        splits[split] = Dataset.from_dict({**columns, "idx": list(range(len(records)))},
                                          features=Features({**features, "idx": Value("int64")}))
    return DatasetDict(splits)


def test_the_hub_path_reads_the_recipes_splits_and_checks_the_class_names(monkeypatch):
    import mlm_classifier.recipes as recipes

    mnli = RECIPES["mnli"]
    calls = []
    monkeypatch.setattr(recipes, "load_hub_dataset", lambda name, instead, *args: calls.append((name, args))
                        or fake_hub(mnli))
    rows = load_rows(mnli)
    assert calls == [("nyu-mll/glue", ("mnli",))] and len(rows["train"]) == len(rows["test"]) == 6
    assert set(rows["test"][0]) == {"premise", "hypothesis", "label_text"}
    assert [r["label_text"] for r in rows["test"][:3]] == list(mnli.labels)
    monkeypatch.setattr(recipes, "load_hub_dataset",
                        lambda *a: fake_hub(mnli, names=["contradiction", "neutral", "entailment"]))
    with pytest.raises(mc.InputError, match=r"nyu-mll/glue/mnli\[train\]: the hub's classes "
                                            r"\['contradiction', 'neutral', 'entailment'\] are not the recipe's"):
        load_rows(mnli)
    monkeypatch.setattr(recipes, "load_hub_dataset", lambda *a: fake_hub(mnli, drop="hypothesis"))
    with pytest.raises(mc.InputError, match=r"mnli\[train\]: no column 'hypothesis'; it has 'premise', 'label', 'idx'"):
        load_rows(mnli)


def test_every_tasks_data_is_checked_before_the_first_run(table3, tmp_path):
    """A later task whose file holds an unknown label stops the sweep before the first task trains (it used to stop
    only once every run of the earlier tasks had finished)."""
    shutil.copytree(table3 / "data", tmp_path / "data")
    with open(tmp_path / "data" / "sst2" / "train.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "a film", "label_text": "mixed"}) + "\n")
    broken = tmp_path / "model"  # garbage weights: the first run would fail to load them
    shutil.copytree(table3 / "model", broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    argv = sweep_args(table3, "--tasks", "ag_news", "sst2")
    argv[argv.index("--data_dir") + 1] = str(tmp_path / "data")
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "out")
    argv[1] = argv[3] = str(broken)
    with pytest.raises(mc.InputError, match=r"sst2.train\.jsonl: row \d+ \(line \d+\): `label_text` 'mixed' is not one"):
        sweep.main(argv)
