"""lm-evaluation-harness: the `mlm_head` backend and the paper's MMLU task agree with eval.py; the package installs.

The harness tests are skipped where lm-eval is not installed (.ci/run installs it); the packaging tests run
everywhere.
"""

import glob
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys

import pytest
from conftest import ENV, REPO, WORDS, make_mmlu_dir, write_mmlu_csv

import eval
from mlm_classifier import InputError, mmlu

HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
needs_lm_eval = pytest.mark.skipif(not HAS_LM_EVAL, reason="lm-eval is not installed (pip install "
                                   "'lm-eval>=0.4.13,<0.5' or '.[lm-eval]'); .ci/run installs it")
TASKS = os.path.join(REPO, "mlm_classifier", "lm_eval_tasks")
SUBJECTS = ("astronomy", "formal_logic", "virology")
NO_HUB = {**ENV, "TOKENIZERS_PARALLELISM": "false"}

if HAS_LM_EVAL:
    import mlm_classifier.harness as harness


def write_dev_files(root, subjects, per_subject=3, seed=1):
    """root/dev/<subject>_dev.csv, the split few-shot examples come from, for each subject."""
    rng = random.Random(seed)
    for subject in subjects:
        rows = [[" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() + "?",
                 *(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(4)), rng.choice("ABCD")]
                for _ in range(per_subject)]
        write_mmlu_csv(os.path.join(root, "dev", f"{subject}_dev.csv"), rows)


@pytest.fixture(scope="module")
def mmlu_dir(tmp_path_factory):
    """Three subjects in MMLU's original layout: 7 test questions each (one spans two lines), 3 dev questions."""
    root = make_mmlu_dir(tmp_path_factory.mktemp("mmlu"), subjects=SUBJECTS)
    write_dev_files(root, SUBJECTS)
    return root


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return harness.MLMHeadLM(pretrained=tiny_model_dir, device="cpu", progress=False)


def task_manager(**metadata):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=harness.TASKS, include_defaults=False, metadata=metadata)


def evaluate(lm, tasks, manager, num_fewshot=None):
    import lm_eval

    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, num_fewshot=num_fewshot,
                                   log_samples=True, bootstrap_iters=0)


