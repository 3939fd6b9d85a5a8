"""Templates over any columns: `{premise}` and `{hypothesis}` filled from each row, the longest field cut first, the
columns checked before any model loads; and a sentence-pair task, made by construction, trained through train.py."""

import json
import os
import random
import shutil

import pytest
from conftest import COLORS, LABEL_MAP, WORDS, write, write_csv

import mlm_classifier as core
from mlm_classifier import data, prompts, scoring, splits
import train
from mlm_classifier import InputError

PAIR_PROMPT = "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer: [unused0] {label}\n"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


# -----------------------------------------------------------------------------
# Placeholders


def test_a_template_names_columns_and_keeps_literals():
    template = core.parse_prompt('Q {{premise}} {"a": {"b": 1}} { } {0}\nP: {premise}\nH: {hypothesis}\n{options}\n'
                                 "Answer: [unused0] {label}")
    assert template.fields == template.columns == ("premise", "hypothesis") and not template.text_only
    filled, spans = prompts.fill_template(template, {"premise": "it rains", "hypothesis": "wet"}, "A", "- A: yes")
    assert filled == 'Q {premise} {"a": {"b": 1}} { } {0}\nP: it rains\nH: wet\n- A: yes\nAnswer: [unused0] A'
    assert [filled[a:b] for a, b in spans] == ["it rains", "wet"]
    with pytest.raises(TypeError, match=r"fills \{premise\} and \{hypothesis\}: give a dict of them"):
        prompts.fill_template(template, "one text", "A", "")
    published = core.parse_prompt("Text: {txt}\nAnswer: [unused0] {label}")  # the published spelling of {text}
    assert prompts.fill_template(published, "x", "red", "") == ("Text: x\nAnswer: [unused0] red", [(6, 7)])
    mixed = core.parse_prompt("{title}\n{text}\nAnswer: [unused0] {label}")
    assert mixed.fields == ("title", "text") and mixed.columns == ("title",)
    assert prompts.template_columns(mixed, "body") == {"title": "title", "text": "body"}


@pytest.mark.parametrize("prompt, expected", [
    ("P: {premise} {premise}\nAnswer: [unused0] {label}", "{premise} appear(s) more than once"),
    ("Answer: [unused0] {label}", "0 text placeholders; it needs exactly one {text}"),
    ("{text} {txt}\nAnswer: [unused0] {label}", "2 text placeholders"),
    ("P: {premise}\nAnswer: [unused0] {{label}}", "0 {label} placeholders"),
    ("P: {premise}\nAnswer: {options} {label}", "[unused0] must come right before {label}"),
])
def test_bad_templates_are_named(prompt, expected):
    with pytest.raises(InputError) as error:
        core.parse_prompt(prompt, "p.txt")
    assert expected in str(error.value) and str(error.value).startswith("p.txt")


def test_text_and_its_own_column_placeholder_together_are_refused():
    with pytest.raises(InputError, match=r"both \{text\} \(--text_column 'body'\) and \{body\}"):
        prompts.template_columns(core.parse_prompt("{text} {body}\nAnswer: [unused0] {label}"), "body")


# -----------------------------------------------------------------------------
# Cutting to fit: the longest field first


def greedy_lengths(lengths, excess):
    """The documented rule, one token at a time: from the field with the most tokens left, the earlier first."""
    lengths = list(lengths)
    for _ in range(excess):
        k = max(range(len(lengths)), key=lambda i: (lengths[i], -i))
        lengths[k] -= 1
    return lengths


def test_kept_lengths_is_the_one_token_at_a_time_rule():
    assert prompts.kept_lengths([10, 3], 4) == [6, 3]  # only the longer field is cut
    assert prompts.kept_lengths([5, 5], 3) == [3, 4]  # equals: the earlier field first
    assert prompts.kept_lengths([40], 7) == [33]  # one field: the tail of its text, as before
    assert prompts.kept_lengths([4, 9, 9, 1], 0) == [4, 9, 9, 1]
    rng = random.Random(0)
    for _ in range(500):
        lengths = [rng.randint(0, 30) for _ in range(rng.randint(1, 4))]
        excess = rng.randint(0, sum(lengths))
        assert prompts.kept_lengths(lengths, excess) == greedy_lengths(lengths, excess), (lengths, excess)


