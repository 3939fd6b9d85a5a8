"""eval.py: the prompt, the scoring, the data loading and its errors, the outputs, torchrun."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, make_mmlu_dir, write_mmlu_csv
from transformers import AutoModelForMaskedLM, AutoTokenizer

import eval
from mlm_classifier import mmlu
import mlm_classifier as core
from mlm_classifier import scoring
from mlm_classifier.reference import published_predict


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture()
def model(tiny_model_dir):
    return AutoModelForMaskedLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def questions_from(root, **kwargs):
    return mmlu.load_mmlu_local(make_mmlu_dir(root, **kwargs), "test", [])


def score(model, tokenizer, questions, batch_tokens=4096, letters="ABCD", permutations=1, examples=None):
    """(scores, views) of eval.py's path: the prompts under `permutations` rotations, batched."""
    sequences, views, _ = mmlu.encode_questions(tokenizer, questions, permutations=permutations, examples=examples)
    scores = core.score_sequences(model, sequences, tokenizer.mask_token_id, tokenizer.pad_token_id,
                                  scoring.letter_token_ids(tokenizer, letters), batch_tokens, pad_to_multiple_of=8)
    return scores, views


def predict(model, tokenizer, questions, task="mmlu", **kwargs):
    """(results, records) of eval.py's path."""
    return mmlu.results_and_records(questions, *score(model, tokenizer, questions, **kwargs), task)


