"""minimal.py: its prompts are eval.py's and MLMClassifier's, and its probabilities theirs to 1e-5."""

import os
import subprocess
import sys

import pytest
from conftest import ENV, REPO, WORDS, build_tiny_modernbert, make_mmlu_dir
from transformers import AutoModelForMaskedLM, AutoTokenizer

from mlm_classifier import mmlu
import minimal
import mlm_classifier as core
from mlm_classifier import prompts, scoring

NEWS = ["World", "Sports", "Business", "Science", "red"]  # five labels: letters past D too
TEXTS = ["the river city market", "  team game first second\n", "price market value", "energy light force system",
         "history of the law", "a plant cell"]


@pytest.fixture(scope="module")
def varied(tiny_model_dir, tmp_path_factory):
    """(folder, model, tokenizer) of a tiny ModernBERT whose larger random weights spread the letters' probabilities."""
    path = str(tmp_path_factory.mktemp("varied"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    build_tiny_modernbert(path, tokenizer, seed=3, initializer_range=0.5)
    return path, AutoModelForMaskedLM.from_pretrained(path).eval(), tokenizer


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    return mmlu.load_mmlu_local(make_mmlu_dir(tmp_path_factory.mktemp("mmlu"), per_subject=6), "test", [])


def spread(rows):
    """The largest difference between two options' probabilities in any row: near 0 would make the test vacuous."""
    return max(max(row) - min(row) for row in rows)


def test_mmlu_prompt_is_eval_pys_character_for_character(questions):
    cases = [(q["question"], q["choices"]) for q in questions]
    cases += [("  What is 2 + 2?\n", ["3", "4", "five", "22"]), ("Ten options?", [f"c{k}" for k in range(10)])]
    for question, choices in cases:
        assert minimal.mmlu_prompt(question, choices) == mmlu.build_prompt(question, choices)


def test_zero_shot_prompt_is_the_cores_template():
    options = prompts.options_block(dict(zip(NEWS, scoring.LETTERS)))
    filled = core.ZERO_SHOT_PROMPT.format(text="a text", options=options, label="[MASK]")
    assert minimal.zero_shot_prompt("a text", NEWS) == filled


def test_mmlu_probabilities_equal_eval_pys(varied, questions):
    _, model, tokenizer = varied
    sequences, views, _ = mmlu.encode_questions(tokenizer, questions)
    scores = core.score_sequences(model, sequences, tokenizer.mask_token_id, tokenizer.pad_token_id,
                                  scoring.letter_token_ids(tokenizer, "ABCD"), batch_tokens=4096, pad_to_multiple_of=8)
    theirs = [scoring.slot_probabilities(scores[k], order) for k, (_, order) in enumerate(views)]
    ours = [minimal.answer_probabilities(model, tokenizer, minimal.mmlu_prompt(q["question"], q["choices"]), "ABCD")
            for q in questions]
    for mine, eval_py in zip(ours, theirs):
        assert mine == pytest.approx(eval_py, abs=1e-5)
    records = mmlu.results_and_records(questions, scores, views, "mmlu")[1]  # what predictions.jsonl holds, rounded
    for mine, record in zip(ours, records):
        assert mine == pytest.approx(list(record["probs"].values()), abs=1e-5)
    assert spread(ours) > 0.1 and len({r["pred"] for r in records}) >= 2


def test_zero_shot_probabilities_equal_mlm_classifiers(varied):
    path, model, tokenizer = varied
    classifier = core.MLMClassifier.from_pretrained(path, labels=NEWS, device="cpu")
    theirs = classifier.probabilities(TEXTS)
    ours = [minimal.answer_probabilities(model, tokenizer, minimal.zero_shot_prompt(text, NEWS), "ABCDE")
            for text in TEXTS]
    for mine, classifier_probs in zip(ours, theirs):
        assert mine == pytest.approx(classifier_probs, abs=1e-5)
    assert spread(ours) > 0.1


def test_each_letter_sums_both_spellings(varied):
    # A's two spellings at 10 each beat B's single 10.5; the best spelling alone would pick B.
    _, model, tokenizer = varied
    prompt = minimal.mmlu_prompt(" ".join(WORDS[:8]), ["a", "b", "c", "d"])
    ids = tokenizer.convert_tokens_to_ids
    bias, norm = model.decoder.bias.data, model.head.norm.weight.data
    saved = bias.clone(), norm.clone()
    try:
        norm.zero_()  # the head's input is 0: every logit is the decoder's bias, exactly
        bias[ids("A")] = bias[ids("ĠA")] = 10.0
        bias[ids("B")] = 10.5
        probs = minimal.answer_probabilities(model, tokenizer, prompt, "ABCD")
    finally:
        bias.copy_(saved[0])
        norm.copy_(saved[1])
    assert probs[0] > probs[1] > 0.2 and sum(probs) == pytest.approx(1)


def test_runs_as_a_script(tiny_model_dir, tmp_path):
    script = tmp_path / "minimal.py"  # the file as it is, its one model name changed to the tiny local one
    source = open(os.path.join(REPO, "minimal.py"), encoding="utf-8").read()
    script.write_text(source.replace('"answerdotai/ModernBERT-Large-Instruct"', repr(tiny_model_dir)), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [line[0] for line in done.stdout.splitlines()] == ["{", "{"]  # one answer, one label distribution


def test_readmes_method_block_is_minimal_pys_own_code():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    block = readme.split("<!-- from minimal.py -->\n```python\n")[1].split("```")[0]
    minimal = open(os.path.join(REPO, "minimal.py"), encoding="utf-8").read()
    definitions = block.split("\n\n\nname = ")[0]  # the functions; the last lines only call them
    for piece in definitions.split("\n\n\n"):
        assert piece.strip() in minimal, piece[:60]