def eval_py(model_dir, data_dir, output_dir, *extra):
    """eval.py's results.json and its predictions.jsonl records keyed by (subject, row)."""
    eval.main(["--model", model_dir, "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--device", "cpu",
             "--no_progress", *extra])
    with open(os.path.join(output_dir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(output_dir, "predictions.jsonl")) as f:
        records = {(r["subject"], r["row"]): r for r in map(json.loads, f)}
    return results, records


def softmax(values):
    import math

    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def assert_agrees_with_eval_py(lm, harness_results, results, records, questions, examples=None):
    """Every question: the prompt the backend scored is eval.py's character for character, the prediction and
    the probabilities are eval.py's; and every subject's accuracy is eval.py's."""
    by_key = {(q["subject"], q["row"]): q for q in questions}
    mask = lm.tokenizer.mask_token
    predicted = []
    for task, samples in harness_results["samples"].items():
        subject = task.removeprefix("mmlu_mask_")
        assert len(samples) == results["subjects"][subject]["n"]
        for sample in samples:
            q, record = by_key[subject, sample["doc_id"]], records[subject, sample["doc_id"]]
            contexts = {context for context, _ in sample["arguments"]}
            assert len(contexts) == 1 and [c for _, c in sample["arguments"]] == [" A", " B", " C", " D"]
            shots = examples[subject] if examples else ()
            assert (harness.with_answer_slot(contexts.pop(), mask)
                    == mmlu.build_prompt(q["question"], q["choices"], shots, mask))
            lls = [resp[0][0] for resp in sample["resps"]]
            pred = "ABCD"[lls.index(max(lls))]  # the harness's argmax: a tie goes to the first
            assert pred == record["pred"]
            assert softmax(lls) == pytest.approx(list(record["probs"].values()), abs=2e-6)
            assert sample["acc"] == float(record["pred"] == record["gold"])
            predicted.append(pred)
        assert harness_results["results"][task]["acc,none"] == pytest.approx(results["subjects"][subject]["accuracy"])
    return predicted


# -----------------------------------------------------------------------------
# The paper's MMLU task agrees with eval.py


@needs_lm_eval
@pytest.mark.parametrize("num_fewshot", [0, 2])
def test_mmlu_mask_gives_eval_py_predictions_on_every_question(lm, tiny_model_dir, mmlu_dir, tmp_path, monkeypatch,
                                                               num_fewshot):
    calls = []
    score_sequences = harness.score_sequences

    def counted(model, sequences, mask_token_id, pad_token_id, option_ids, batch_tokens, pad_to_multiple_of, **kw):
        calls.append((len(sequences), option_ids, batch_tokens, pad_to_multiple_of))
        return score_sequences(model, sequences, mask_token_id, pad_token_id, option_ids, batch_tokens,
                               pad_to_multiple_of, **kw)

    monkeypatch.setattr(harness, "score_sequences", counted)
    out = evaluate(lm, [f"mmlu_mask_{s}" for s in SUBJECTS], task_manager(data_dir=mmlu_dir), num_fewshot)
    extra = ["--num_fewshot", str(num_fewshot)] if num_fewshot else []
    results, records = eval_py(tiny_model_dir, mmlu_dir, tmp_path / "eval", *extra)
    questions = mmlu.load_mmlu_local(mmlu_dir, "test", [])
    examples = mmlu.load_fewshot_examples("mmlu", mmlu_dir, list(SUBJECTS), num_fewshot) if num_fewshot else None
    assert_agrees_with_eval_py(lm, out, results, records, questions, examples)
    # Every request of the run in one scoring call, one sequence per question (4 choices ask about it), the
    # letters scored as eval.py scores them, under the CPU's token budget.
    from mlm_classifier import scoring

    assert calls == [(len(questions), [tuple(ids) for ids in scoring.letter_token_ids(lm.tokenizer, "ABCD")], 8192, 8)]
    assert out["results"][f"mmlu_mask_{SUBJECTS[0]}"]["alias"] == SUBJECTS[0]


@needs_lm_eval
def test_a_tie_goes_to_the_first_letter_as_in_eval_py(tiny_model_dir, mmlu_dir, tmp_path):
    """A model whose letters' output rows are one vector scores every letter alike: both pick A. (The backend
    takes the loaded model and tokenizer here, as from a notebook.)"""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from mlm_classifier import scoring

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = [i for spellings in scoring.letter_token_ids(tokenizer, "ABCD") for i in spellings]
    with torch.no_grad():
        projection = model.get_output_embeddings()
        projection.weight[ids] = projection.weight[ids[0]].clone()
        if projection.bias is not None:
            projection.bias[ids] = projection.bias[ids[0]].clone()
    tied = str(tmp_path / "tied")
    model.save_pretrained(tied)
    tokenizer.save_pretrained(tied)
    lm = harness.MLMHeadLM(pretrained=model, tokenizer=tokenizer, progress=False)  # loaded ones, from Python
    out = evaluate(lm, ["mmlu_mask_astronomy"], task_manager(data_dir=mmlu_dir))
    results, records = eval_py(tied, mmlu_dir, tmp_path / "eval", "--subjects", "astronomy")
    questions = mmlu.load_mmlu_local(mmlu_dir, "test", ["astronomy"])
    assert set(assert_agrees_with_eval_py(lm, out, results, records, questions)) == {"A"}
    assert all(len({resp[0][0] for resp in sample["resps"]}) == 1 for sample in out["samples"]["mmlu_mask_astronomy"])


@needs_lm_eval
def test_the_mmlu_mask_group_is_eval_py_accuracy_over_all_57_subjects(lm, tiny_model_dir, tmp_path):
    root = make_mmlu_dir(tmp_path / "mmlu", subjects=mmlu.MMLU_SUBJECTS, per_subject=2, seed=3)
    out = evaluate(lm, ["mmlu_mask"], task_manager(data_dir=root))
    results, records = eval_py(tiny_model_dir, root, tmp_path / "eval")
    assert_agrees_with_eval_py(lm, out, results, records, mmlu.load_mmlu_local(root, "test", []))
    assert out["results"]["mmlu_mask"]["acc,none"] == pytest.approx(results["accuracy"])
    names = {"STEM": "stem", "humanities": "humanities", "social sciences": "social_sciences", "other": "other"}
    for category, summary in results["categories"].items():
        assert out["results"][f"mmlu_mask_{names[category]}"]["acc,none"] == pytest.approx(summary["accuracy"])


@needs_lm_eval
def test_the_command_runs_the_task_and_a_multi_token_task_fails_with_one_line(tiny_model_dir, mmlu_dir, tmp_path):
    """The README's command: the harness's CLI with mlm_head registered and the shipped tasks included."""
    run = subprocess.run([sys.executable, "-m", "mlm_classifier.harness", "--tasks", "mmlu_mask_astronomy",
                          "--model_args", f"pretrained={tiny_model_dir},progress=False",
                          "--metadata", f"data_dir={mmlu_dir}", "--output_path", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=REPO, env=NO_HUB, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    [path] = glob.glob(str(tmp_path / "out" / "**" / "results_*.json"), recursive=True)
    with open(path) as f:
        accuracy = json.load(f)["results"]["mmlu_mask_astronomy"]["acc,none"]
    results, _ = eval_py(tiny_model_dir, mmlu_dir, tmp_path / "eval", "--subjects", "astronomy")
    assert accuracy == pytest.approx(results["accuracy"])
    assert "|astronomy|" in run.stdout.replace(" ", "")  # the harness's table

    # A task whose choices are words of several tokens, over a local CSV through the datasets `csv` builder.
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "fruit.csv").write_text("text,label\nthe sky,0\nthe grass,1\n")
    (tasks / "fruit.yaml").write_text(
        "task: fruit_words\ndataset_path: csv\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tasks / 'fruit.csv'}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"What is like {{text}}? Answer:\"\ndoc_to_choice: [\"red apple\", \"green pear\"]\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n")
    run = subprocess.run([sys.executable, "-m", "mlm_classifier.harness", "--tasks", "fruit_words", "--include_path",
                          str(tasks), "--model_args", f"pretrained={tiny_model_dir},progress=False"],
                         capture_output=True, text=True, cwd=REPO, env=NO_HUB, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: task fruit_words: the continuation ' red apple' is ")
    assert "cannot score it faithfully" in last


@needs_lm_eval
def test_more_fewshot_examples_than_a_split_holds_and_an_unreachable_model_are_one_line_each(mmlu_dir, tiny_model_dir):
    """As eval.py refuses them: the harness's own AssertionError, and an error that names the flag the user gave."""
    with pytest.raises(SystemExit) as done:
        harness.main(["--tasks", "mmlu_mask_astronomy", "--model_args", f"pretrained={tiny_model_dir},progress=False",
                      "--metadata", f"data_dir={mmlu_dir}", "--num_fewshot", "4"])  # the dev split holds 3
    assert str(done.value.code).startswith("error: --num_fewshot: number of fewshot samples requested exceeds the 3")
    with pytest.raises(InputError, match=r"^--model_args pretrained no-org/no-model: not a local folder"):
        harness.MLMHeadLM(pretrained="no-org/no-model")


# -----------------------------------------------------------------------------
# The backend


@needs_lm_eval
def test_the_answer_slot_is_appended_once():
    assert harness.ANSWER_SLOT.format(mask="[MASK]") == " [unused0] [MASK]"
    assert harness.with_answer_slot("ANSWER:\nAnswer:", "[MASK]") == "ANSWER:\nAnswer: [unused0] [MASK]"
    assert harness.with_answer_slot("Answer: ", "<mask>") == "Answer: [unused0] <mask>"
    assert harness.with_answer_slot("", "[MASK]") == "[unused0] [MASK]"
    assert harness.with_answer_slot("Answer: [unused0]", "[MASK]") == "Answer: [unused0] [MASK]"


@needs_lm_eval
def test_letters_score_both_spellings_and_other_answers_must_be_one_token(lm):
    from mlm_classifier import scoring

    both = tuple(scoring.letter_token_ids(lm.tokenizer, "B")[0])
    assert len(both) == 2 and harness.answer_ids(lm.tokenizer, " B") == harness.answer_ids(lm.tokenizer, "B") == both
    [red] = lm.tokenizer(" red", add_special_tokens=False)["input_ids"]
    assert harness.answer_ids(lm.tokenizer, " red") == (red,)
    with pytest.raises(InputError, match=r"the continuation ' red apple' is \d+ tokens"):
        harness.answer_ids(lm.tokenizer, " red apple")


def instances(questions, mask_token, task="mmlu_mask_demo"):
    """The harness's requests for eval.py's zero-shot prompts: each context is the prompt less its answer slot."""
    from lm_eval.api.instance import Instance

    slot = harness.ANSWER_SLOT.format(mask=mask_token)
    requests = []
    for doc_id, q in enumerate(questions):
        context = mmlu.build_prompt(q["question"], q["choices"], mask_token=mask_token).removesuffix(slot)
        requests += [Instance("loglikelihood", {}, (context, f" {letter}"), k, (task, doc_id, 1))
                     for k, letter in enumerate("ABCD")]
    return requests


@needs_lm_eval
@pytest.mark.parametrize("family", ["modernbert", "bert", "roberta"])
def test_any_bert_family_model_scores_letters_as_eval_py(family, request, mmlu_dir):
    """ModernBERT, BERT (whose [unused0] the loader registers as one token) and RoBERTa (`<mask>`)."""
    from mlm_classifier import scoring

    model_dir = request.getfixturevalue({"modernbert": "tiny_model_dir", "bert": "tiny_bert_dir",
                                         "roberta": "tiny_roberta_dir"}[family])
    lm = harness.MLMHeadLM(pretrained=model_dir, device="cpu", progress=False, batch_tokens=512)
    questions = mmlu.load_mmlu_local(mmlu_dir, "test", [])
    got = lm.loglikelihood(instances(questions, lm.tokenizer.mask_token))
    sequences, _, _ = mmlu.encode_questions(lm.tokenizer, questions)
    assert [lm.tokenizer(p)["input_ids"] for p in lm.last_prompts] == sequences  # eval.py's token ids
    scores = scoring.score_sequences(lm.model, sequences, lm.tokenizer.mask_token_id, lm.pad_token_id,
                                  scoring.letter_token_ids(lm.tokenizer, "ABCD"), 4096, 8)
    assert [ll for ll, _ in got] == pytest.approx([s for i in range(len(questions)) for s in scores[i]], abs=1e-5)


@needs_lm_eval
def test_is_greedy_is_the_likeliest_token_at_mask(tiny_model_dir, mmlu_dir):
    import torch

    from lm_eval.api.instance import Instance

    # A small token budget: many batches, whose order the greedy ids must follow.
    lm = harness.MLMHeadLM(pretrained=tiny_model_dir, device="cpu", progress=False, batch_tokens=300)
    questions = mmlu.load_mmlu_local(mmlu_dir, "test", [])
    sequences, _, _ = mmlu.encode_questions(lm.tokenizer, questions)
    _, greedy = lm.score_prompts(sequences, [(0,)])
    expected = {}
    with torch.no_grad():
        for i, ids in enumerate(sequences):
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0]
            expected[i] = int(logits[ids.index(lm.tokenizer.mask_token_id)].argmax())
    assert greedy == expected
    # A one-token loglikelihood request whose continuation is that token is greedy; another is not.
    context = mmlu.build_prompt(questions[0]["question"], questions[0]["choices"]).removesuffix(" [unused0] [MASK]")
    top = lm.tokenizer.decode([expected[0]])
    assert expected[0] in harness.answer_ids(lm.tokenizer, top)
    other = next(w for w in (" the", " red", " A") if expected[0] not in harness.answer_ids(lm.tokenizer, w))
    got = lm.loglikelihood([Instance("loglikelihood", {}, (context, c), 0, ("one_token", 0, 1)) for c in (top, other)])
    assert [greedy for _, greedy in got] == [True, False]


@needs_lm_eval
def test_requests_it_cannot_answer_are_one_error_naming_the_task(lm):
    from lm_eval.api.instance import Instance

    generate = [Instance("generate_until", {}, ("Q: 2 + 2 =", {"until": ["\n"]}), 0, ("gsm_demo", 0, 1))]
    with pytest.raises(InputError, match=r"^task gsm_demo: generate_until .* cannot be answered faithfully"):
        lm.generate_until(generate)
    rolling = [Instance("loglikelihood_rolling", {}, ("some text",), 0, ("wikitext_demo", 0, 1))]
    with pytest.raises(InputError, match=r"^task wikitext_demo: loglikelihood_rolling .* cannot be answered"):
        lm.loglikelihood_rolling(rolling)
    with pytest.raises(InputError, match="^--apply_chat_template: mlm_head has no chat template"):
        lm.apply_chat_template([{"role": "user", "content": "Q"}])


@needs_lm_eval
def test_bad_model_arguments_and_data_are_one_line_errors(tiny_model_dir, tmp_path):

    with pytest.raises(InputError, match="has no argument foo"):
        harness.MLMHeadLM.create_from_arg_string(f"pretrained={tiny_model_dir},foo=1")
    with pytest.raises(InputError, match="dtype=float8: use one of"):
        harness.MLMHeadLM(pretrained=tiny_model_dir, dtype="float8")
    with pytest.raises(InputError, match="pretrained .*: no such folder"):
        harness.MLMHeadLM(pretrained=str(tmp_path / "none"))
    # The harness's own --device (cuda:0 unless given) yields to the model arguments.
    lm = harness.MLMHeadLM.create_from_arg_obj({"pretrained": tiny_model_dir, "device": "cpu"},
                                               {"device": "cuda:0", "batch_size": 1})
    assert lm.device.type == "cpu"
    with pytest.raises(InputError, match=r"--metadata data_dir=.*: no test file for subject astronomy"):
        evaluate(lm, ["mmlu_mask_astronomy"], task_manager(data_dir=str(tmp_path)))


@needs_lm_eval
def test_the_command_line_adds_the_backend_and_the_tasks_unless_given():
    tasks = ["--include_path", harness.TASKS]
    assert harness.cli_args(["--tasks", "mmlu_mask"]) == ["--tasks", "mmlu_mask", "--model", "mlm_head",
                                                          "--device", "auto", *tasks]
    assert harness.cli_args(["run", "--model=hf", "--device", "cpu", "--include_path", "x"]) == [
        "run", "--model=hf", "--device", "cpu", "--include_path", "x"]
    assert harness.cli_args(["ls", "tasks"]) == ["ls", "tasks", *tasks]
    assert harness.cli_args(["--help"]) == ["--help"] and harness.cli_args([]) == []


# -----------------------------------------------------------------------------
# The shipped tasks and the package


def read_simple_yaml(path):
    """`key: value` lines of a task file (values as written)."""
    with open(path) as f:
        return dict(line.rstrip("\n").split(": ", 1) for line in f if ": " in line and not line.startswith(" "))


def test_the_tasks_are_the_57_subjects_in_eval_py_categories():
    folder = os.path.join(TASKS, "mmlu_mask")
    found = {}
    for path in glob.glob(os.path.join(folder, "mmlu_mask_*.yaml")):
        cfg = read_simple_yaml(path)
        assert cfg["include"] == "_mmlu_mask_template_yaml" and cfg["task"] == f"mmlu_mask_{cfg['task_alias']}"
        found[cfg["task_alias"]] = cfg["tag"]
    names = {"STEM": "stem", "humanities": "humanities", "social sciences": "social_sciences", "other": "other"}
    assert found == {s: f"mmlu_mask_{names[mmlu.MMLU_CATEGORY[s]]}_tasks" for s in mmlu.MMLU_SUBJECTS}


def test_the_template_states_eval_py_instruction_and_separator():
    with open(os.path.join(TASKS, "mmlu_mask", "_mmlu_mask_template_yaml")) as f:
        text = f.read()
    assert f"description: {json.dumps(mmlu.INSTRUCTION)}" in text
    assert f"fewshot_delimiter: {json.dumps(mmlu.BLOCK_SEPARATOR)}" in text
    assert 'target_delimiter: " [unused0] "' in text  # the examples' answers follow the anchor, as eval.py's


def test_pip_install_gives_the_package_with_its_tasks(tmp_path):
    """`pip install .` with this interpreter into a folder of its own: `from mlm_classifier import MLMClassifier`
    works outside the clone, and the harness tasks came along. Offline: the build uses this interpreter's setuptools
    (requirements.txt asks for one that reads pyproject's license field, PEP 639)."""
    setuptools = pytest.importorskip("setuptools", reason="building the package needs setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} cannot read PEP 639 license fields: pip install -r "
                    "requirements.txt brings setuptools>=77")
    source, target = tmp_path / "src", tmp_path / "site"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, name), source)
    shutil.copytree(os.path.join(REPO, "mlm_classifier"), source / "mlm_classifier",
                    ignore=shutil.ignore_patterns("__pycache__"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--target", str(target), str(source)], capture_output=True, text=True, env=NO_HUB,
                             timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = ("import os, mlm_classifier; from mlm_classifier import MLMClassifier; "
             "d = os.path.join(os.path.dirname(mlm_classifier.__file__), 'lm_eval_tasks', 'mmlu_mask'); "
             "print(mlm_classifier.__file__); print(len([n for n in os.listdir(d) if n != '__pycache__']))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**NO_HUB, "PYTHONPATH": str(target)})
    assert run.returncode == 0, run.stderr[-2000:]
    where, count = run.stdout.split()
    assert where.startswith(str(target)) and int(count) == 57 + 5 + 2  # subjects, groups, the template and its loader