def run_eval(*args):
    """eval.py in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(REPO, "eval.py"), "--no_progress", *args],
                          capture_output=True, text=True, cwd=REPO)


# --- the prompt and the option tokens


def test_prompt_is_the_papers_template_character_for_character():
    prompt = mmlu.build_prompt("  What is 2 + 2?\n", ["3", "4", "five", "22"])
    assert prompt == (
        "You will be given a question as well as a list of options. Read the question carefully and select "
        "the right answer from the list.\nQUESTION:\nWhat is 2 + 2?\nCHOICES:\n- A: 3\n- B: 4\n- C: five\n"
        "- D: 22\n\nANSWER:\nAnswer: [unused0] [MASK]"
    )


def test_prompt_ends_with_unused0_then_mask(tokenizer):
    ids = tokenizer(mmlu.build_prompt("Q?", ["a", "b", "c", "d"]))["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[-3:] == ["[unused0]", "[MASK]", "[SEP]"]  # [MASK]'s lstrip ate the space
    assert scoring.last_index(ids, tokenizer.mask_token_id) == len(ids) - 2








# --- scoring


def test_known_answer_is_picked(model, tokenizer, tmp_path):
    questions = questions_from(tmp_path)
    model.decoder.bias.data[tokenizer.convert_tokens_to_ids("ĠC")] += 30.0
    records = predict(model, tokenizer, questions)[1]
    assert {r["pred"] for r in records} == {"C"}
    assert all(r["probs"]["C"] > 0.99 for r in records)


def test_each_letter_sums_both_spellings(model, tokenizer, tmp_path):
    # A's two spellings at 10 each beat B's single 10.5; taking the best spelling alone would pick B.
    questions = questions_from(tmp_path, subjects=("anatomy",))
    ids = tokenizer.convert_tokens_to_ids
    model.head.norm.weight.data.zero_()  # the head's input is 0: every logit is the decoder's bias, exactly
    bias = model.decoder.bias.data
    bias[ids("A")] = bias[ids("ĠA")] = 10.0
    bias[ids("B")] = 10.5
    records = predict(model, tokenizer, questions)[1]
    assert {r["pred"] for r in records} == {"A"}


def test_batched_scores_equal_one_at_a_time_and_the_published_loop(tmp_path, tokenizer):
    # Larger random weights than the default init, so that predictions spread over the letters.
    from conftest import build_tiny_modernbert

    varied = build_tiny_modernbert(str(tmp_path / "m"), tokenizer, seed=3, initializer_range=0.5).eval()
    questions = questions_from(tmp_path, subjects=("anatomy", "virology", "nutrition"), per_subject=10)
    batched, views = score(varied, tokenizer, questions, batch_tokens=4096)
    alone, _ = score(varied, tokenizer, questions, batch_tokens=1)
    assert max(len(b) for b in scoring.length_sorted_batches(
        [len(s) for s in mmlu.encode_questions(tokenizer, questions)[0]], 4096, 8)) > 5  # really batched
    for i in range(len(questions)):
        assert batched[i] == pytest.approx(alone[i], abs=1e-4)
    ours = [r["pred"] for r in mmlu.results_and_records(questions, batched, views, "mmlu")[1]]
    published = [published_predict(varied, tokenizer, mmlu.build_prompt(q["question"], q["choices"]))
                 for q in questions]
    assert ours == published
    assert len(set(ours)) >= 2




def test_full_permutations_make_each_choice_independent_of_its_letter(tmp_path, tokenizer):
    from conftest import build_tiny_modernbert

    varied = build_tiny_modernbert(str(tmp_path / "m"), tokenizer, seed=3, initializer_range=0.5).eval()
    questions = questions_from(tmp_path, subjects=("anatomy", "virology"), per_subject=6)
    shifted = [dict(q, choices=q["choices"][1:] + q["choices"][:1]) for q in questions]  # choice k now under letter k-1

    def choice_probs(qs, permutations, shift=0):
        """Per question, the probability of each original choice k (listed under letter k - shift)."""
        records = predict(varied, tokenizer, qs, permutations=permutations)[1]
        return [[r["probs"]["ABCD"[(k - shift) % 4]] for k in range(4)] for r in records]

    plain, plain_shifted = choice_probs(questions, 1), choice_probs(shifted, 1, shift=1)
    assert max(abs(a - b) for p, q in zip(plain, plain_shifted) for a, b in zip(p, q)) > 0.1  # letters matter ...
    full, full_shifted = choice_probs(questions, 4), choice_probs(shifted, 4, shift=1)
    for p, q in zip(full, full_shifted):  # ... until every choice is scored once under every letter
        assert p == pytest.approx(q, abs=1e-6) and sum(p) == pytest.approx(1, abs=1e-5)  # records round to 1e-6


# --- loading MMLU files, and the errors for bad ones


def test_csv_rows_count_records_not_lines(tmp_path):
    path = str(tmp_path / "x_test.csv")
    write_mmlu_csv(path, [["one\ntwo\nthree lines", "a", "b", "c", "d", "B"], ["next", "a", "b", "c", "d", "D"]])
    questions = mmlu.read_mmlu_csv(path, "x")
    assert [q["row"] for q in questions] == [0, 1]
    assert questions[1]["gold"] == "D" and questions[0]["question"] == "one\ntwo\nthree lines"


def test_wrong_field_count_names_file_and_record(tmp_path):
    path = str(tmp_path / "test" / "virology_test.csv")
    write_mmlu_csv(path, [["q\nspanning lines", "a", "b", "c", "d", "A"], ["q", "a", "b", "c", "A"]])
    with pytest.raises(core.InputError, match=r"virology_test\.csv: row 1 \(line 3\): expected 6 fields .* found 5"):
        mmlu.read_mmlu_csv(path, "virology")


def test_answer_outside_a_to_d_names_file_and_record(tmp_path):
    path = str(tmp_path / "anatomy_test.csv")
    write_mmlu_csv(path, [["q", "a", "b", "c", "d", answer] for answer in "AAE"])
    with pytest.raises(core.InputError, match=r"anatomy_test\.csv: row 2 \(line 3\): answer 'E'"):
        mmlu.read_mmlu_csv(path, "anatomy")


def test_unknown_subject_lists_the_valid_ones(tmp_path):
    root = make_mmlu_dir(tmp_path, subjects=("anatomy", "virology"))
    with pytest.raises(core.InputError, match="unknown subject astrology; valid: anatomy, virology"):
        mmlu.load_mmlu_local(root, "test", ["astrology"])


def test_flat_layout_validation_split_and_subject_filter(tmp_path):
    write_mmlu_csv(str(tmp_path / "anatomy_val.csv"), [["q", "a", "b", "c", "d", "C"]] * 3)
    write_mmlu_csv(str(tmp_path / "virology_val.csv"), [["q", "a", "b", "c", "d", "A"]] * 2)
    questions = mmlu.load_questions("mmlu", str(tmp_path), "validation", ["virology"], limit=None)
    assert [(q["subject"], q["gold"]) for q in questions] == [("virology", "A")] * 2
    with pytest.raises(core.InputError, match="no MMLU test files"):
        mmlu.load_mmlu_local(str(tmp_path), "test", [])


def test_bad_csv_stops_before_the_model_is_loaded(tiny_model_dir, tmp_path):
    root = make_mmlu_dir(tmp_path)
    with open(os.path.join(root, "test", "virology_test.csv"), "a") as f:
        f.write("only,three,fields\n")
    broken = tmp_path / "broken-model"  # loading these weights would fail loudly
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    result = run_eval("--model", str(broken), "--data_dir", root)
    assert result.returncode == 1
    assert "virology_test.csv: row 7 (line 9): expected 6 fields" in result.stderr  # record 2 spans 2 lines
    assert "Traceback" not in result.stderr


# --- few-shot


def add_dev_files(root, sizes):
    """A dev file per subject in `sizes` ({subject: rows}); row j is `<subject> dev question j?` with gold
    letter B, C, D, A, B, ... and choices long enough to need several tokens."""
    for subject, n in sizes.items():
        rows = [[f"{subject} dev question {j}?", *(f"{subject} choice {c} of {j} the river city" for c in "abcd"),
                 "ABCD"[(j + 1) % 4]] for j in range(n)]
        write_mmlu_csv(os.path.join(root, "dev", f"{subject}_dev.csv"), rows)
    return root


def test_fewshot_prompt_character_for_character():
    examples = [{"question": " What is 1 + 1?\n", "choices": ["2", "3"], "gold": "A"},
                {"question": "What is 2 + 2?", "choices": ["3", "4"], "gold": "B"}]
    assert mmlu.build_prompt("What is 3 + 3?", ["6", "7"], examples) == (
        "You will be given a question as well as a list of options. Read the question carefully and select "
        "the right answer from the list.\n"
        "QUESTION:\nWhat is 1 + 1?\nCHOICES:\n- A: 2\n- B: 3\n\nANSWER:\nAnswer: [unused0] A\n\n"
        "QUESTION:\nWhat is 2 + 2?\nCHOICES:\n- A: 3\n- B: 4\n\nANSWER:\nAnswer: [unused0] B\n\n"
        "QUESTION:\nWhat is 3 + 3?\nCHOICES:\n- A: 6\n- B: 7\n\nANSWER:\nAnswer: [unused0] [MASK]"
    )
    assert mmlu.build_prompt("Q?", ["a", "b"], []) == mmlu.build_prompt("Q?", ["a", "b"])  # 0-shot is the paper's


def test_fewshot_examples_are_the_first_k_dev_questions_of_the_subject_solved_and_never_rotated(tokenizer, tmp_path):
    root = add_dev_files(make_mmlu_dir(tmp_path, subjects=("astronomy", "virology"), per_subject=3),
                         {"astronomy": 5, "virology": 5})
    examples = mmlu.load_fewshot_examples("mmlu", root, ["astronomy", "virology"], 3)
    assert [(e["question"], e["gold"]) for e in examples["virology"]] == [
        ("virology dev question 0?", "B"), ("virology dev question 1?", "C"), ("virology dev question 2?", "D")]
    questions = mmlu.load_mmlu_local(root, "test", [])
    sequences, views, shots = mmlu.encode_questions(tokenizer, questions, permutations=2, examples=examples)
    assert shots == [3] * 6 and len(views) == 12
    for ids, (i, order) in zip(sequences, views):
        q = questions[i]
        prompt = mmlu.build_prompt(q["question"], [q["choices"][c] for c in order], examples[q["subject"]])
        assert ids == tokenizer(prompt)["input_ids"]  # only the question's own choices rotate
        other = "virology" if q["subject"] == "astronomy" else "astronomy"
        assert f"QUESTION:\n{q['subject']} dev question 2?" in prompt and other not in prompt
        assert "dev question 3?" not in prompt


def test_fewshot_answer_is_read_at_the_last_mask_as_published(tmp_path, tokenizer):
    from conftest import build_tiny_modernbert

    varied = build_tiny_modernbert(str(tmp_path / "m"), tokenizer, seed=3, initializer_range=0.5).eval()
    root = add_dev_files(make_mmlu_dir(tmp_path, subjects=("anatomy", "virology"), per_subject=6),
                         {"anatomy": 5, "virology": 5})
    questions = mmlu.load_mmlu_local(root, "test", [])
    examples = mmlu.load_fewshot_examples("mmlu", root, ["anatomy", "virology"], 2)
    ours = [r["pred"] for r in predict(varied, tokenizer, questions, examples=examples)[1]]
    published = [published_predict(varied, tokenizer, mmlu.build_prompt(q["question"], q["choices"],
                                                                      examples[q["subject"]])) for q in questions]
    assert ours == published
    # The examples answer B, C, D after [unused0]; a bias on the letter C still decides the test question's slot.
    varied.decoder.bias.data[tokenizer.convert_tokens_to_ids("ĠC")] += 30.0
    assert {r["pred"] for r in predict(varied, tokenizer, questions, examples=examples)[1]} == {"C"}


def test_fewshot_drops_examples_from_the_end_until_every_rotation_fits(tokenizer, tmp_path):
    root = add_dev_files(make_mmlu_dir(tmp_path, subjects=("astronomy", "virology"), per_subject=6),
                         {"astronomy": 5, "virology": 5})
    questions = mmlu.load_mmlu_local(root, "test", [])
    examples = mmlu.load_fewshot_examples("mmlu", root, ["astronomy", "virology"], 5)

    def longest(q, m):  # tokens of q's longest rotation with its first m examples
        return max(len(tokenizer(mmlu.build_prompt(q["question"], q["choices"][r:] + q["choices"][:r],
                                                 examples[q["subject"]][:m]))["input_ids"]) for r in range(2))

    lengths = [[longest(q, m) for m in range(6)] for q in questions]
    limit = sorted(ls[5] for ls in lengths)[len(lengths) // 2]  # about half the questions hold all five
    sequences, views, shots = mmlu.encode_questions(tokenizer, questions, limit, permutations=2, examples=examples)
    assert shots == [max(m for m in range(6) if ls[m] <= limit) for ls in lengths]
    assert 0 < sum(n < 5 for n in shots) < len(questions)  # some questions reduced, some not
    assert max(map(len, sequences)) <= limit
    for ids, (i, order) in zip(sequences, views):  # the first examples kept, the last dropped
        q = questions[i]
        assert ids == tokenizer(mmlu.build_prompt(q["question"], [q["choices"][c] for c in order],
                                                examples[q["subject"]][:shots[i]]))["input_ids"]
    assert mmlu.prompt_stats(sequences, shots, 5) == {
        "num_fewshot": 5, "prompt_tokens": round(sum(map(len, sequences)) / len(sequences), 1),
        "fewshot_mean": round(sum(shots) / len(shots), 3), "fewshot_reduced": sum(n < 5 for n in shots)}
    too_short = min(ls[0] for ls in lengths) - 1
    with pytest.raises(core.InputError, match=rf"row \d+: the prompt is \d+ tokens, more than the model's {too_short} "
                                              "positions even without examples"):
        mmlu.encode_questions(tokenizer, questions, too_short, examples=examples)


def test_fewshot_errors_name_the_subject(tmp_path):
    root = add_dev_files(make_mmlu_dir(tmp_path, subjects=("astronomy", "virology")), {"astronomy": 5})
    missing = os.path.join(root, "dev", "virology_dev.csv")
    with pytest.raises(core.InputError, match=rf"--num_fewshot 3: no dev file for subject virology \(looked for "
                                              rf"{missing} and {os.path.join(root, 'virology_dev.csv')}\)"):
        mmlu.load_fewshot_examples("mmlu", root, ["astronomy", "virology"], 3)
    add_dev_files(root, {"virology": 2})
    with pytest.raises(core.InputError, match=rf"--num_fewshot 3: subject virology has only 2 questions in {missing}"):
        mmlu.load_fewshot_examples("mmlu", root, ["astronomy", "virology"], 3)
    with pytest.raises(core.InputError, match="--num_fewshot -1 must be 0"):
        eval.EvalSettings(task="mmlu", split="test", num_fewshot=-1)
    with pytest.raises(core.InputError, match="--num_fewshot 5: the solved examples come from the dev split"):
        eval.EvalSettings(task="mmlu", split="dev", num_fewshot=5)
    with pytest.raises(core.InputError, match="come from the validation split"):
        eval.EvalSettings(task="mmlu_pro", split="validation", num_fewshot=1)
    eval.EvalSettings(task="mmlu", split="dev", num_fewshot=0)  # zero-shot may score dev
    eval.EvalSettings(task="mmlu", split="validation", num_fewshot=5)  # MMLU's val split is not where they come from


def test_fewshot_missing_dev_file_stops_before_the_model_is_loaded(tiny_model_dir, tmp_path):
    root = add_dev_files(make_mmlu_dir(tmp_path, subjects=("astronomy", "virology")), {"astronomy": 5})
    broken = tmp_path / "broken-model"  # loading these weights would fail loudly
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(core.InputError, match="--num_fewshot 2: no dev file for subject virology"):  # not a load error
        eval.main(["--model", str(broken), "--data_dir", root, "--num_fewshot", "2"])


def test_mmlu_pro_fewshot_examples_come_from_the_categorys_validation_questions(tmp_path):
    write_jsonl(tmp_path / "validation.jsonl", [
        {"question": f"{category} example {j}", "options": ["a", "b", "c"], "answer_index": j % 3, "category": category}
        for category in ("math", "law") for j in range(3)])
    examples = mmlu.load_fewshot_examples("mmlu_pro", str(tmp_path), ["law", "math"], 2)
    assert [(e["question"], e["gold"]) for e in examples["law"]] == [("law example 0", "A"), ("law example 1", "B")]
    with pytest.raises(core.InputError, match=r"--num_fewshot 2: category health has only 0 questions in .*validation"):
        mmlu.load_fewshot_examples("mmlu_pro", str(tmp_path), ["health"], 2)
    with pytest.raises(core.InputError, match=r"no validation file for category law \(looked for .*other.validation"):
        mmlu.load_fewshot_examples("mmlu_pro", str(tmp_path / "other"), ["law"], 2)


# --- MMLU-Pro


def write_jsonl(path, records):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def test_mmlu_pro_scores_each_question_over_its_own_letters(model, tokenizer, tmp_path, capsys):
    write_jsonl(tmp_path / "test.jsonl", [
        {"question_id": 1, "question": "q1", "options": ["a", "b", "c"], "answer": "B", "answer_index": 1,
         "category": "math"},
        {"question_id": 2, "question": "q2", "options": list("abcdefghij"), "answer": "J", "answer_index": 9,
         "category": "law"},
        {"question_id": 3, "question": "q3", "options": list("abcd"), "answer": "A", "answer_index": 2,
         "category": "law"},
    ])
    questions = mmlu.load_questions("mmlu_pro", str(tmp_path), "test", [], None)
    # one `note:` line naming the row, not a Python warning
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"note: {tmp_path / 'test.jsonl'}: 1 rows where `answer` and `answer_index` disagree (row 2); used answer_index")
    assert [q["gold"] for q in questions] == ["B", "J", "C"]  # answer_index wins
    model.decoder.bias.data[tokenizer.convert_tokens_to_ids("ĠJ")] += 30.0
    model.decoder.bias.data[tokenizer.convert_tokens_to_ids("ĠB")] += 20.0
    results, records = predict(model, tokenizer, questions, "mmlu_pro", letters="ABCDEFGHIJ")
    assert [r["pred"] for r in records] == ["B", "J", "B"]
    assert list(records[0]["probs"]) == ["A", "B", "C"]
    assert set(results["categories"]) == {"law", "math"}


def test_mmlu_pro_answer_beyond_the_options_is_an_error(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"question": "q", "options": ["a", "b", "c"], "answer": "D",
                                           "category": "math"}])
    with pytest.raises(core.InputError, match=r"test\.jsonl: row 0 \(line 1\): answer 'D' is not one letter of A, B"):
        mmlu.load_questions("mmlu_pro", str(tmp_path), "test", [], None)


# --- results


def test_summary_arithmetic():
    questions = [{"subject": s, "row": 0, "gold": g} for s, g in
                 [("anatomy", "A"), ("anatomy", "B"), ("anatomy", "C"), ("anatomy", "D"), ("virology", "A"),
                  ("formal_logic", "B"), ("formal_logic", "C"), ("formal_logic", "D")]]
    predictions = ["A", "B", "A", "A", "A", "B", "D", "D"]
    scores = [[0.0 if letter == p else -30.0 for letter in "ABCD"] for p in predictions]  # each picks its prediction
    results = mmlu.results_and_records(questions, scores, [(i, [0, 1, 2, 3]) for i in range(8)], "mmlu")[0]
    assert results["accuracy"] == 5 / 8
    assert results["accuracy_stderr"] == pytest.approx((5 / 8 * 3 / 8 / 8) ** 0.5)
    assert results["subjects"]["anatomy"] == {"accuracy": 0.5, "n": 4}
    assert results["macro_accuracy"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert results["categories"] == {"humanities": {"accuracy": 2 / 3, "n": 3}, "other": {"accuracy": 0.6, "n": 5}}
    assert results["predicted_letters"] == {"A": 4, "B": 2, "D": 2}


def test_cli_end_to_end_writes_consistent_files(tiny_model_dir, tmp_path):
    root = make_mmlu_dir(tmp_path / "mmlu")
    out = tmp_path / "out"
    result = run_eval("--model", tiny_model_dir, "--data_dir", root, "--output_dir", str(out), "--permutations", "2")
    assert result.returncode == 0, result.stderr
    assert "overall (micro)" in result.stdout
    assert "Loading weights" not in result.stderr and "scoring" not in result.stderr  # --no_progress: no bar at all
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    questions = mmlu.load_mmlu_local(root, "test", [])
    assert [(r["subject"], r["row"], r["gold"]) for r in records] == [
        (q["subject"], q["row"], q["gold"]) for q in questions]
    assert results["n"] == len(records) == 21
    assert results["accuracy"] == sum(r["pred"] == r["gold"] for r in records) / 21
    assert set(results["subjects"]) == {"astronomy", "formal_logic", "virology"}
    for r in records:
        assert sum(r["probs"].values()) == pytest.approx(1, abs=1e-5)
        assert r["pred"] == max(r["probs"], key=r["probs"].get)
    assert results["dtype"] == "float32" and results["device"] == "cpu" and results["permutations"] == 2
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sequences = mmlu.encode_questions(tokenizer, questions, permutations=2)[0]
    assert results["prompt_tokens"] == round(sum(map(len, sequences)) / len(sequences), 1)  # zero-shot too
    assert results["num_fewshot"] == results["fewshot_reduced"] == 0 and "fewshot" not in records[0]


def test_cli_fewshot_records_how_many_examples_fitted(tokenizer, tmp_path, capsys):
    from conftest import build_tiny_modernbert

    root = add_dev_files(make_mmlu_dir(tmp_path / "mmlu"), {s: 5 for s in ("astronomy", "virology", "formal_logic")})
    questions = mmlu.load_mmlu_local(root, "test", [])
    examples = mmlu.load_fewshot_examples("mmlu", root, ["astronomy", "formal_logic", "virology"], 3)
    full = sorted(len(s) for s in mmlu.encode_questions(tokenizer, questions, examples=examples)[0])
    positions = full[len(full) // 2]  # about half the questions cannot hold all three examples
    build_tiny_modernbert(str(tmp_path / "m"), tokenizer, max_position_embeddings=positions)
    out = tmp_path / "out"
    eval.main(["--model", str(tmp_path / "m"), "--data_dir", root, "--output_dir", str(out), "--num_fewshot", "3",
             "--no_progress"])
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    used = [r["fewshot"] for r in records]
    assert results["num_fewshot"] == 3 and 0 < results["fewshot_reduced"] == sum(n < 3 for n in used) < 21
    assert results["fewshot_mean"] == round(sum(used) / 21, 3) and 0 < results["prompt_tokens"] <= positions
    assert f"3-shot: {results['fewshot_reduced']} of 21 questions got fewer examples" in capsys.readouterr().out


def test_torchrun_two_processes_write_the_same_files_as_one(tiny_model_dir, tmp_path):
    root = make_mmlu_dir(tmp_path / "mmlu", per_subject=12)
    common = ["--model", tiny_model_dir, "--data_dir", root, "--no_progress", "--batch_tokens", "512"]
    one = subprocess.run([sys.executable, "eval.py", *common, "--output_dir", str(tmp_path / "one")],
                         capture_output=True, text=True, cwd=REPO)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "eval.py", *common,
                          "--output_dir", str(tmp_path / "two")], capture_output=True, text=True, cwd=REPO)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    timing = ("seconds", "questions_per_second", "processes")
    r1, r2 = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert r2["processes"] == 2
    assert {k: v for k, v in r1.items() if k not in timing} == {k: v for k, v in r2.items() if k not in timing}
    assert (tmp_path / "one" / "predictions.jsonl").read_text() == (tmp_path / "two" / "predictions.jsonl").read_text()