def field_tokens(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_the_longest_field_is_cut_first_and_the_prompt_never(tokenizer):
    template = core.parse_prompt(PAIR_PROMPT)
    rng = random.Random(1)
    long, short = words(rng, 60), words(rng, 4)
    rows = [{"premise": long, "hypothesis": short}, {"premise": short, "hypothesis": long},
            {"premise": long, "hypothesis": words(rng, 55)}, {"premise": "a red b", "hypothesis": "c"}]
    whole, whole_positions, _ = prompts.encode_prompts(tokenizer, template, rows, ["red"] * 4, "", 512)
    cut, positions, n_cut = prompts.encode_prompts(tokenizer, template, rows, ["red"] * 4, "", 40)
    assert n_cut == 3 and [len(ids) for ids in cut[:3]] == [40, 40, 40] and cut[3] == whole[3]
    fill = [prompts.fill_template(template, row, "red", "")[0] for row in rows]
    assert whole == [tokenizer(text.rstrip())["input_ids"] for text in fill]  # fits: the whole prompt's own ids
    for ids, position, full, full_position in zip(cut, positions, whole, whole_positions):
        assert len(full) - full_position == len(ids) - position  # the answer and what follows are kept whole
        assert tokenizer.convert_ids_to_tokens(ids[position - 1]) == "[unused0]"
    decoded = [tokenizer.decode(ids, skip_special_tokens=False) for ids in cut]
    for text, row in zip(decoded[:2], rows[:2]):  # the short field whole, the long one cut at its tail
        assert row["premise" if len(row["premise"]) < len(row["hypothesis"]) else "hypothesis"] in text
        assert "Premise: " in text and "\nHypothesis: " in text and text.endswith("\nAnswer: [unused0] red[SEP]")
    # Both long: each keeps about half of the room, within one token of the other.
    premise, hypothesis = (len(field_tokens(tokenizer, " " + rows[2][f])) for f in ("premise", "hypothesis"))
    kept = prompts.kept_lengths([premise, hypothesis], len(whole[2]) - 40)
    assert abs(kept[0] - kept[1]) <= 1 and kept[0] < premise and kept[1] < hypothesis


def test_a_prompt_too_long_for_its_fields_names_the_row(tokenizer):
    template = core.parse_prompt(PAIR_PROMPT)
    with pytest.raises(InputError, match=r"f\.csv: row 7: the prompt without its text is \d+ tokens"):
        prompts.encode_prompts(tokenizer, template, [{"premise": "a", "hypothesis": "b"}], ["red"], "", 6,
                            rows=[7], source="f.csv")


# -----------------------------------------------------------------------------
# Rows: columns read from a table, and from the API's dicts


def test_take_columns_reads_each_field_and_names_a_missing_column():
    template = core.parse_prompt(PAIR_PROMPT)
    fields = prompts.template_columns(template, "text")
    table = {"premise": ["a red b", " the sea ", "x"], "hypothesis": ["c", "", None], "label": ["RED", "BLUE", "RED"]}
    split = core.take_columns(table, "t.csv", "text", "label", fields=fields)
    assert split.texts == [{"premise": "a red b", "hypothesis": "c"}, {"premise": "the sea", "hypothesis": ""},
                           {"premise": "x", "hypothesis": ""}]
    assert split.empty_fields() == {"hypothesis": 2}
    with pytest.raises(InputError) as error:
        core.take_columns({"premise": ["a"], "label": ["RED"]}, "t.csv", "text", "label", fields=fields,
                          fields_source="--prompt_file p.txt")
    assert str(error.value) == ("t.csv: no column 'hypothesis' (which --prompt_file p.txt names as {hypothesis}); its "
                                "columns are 'premise', 'label'")
    empty = {"premise": ["a", " "], "hypothesis": ["b", ""], "label": ["RED", "RED"]}
    with pytest.raises(InputError, match=r"t\.csv: row 1 has every one of the columns 'premise', 'hypothesis' empty"):
        core.take_columns(empty, "t.csv", "text", "label", fields=fields)
    assert core.take_columns(empty, "t.csv", "text", fields=fields, allow_empty=True).texts[1] is None
    with pytest.raises(InputError, match=r"row 0: column 'hypothesis' holds a dict, not a text"):
        core.take_columns({"premise": ["a"], "hypothesis": [{"x": 1}]}, "t.csv", "text", fields=fields)


def test_the_api_takes_dicts_of_the_fields_and_names_what_is_wrong():
    template = core.parse_prompt(PAIR_PROMPT)
    one = splits.template_inputs(template, {"premise": " a ", "hypothesis": None})
    assert one == [{"premise": "a", "hypothesis": ""}]
    assert splits.template_inputs(core.parse_prompt("{text} [unused0] {label}"), ["a ", {"text": "b"}]) == ["a", "b"]
    with pytest.raises(TypeError, match=r"texts\[0\] is a str .* so each text is a dict with the keys 'premise', "):
        splits.template_inputs(template, ["just a text"])
    with pytest.raises(ValueError, match=r"texts\[1\] has no 'hypothesis' \(the prompt's \{hypothesis\}\); it has "):
        splits.template_inputs(template, [{"premise": "a", "hypothesis": "b"}, {"premise": "a"}])
    with pytest.raises(TypeError, match=r"texts\[0\]\['premise'\] is a int"):
        splits.template_inputs(template, [{"premise": 3, "hypothesis": "b"}])
    with pytest.raises(ValueError, match=r"texts\[0\]: every field \('premise', 'hypothesis'\) is empty"):
        splits.template_inputs(template, [{"premise": "", "hypothesis": " "}])
    # A {text} prompt's strings keep the rules and messages MLMClassifier always gave them.
    text_only = core.parse_prompt("{text} [unused0] {label}")
    for inputs, error, message in ((42, TypeError, "texts must be a string or a list of strings, not int"),
                                   ([None, "a"], ValueError, r"texts\[0\] is missing \(None\)"),
                                   (["a", 7], TypeError, r"texts\[1\] is a int \(7\), not a string"),
                                   (["a", "  "], ValueError, r"texts\[1\] is empty"),
                                   ([{"text": " "}], ValueError, r"texts\[0\]\['text'\] is empty")):
        with pytest.raises(error, match=message):
            splits.template_inputs(text_only, inputs)


# -----------------------------------------------------------------------------
# A sentence-pair task made by construction: the label is the colour in the hypothesis; the premise is other words,
# sometimes so many that the prompt must be cut, and then it is the premise that loses its tail, never the colour


def pair_rows(n, seed, long_every=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        color = rng.choice(COLORS)
        premise = words(rng, 80 if long_every and i % long_every == 0 else rng.randint(2, 8))
        hypothesis = f"{words(rng, rng.randint(0, 3))} {color} {words(rng, 2)}".strip()
        rows.append({"premise": premise, "hypothesis": hypothesis, "label_text": color.upper()})
    return rows


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    return {"train": write_csv(d / "train.csv", pair_rows(600, 1, long_every=100)),
            "validation": write_csv(d / "validation.csv", pair_rows(80, 2)),
            "test": write_csv(d / "test.csv", pair_rows(80, 3)),
            "predict": write(d / "predict.jsonl", "".join(
                json.dumps({k: r[k] for k in ("premise", "hypothesis")}) + "\n"
                for r in pair_rows(20, 4, long_every=5))),
            "label_map": write(d / "labels.json", json.dumps(LABEL_MAP)),
            "prompt": write(d / "prompt.txt", PAIR_PROMPT), "dir": d}


def pair_args(tiny_model_dir, files, output_dir, *extra):
    return ["--model", tiny_model_dir, "--train_file", files["train"], "--label_map", files["label_map"],
            "--prompt_file", files["prompt"], "--output_dir", str(output_dir), "--max_length", "48",
            "--learning_rate", "1e-2", "--warmup_ratio", "0.1", "--per_device_train_batch_size", "16",
            "--logging_steps", "10", *extra]


@pytest.fixture(scope="module")
def pair_trained(tiny_model_dir, pair_files):
    output_dir = pair_files["dir"] / "run"
    metrics = train.main(pair_args(tiny_model_dir, pair_files, output_dir, "--validation_file",
                                   pair_files["validation"], "--test_file", pair_files["test"], "--predict_file",
                                   pair_files["predict"], "--num_train_epochs", "4", "--eval_steps", "25"))
    return str(output_dir), metrics


def test_a_two_column_template_trains_and_the_folder_records_its_columns(pair_trained, pair_files):
    output_dir, metrics = pair_trained
    assert metrics["test_accuracy"] >= 0.9 and metrics["validation_accuracy"] >= 0.9
    assert metrics["truncated"] == {"train": 6, "validation": 0, "test": 0, "predict": 4}
    assert metrics["empty_fields"] == {"train": {}, "validation": {}, "test": {}, "predict": {}}
    with open(os.path.join(output_dir, "classifier.json")) as f:
        assert json.load(f)["columns"] == ["premise", "hypothesis"]
    with open(os.path.join(output_dir, "prompt.txt")) as f:
        assert f.read() == PAIR_PROMPT
    with open(os.path.join(output_dir, "predictions.jsonl")) as f:
        predictions = [json.loads(line) for line in f]
    with open(pair_files["predict"]) as f:
        rows = [json.loads(line) for line in f]
    assert [p["text"] for p in predictions] == rows  # each record's text is the row's fields
    assert sum(p["label"].lower() in p["text"]["hypothesis"].split() for p in predictions) >= 18
    long = [p for p in predictions if len(p["text"]["premise"].split()) == 80]  # cut: the premise lost its tail
    assert len(long) == 4 and sum(p["label"].lower() in p["text"]["hypothesis"].split() for p in long) >= 3


def test_the_trained_folder_scores_dicts_as_training_did(pair_trained, pair_files):
    """What classify.py and MLMClassifier do with the folder: its prompt.txt parsed, each row's fields checked and
    filled, cut as in training, scored at [MASK]; the labels equal predictions.jsonl's."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    output_dir, _ = pair_trained
    template = core.parse_prompt(data.read_prompt(os.path.join(output_dir, "prompt.txt")))
    label_map = data.read_label_map(os.path.join(output_dir, "label_map.json"))
    with open(pair_files["predict"]) as f:
        rows = splits.template_inputs(template, [json.loads(line) for line in f])
    tokenizer = core.load_tokenizer(output_dir)
    model = AutoModelForMaskedLM.from_pretrained(output_dir).eval()
    options = prompts.options_block(label_map)
    answer_ids = prompts.answer_token_ids(tokenizer, template, label_map, options)
    ids, positions, n_cut = prompts.encode_prompts(tokenizer, template, rows, ["red"] * len(rows), options, 48)
    scores = core.score_sequences(model, prompts.mask_answers(ids, positions, tokenizer.mask_token_id),
                                  tokenizer.mask_token_id, tokenizer.pad_token_id, [[i] for i in answer_ids], 4096)
    scores = [scores[k] for k in range(len(rows))]  # {position: scores}, as score_sequences gives them
    with open(os.path.join(output_dir, "predictions.jsonl")) as f:
        predictions = [json.loads(line) for line in f]
    assert n_cut == 4 and [list(label_map)[scoring.first_max(s)] for s in scores] == [p["label"] for p in predictions]
    assert AutoTokenizer.from_pretrained(output_dir)  # a plain transformers folder


def test_classify_py_and_the_api_label_the_pairs_as_training_did(pair_trained, pair_files, tmp_path):
    """classify.py and MLMClassifier fill the folder's {premise} and {hypothesis} from each row (a dict in the API),
    cut the premise as training did, and give predictions.jsonl's labels and probabilities."""
    import classify

    output_dir, _ = pair_trained
    with open(os.path.join(output_dir, "predictions.jsonl")) as f:
        expected = [json.loads(line) for line in f]
    out = tmp_path / "pairs.jsonl"
    classify.main(["--model", output_dir, "--input", pair_files["predict"], "--output", str(out), "--no_progress"])
    with open(out) as f:
        records = [json.loads(line) for line in f]
    assert [r["text"] for r in records] == [e["text"] for e in expected]
    assert [r["label"] for r in records] == [e["label"] for e in expected]
    for r, e in zip(records, expected):
        assert r["probabilities"] == pytest.approx(e["probabilities"], abs=1e-5)
    settings = json.loads((tmp_path / "pairs.jsonl.settings.json").read_text())
    assert settings["columns"] == {"premise": "premise", "hypothesis": "hypothesis"} and settings["truncated"] == 4

    clf = core.MLMClassifier.from_pretrained(output_dir, device="cpu")
    results = clf([e["text"] for e in expected])
    assert [r["label"] for r in results] == [e["label"] for e in expected] and clf.truncated == 4
    one = clf({"premise": " a calm city ", "hypothesis": "the green river"})  # one dict: one result
    assert set(one) == {"label", "probabilities"}
    assert [r["label"] for r in clf.stream(iter(e["text"] for e in expected), chunk_size=7)] == [
        e["label"] for e in expected]
    with pytest.raises(ValueError, match=r"texts\[1\] has no 'hypothesis'"):
        clf([{"premise": "a", "hypothesis": "b"}, {"premise": "a"}])
    with pytest.raises(TypeError, match=r"texts\[0\] is a str"):
        clf(["just one text"])

    csv_out = tmp_path / "pairs.csv"  # a text of two fields is its JSON in a CSV cell
    classify.main(["--model", output_dir, "--input", pair_files["predict"], "--output", str(csv_out), "--no_progress"])
    import csv as csv_module

    with open(csv_out, newline="") as f:
        rows = list(csv_module.DictReader(f))
    assert [json.loads(r["text"]) for r in rows] == [e["text"] for e in expected]


def test_classify_names_a_column_the_prompt_needs_before_any_model_loads(pair_trained, tmp_path):
    import classify

    output_dir, _ = pair_trained
    broken = tmp_path / "model"  # garbage weights: the error comes first
    shutil.copytree(output_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    rows = write(tmp_path / "rows.jsonl", json.dumps({"premise": "a city", "body": "red"}) + "\n")
    with pytest.raises(InputError, match=r"no column 'hypothesis' \(which .*prompt.txt names as \{hypothesis\}\)"):
        classify.main(["--model", str(broken), "--input", rows, "--output", str(tmp_path / "o.jsonl")])


def test_the_model_card_fills_each_field(pair_trained):
    import re

    output_dir, _ = pair_trained
    card = open(os.path.join(output_dir, "README.md"), encoding="utf-8").read()
    snippet = re.findall(r"```python\n(.*?)```", card, flags=re.S)[1]
    assert '.replace("{premise}", "your premise here".strip())' in snippet
    namespace = {}
    exec(snippet.replace("path/to/this/folder", output_dir).replace("your premise here", "a green city")
         .replace("your hypothesis here", "the blue sea"), namespace)
    assert namespace["label"] in LABEL_MAP


@pytest.mark.parametrize("change, expected", [
    ({"drop": "hypothesis"}, ["no column 'hypothesis' (which --prompt_file", "names as {hypothesis})",
                              "'premise'", "'label_text'"]),
    ({"prompt": "P: {premise}\nT: {text}\nAnswer: [unused0] {label}"}, ["no column 'text' (--text_column)"]),
    ({"empty": True}, ["row 1 has every one of the columns 'premise', 'hypothesis' empty"]),
])
def test_a_column_the_data_lack_is_named_before_any_model_loads(tiny_model_dir, tmp_path, change, expected):
    rows = pair_rows(3, 0)
    if "drop" in change:
        rows = [{k: v for k, v in r.items() if k != change["drop"]} for r in rows]
    if "empty" in change:
        rows[1].update(premise="", hypothesis=" ")
    files = {"train": write_csv(tmp_path / "train.csv", rows),
             "label_map": write(tmp_path / "labels.json", json.dumps(LABEL_MAP)),
             "prompt": write(tmp_path / "prompt.txt", change.get("prompt", PAIR_PROMPT))}
    broken = tmp_path / "model"  # garbage weights: every error here comes before the model loads
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError) as error:
        train.main(pair_args(str(broken), files, tmp_path / "out"))
    for part in expected:
        assert part in str(error.value)
    assert not os.path.exists(tmp_path / "out")
