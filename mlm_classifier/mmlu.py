"""MMLU and MMLU-Pro: the paper's prompt, the questions from the hub or local files, and their results.

Every question is a dict with `subject` (MMLU-Pro: its category), `row`, `question`, `choices` and `gold` (a letter).
The original MMLU CSVs (`DIR/<split>/<subject>_<split>.csv`) and MMLU-Pro's JSONL are read and checked row by row;
eval.py and the lm-evaluation-harness tasks (lm_eval_tasks/mmlu_mask) read them through this one reader. The prompt is
the paper's, character for character, ending `Answer: [unused0] [MASK]`; few-shot examples come first, solved.
"""

import csv
import glob
import io
import math
import os
import random
from collections import Counter

from .data import accuracy_table, load_hub_dataset, read_jsonl, read_text, row_and_line, say
from .errors import InputError
from .prompts import option_lines
from .scoring import LETTERS, combine_views, first_max, rotations, slot_probabilities
from .splits import some_rows

MAX_CHOICES = 10  # MMLU-Pro's questions have up to 10 options, A to J

# The paper's MMLU template, character for character: the instruction, then the question's block. The
# question is stripped, each choice line ends with a newline, then comes an empty line. [unused0] anchors
# the answer slot: the model was trained to put the answer token right after it.
INSTRUCTION = (
    "You will be given a question as well as a list of options. "
    "Read the question carefully and select the right answer from the list.\n"
)
# Few-shot: solved examples come first, each a block like the question's ending in its gold letter after
# [unused0], with an empty line between blocks; the instruction is given once. With none, this is the
# zero-shot prompt above. The examples are the first k of the subject's dev split (MMLU; the convention
# of the MMLU authors and of lm-evaluation-harness) or of the category's validation split (MMLU-Pro).
BLOCK_SEPARATOR = "\n\n"
FEWSHOT_SPLIT = {"mmlu": "dev", "mmlu_pro": "validation"}

# Subject -> category, the standard mapping of the MMLU authors (hendrycks/test categories.py), with
# their "other (business, health, misc.)" shortened to "other".
_SUBCATEGORY_TO_CATEGORY = {
    "physics": "STEM", "chemistry": "STEM", "biology": "STEM", "computer science": "STEM",
    "math": "STEM", "engineering": "STEM",
    "history": "humanities", "philosophy": "humanities", "law": "humanities",
    "politics": "social sciences", "culture": "social sciences", "economics": "social sciences",
    "geography": "social sciences", "psychology": "social sciences",
    "other": "other", "business": "other", "health": "other",
}
_SUBJECT_TO_SUBCATEGORY = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics",
    "business_ethics": "business", "clinical_knowledge": "health", "college_biology": "biology",
    "college_chemistry": "chemistry", "college_computer_science": "computer science",
    "college_mathematics": "math", "college_medicine": "health", "college_physics": "physics",
    "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering",
    "elementary_mathematics": "math", "formal_logic": "philosophy", "global_facts": "other",
    "high_school_biology": "biology", "high_school_chemistry": "chemistry",
    "high_school_computer_science": "computer science", "high_school_european_history": "history",
    "high_school_geography": "geography", "high_school_government_and_politics": "politics",
    "high_school_macroeconomics": "economics", "high_school_mathematics": "math",
    "high_school_microeconomics": "economics", "high_school_physics": "physics",
    "high_school_psychology": "psychology", "high_school_statistics": "math",
    "high_school_us_history": "history", "high_school_world_history": "history",
    "human_aging": "health", "human_sexuality": "culture", "international_law": "law",
    "jurisprudence": "law", "logical_fallacies": "philosophy", "machine_learning": "computer science",
    "management": "business", "marketing": "business", "medical_genetics": "health",
    "miscellaneous": "other", "moral_disputes": "philosophy", "moral_scenarios": "philosophy",
    "nutrition": "health", "philosophy": "philosophy", "prehistory": "history",
    "professional_accounting": "other", "professional_law": "law",
    "professional_medicine": "health", "professional_psychology": "psychology",
    "public_relations": "politics", "security_studies": "politics", "sociology": "culture",
    "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}
MMLU_SUBJECTS = sorted(_SUBJECT_TO_SUBCATEGORY)
MMLU_CATEGORY = {s: _SUBCATEGORY_TO_CATEGORY[c] for s, c in _SUBJECT_TO_SUBCATEGORY.items()}

# --split name -> (folder, file suffix) in the original MMLU archive.
MMLU_SPLIT_FILES = {"test": ("test", "test"), "validation": ("val", "val"), "dev": ("dev", "dev")}


# -----------------------------------------------------------------------------
# Questions: each is a dict with subject, row, question, choices and gold (a letter).


def read_mmlu_csv(path, subject):
    """Read one original MMLU CSV (headerless `question,A,B,C,D,answer`) into question dicts.

    `row` counts CSV records from 0, not physical lines: many questions span several lines. Errors name
    the file, the row and the line where that record starts.
    """
    questions = []
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    line = 1
    for row, record in enumerate(reader):
        where = f"{path}: {row_and_line(row, line)}"
        line = reader.line_num + 1  # where the next record starts
        if len(record) != 6:
            raise InputError(f"{where}: expected 6 fields (question, A, B, C, D, answer), found {len(record)}")
        answer = record[5].strip()
        if answer not in ("A", "B", "C", "D"):
            raise InputError(f"{where}: answer {record[5]!r} is not one of A, B, C, D")
        questions.append({"subject": subject, "row": row, "question": record[0], "choices": record[1:5],
                          "gold": answer})
    if not questions:
        raise InputError(f"{path}: no questions (the file is empty); give the subject's questions, or leave it out "
                         "of --subjects")
    return questions


def mmlu_paths(data_dir, split, subject):
    """Where one subject's CSV of a split may be: `DIR/<split>/<subject>_<split>.csv`, else `DIR/<subject>_<split>.csv`
    (`subject` may be a glob pattern)."""
    folder, suffix = MMLU_SPLIT_FILES[split]
    name = f"{subject}_{suffix}.csv"
    return [os.path.join(data_dir, folder, name), os.path.join(data_dir, name)]


def find_mmlu_files(data_dir, split):
    """Map subject -> CSV path for one split, from `DIR/<split>/<subject>_<split>.csv` or `DIR/*_<split>.csv`."""
    if not os.path.isdir(data_dir):
        raise InputError(f"--data_dir {data_dir}: no such folder")
    folder, suffix = MMLU_SPLIT_FILES[split]
    for pattern in mmlu_paths(data_dir, split, "*"):
        paths = sorted(glob.glob(pattern))
        if paths:
            return {os.path.basename(p)[: -len(f"_{suffix}.csv")]: p for p in paths}
    raise InputError(
        f"--data_dir {data_dir}: no MMLU {split} files found "
        f"(looked for {folder}/*_{suffix}.csv and *_{suffix}.csv)"
    )


def select_subjects(available, wanted, what="subject"):
    """Return the wanted names (all of `available` when `wanted` is empty), checking each exists."""
    if not wanted:
        return sorted(available)
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise InputError(f"--subjects: unknown {what} {', '.join(unknown)}; valid: {', '.join(sorted(available))}")
    return sorted(set(wanted))


def load_mmlu_local(data_dir, split, subjects):
    """Questions from the original MMLU CSV layout, subjects in alphabetical order (as the hub's `all`)."""
    files = find_mmlu_files(data_dir, split)
    questions = []
    for subject in select_subjects(files, subjects):
        questions += read_mmlu_csv(files[subject], subject)
    return questions


def load_mmlu_hub(split, subjects):
    """Questions from the hub's `cais/mmlu`, config `all`; `row` counts within each subject."""
    wanted = select_subjects(MMLU_SUBJECTS, subjects)
    rows_seen = Counter()
    questions = []
    for example in load_hub_dataset("cais/mmlu", "give local files with --data_dir", "all", split=split):
        subject = example["subject"]
        row = rows_seen[subject]
        rows_seen[subject] += 1
        if subject in wanted:
            questions.append({"subject": subject, "row": row, "question": example["question"],
                              "choices": list(example["choices"]), "gold": LETTERS[example["answer"]]})
    return questions


def read_mmlu_pro_jsonl(path):
    """Read MMLU-Pro records (`question`, `options`, `answer` and/or `answer_index`, `category`), each checked.

    `answer` must be exactly one of the question's letters and `answer_index` an integer (not a bool or a
    float) in range; when both are given and disagree, `answer_index` wins and a warning counts such rows.
    """
    questions, disagreements = [], []
    for row, line, record in read_jsonl(path):
        where = f"{path}: {row_and_line(row, line)}"
        if not isinstance(record, dict):
            raise InputError(f"{where}: a {type(record).__name__}, not a JSON object")
        missing = [k for k in ("question", "options", "category") if k not in record]
        if missing:
            raise InputError(f"{where}: missing field {', '.join(missing)}")
        for field in ("question", "category"):
            if not isinstance(record[field], str) or not record[field].strip():
                raise InputError(f"{where}: `{field}` is {record[field]!r}, not a non-empty string")
        options = record["options"]
        if not isinstance(options, list) or not 2 <= len(options) <= MAX_CHOICES:
            raise InputError(f"{where}: options must be a list of 2 to {MAX_CHOICES} strings")
        if not all(isinstance(option, str) for option in options):
            raise InputError(f"{where}: every option must be a string, found {options!r:.80}")
        valid = LETTERS[: len(options)]
        from_letter = record.get("answer")
        from_index = record.get("answer_index")
        if from_letter is None and from_index is None:
            raise InputError(f"{where}: needs `answer` or `answer_index`")
        if from_letter is not None and not (isinstance(from_letter, str) and len(from_letter) == 1
                                            and from_letter in valid):
            raise InputError(f"{where}: answer {from_letter!r} is not one letter of {', '.join(valid)}")
        if from_index is not None and not (type(from_index) is int and 0 <= from_index < len(options)):
            raise InputError(f"{where}: answer_index {from_index!r} is not an integer in 0..{len(options) - 1}")
        gold = from_letter
        if from_index is not None:
            gold = valid[from_index]
            if from_letter is not None and from_letter != gold:
                disagreements.append(row)
        questions.append({"subject": record["category"], "row": row, "question": record["question"],
                          "choices": options, "gold": gold, "question_id": record.get("question_id")})
    if disagreements:
        say(f"note: {path}: {len(disagreements)} rows where `answer` and `answer_index` disagree "
            f"({some_rows(disagreements)}); used answer_index")
    return questions


def load_mmlu_pro_hub(split):
    """Every MMLU-Pro question of one split of the hub's `TIGER-Lab/MMLU-Pro`, its category as its subject."""
    return [{"subject": ex["category"], "row": row, "question": ex["question"], "choices": list(ex["options"]),
             "gold": LETTERS[ex["answer_index"]], "question_id": ex["question_id"]}
            for row, ex in enumerate(load_hub_dataset("TIGER-Lab/MMLU-Pro", "give local files with --data_dir",
                                                      split=split))]


def load_mmlu_pro(data_dir, split, subjects):
    """MMLU-Pro questions from `DIR/<split>.jsonl` (or a .jsonl path), else the hub's `TIGER-Lab/MMLU-Pro`."""
    if data_dir:
        path = data_dir if data_dir.endswith(".jsonl") else os.path.join(data_dir, f"{split}.jsonl")
        if not os.path.exists(path):
            raise InputError(f"--data_dir {data_dir}: {path} does not exist")
        questions = read_mmlu_pro_jsonl(path)
    else:
        questions = load_mmlu_pro_hub(split)
    wanted = set(select_subjects({q["subject"] for q in questions}, subjects, what="category"))
    return [q for q in questions if q["subject"] in wanted]


def load_questions(task, data_dir, split, subjects, limit, sample=None, seed=0):
    """All questions for a run, validated, filtered by subject, then cut to the first `limit` (the first subjects in
    alphabetical order) or to a seeded `sample` across every subject, kept in their order."""
    if task == "mmlu":
        questions = load_mmlu_local(data_dir, split, subjects) if data_dir else load_mmlu_hub(split, subjects)
    else:
        questions = load_mmlu_pro(data_dir, "validation" if split == "validation" else split, subjects)
    if sample and sample < len(questions):
        questions = [questions[i] for i in sorted(random.Random(seed).sample(range(len(questions)), sample))]
    questions = questions[:limit] if limit else questions
    if not questions:
        raise InputError("no questions to score (check --subjects and --limit)")
    return questions


def check_fewshot(task, split, num_fewshot):
    """An InputError for a negative --num_fewshot, or for few-shot on the split the examples come from."""
    if num_fewshot < 0:
        raise InputError(f"--num_fewshot {num_fewshot} must be 0 (zero-shot) or more")
    if num_fewshot and split == FEWSHOT_SPLIT[task]:
        raise InputError(f"--num_fewshot {num_fewshot}: the solved examples come from the {split} split, which "
                         f"--split {split} scores; the examples would be the questions themselves")


def load_fewshot_examples(task, data_dir, subjects, num_fewshot):
    """{subject: its first `num_fewshot` questions of the few-shot split, with their gold letters} for each of
    `subjects` (repeats are fine: the questions' own); None zero-shot.

    The split is MMLU's dev (`DIR/dev/<subject>_dev.csv`, or the hub's `cais/mmlu` dev) or MMLU-Pro's
    validation (`DIR/validation.jsonl`, or the hub's), taking examples of the same category. A subject
    without a file, or with fewer questions than asked, is an InputError naming it.
    """
    if not num_fewshot:
        return None
    subjects = list(dict.fromkeys(subjects))
    flag, split = f"--num_fewshot {num_fewshot}", FEWSHOT_SPLIT[task]
    if task == "mmlu" and data_dir:
        pool, where = {}, {}
        for subject in subjects:
            paths = mmlu_paths(data_dir, split, subject)
            found = [path for path in paths if os.path.isfile(path)]
            if not found:
                raise InputError(f"{flag}: no {split} file for subject {subject} (looked for {' and '.join(paths)})")
            pool[subject], where[subject] = read_mmlu_csv(found[0], subject), found[0]
    elif task == "mmlu":
        pool = group_by_subject(load_mmlu_hub(split, subjects))
        where = dict.fromkeys(subjects, f"cais/mmlu's {split} split")
    elif data_dir:
        path = os.path.join(os.path.dirname(data_dir) if data_dir.endswith(".jsonl") else data_dir, f"{split}.jsonl")
        if not os.path.isfile(path):
            named = (f"category {subjects[0]}" if len(subjects) == 1 else f"categories {', '.join(subjects)}"
                     if len(subjects) <= 3 else f"the {len(subjects)} categories scored")
            raise InputError(f"{flag}: no {split} file for {named} (looked for {path})")
        pool, where = group_by_subject(read_mmlu_pro_jsonl(path)), dict.fromkeys(subjects, path)
    else:
        pool = group_by_subject(load_mmlu_pro_hub(split))
        where = dict.fromkeys(subjects, f"TIGER-Lab/MMLU-Pro's {split} split")
    what = "subject" if task == "mmlu" else "category"
    for subject in subjects:
        n = len(pool.get(subject, []))
        if n < num_fewshot:
            raise InputError(f"{flag}: {what} {subject} has only {n} questions in {where[subject]}")
    return {subject: pool[subject][:num_fewshot] for subject in subjects}


def group_by_subject(questions):
    """{subject: its questions, in their order}."""
    groups = {}
    for q in questions:
        groups.setdefault(q["subject"], []).append(q)
    return groups


def category_of(task, subject):
    """MMLU's four categories; MMLU-Pro's questions carry their category as their subject."""
    return MMLU_CATEGORY.get(subject, "other") if task == "mmlu" else subject


# -----------------------------------------------------------------------------
# Prompts and token ids


def question_block(question, choices, answer="[MASK]"):
    """One question in the paper's template, from `QUESTION:` to `Answer: [unused0] <answer>`: a solved example's
    gold letter, or the tokenizer's mask token (RoBERTa's is `<mask>`) where the model answers."""
    lines = option_lines(zip(LETTERS, choices))
    return "QUESTION:\n" + question.strip() + "\nCHOICES:\n" + lines + "\n\nANSWER:\nAnswer: [unused0] " + answer


def build_prompt(question, choices, examples=(), mask_token="[MASK]"):
    """The paper's multiple-choice prompt, ending in `Answer: [unused0] [MASK]` (the tokenizer's `mask_token`).

    `examples` (question dicts with `question`, `choices` and `gold`) come first, each solved with its gold
    letter; without them this is the paper's zero-shot prompt.
    """
    blocks = [question_block(e["question"], e["choices"], e["gold"]) for e in examples]
    return INSTRUCTION + BLOCK_SEPARATOR.join(blocks + [question_block(question, choices, mask_token)])


def encode_questions(tokenizer, questions, max_positions=None, permutations=1, examples=None):
    """Token ids of every question's prompt, under `permutations` cyclic rotations of its choices.

    Returns (sequences, views, shots): views[k] = (question index, order), where order[j] is the choice
    shown under the j-th letter; shots[i] is how many solved examples question i's prompts hold. A question
    with fewer choices than `permutations` is scored under all of its rotations. `examples` maps each
    subject to its solved examples (few-shot), shown as they are in every rotation. A prompt longer than the
    model's positions drops examples from the end, for all rotations of its question, until they fit; one
    too long even without examples is an InputError.
    """
    views = [(i, order) for i, q in enumerate(questions)
             for order in rotations(len(q["choices"]), min(permutations, len(q["choices"])))]
    shots = [len(examples[q["subject"]]) if examples else 0 for q in questions]
    sequences, todo = [None] * len(views), list(range(len(views)))
    while todo:  # every view once; then again only the views of questions that lost an example
        prompts = [build_prompt(questions[i]["question"], [questions[i]["choices"][c] for c in order],
                                examples[questions[i]["subject"]][:shots[i]] if examples else (), tokenizer.mask_token)
                   for i, order in (views[k] for k in todo)]
        too_long = set()
        for k, ids in zip(todo, tokenizer(prompts)["input_ids"]):
            sequences[k] = ids
            i = views[k][0]
            if max_positions and len(ids) > max_positions:
                if shots[i] == 0:
                    q = questions[i]
                    without = " even without examples" if examples else ""
                    raise InputError(f"{q['subject']} row {q['row']}: the prompt is {len(ids)} tokens, more than the "
                                     f"model's {max_positions} positions{without}")
                too_long.add(i)
        for i in too_long:
            shots[i] -= 1
        todo = [k for k, (i, _) in enumerate(views) if i in too_long]
    if examples:
        k = max(map(len, examples.values()))
        say(f"{k}-shot: {sum(n < k for n in shots)} of {len(questions)} questions got fewer examples to fit the "
            f"model's {max_positions} positions ({sum(shots) / len(shots):.2f} examples per question on average)")
    return sequences, views, shots


def prompt_stats(sequences, shots, num_fewshot):
    """results.json's record of the prompts: mean tokens per prompt, and how few-shot fitted the model."""
    return {"num_fewshot": num_fewshot, "prompt_tokens": round(sum(map(len, sequences)) / len(sequences), 1),
            "fewshot_mean": round(sum(shots) / len(shots), 3),
            "fewshot_reduced": sum(n < num_fewshot for n in shots)}


# -----------------------------------------------------------------------------
# Results


def summarize(questions, predictions, task):
    """The metrics of results.json from questions (with `subject`, `gold`) and predicted letters."""
    correct = [q["gold"] == p for q, p in zip(questions, predictions)]
    n = len(correct)
    accuracy = sum(correct) / n
    subjects = accuracy_table(correct, [q["subject"] for q in questions])
    return {
        "accuracy": accuracy,
        "accuracy_stderr": math.sqrt(accuracy * (1 - accuracy) / n),
        "macro_accuracy": sum(s["accuracy"] for s in subjects.values()) / len(subjects),
        "n": n,
        "categories": accuracy_table(correct, [category_of(task, q["subject"]) for q in questions]),
        "subjects": subjects,
        "predicted_letters": dict(sorted(Counter(predictions).items())),
        "gold_letters": dict(sorted(Counter(q["gold"] for q in questions).items())),
    }


def format_table(results):
    """The console summary: accuracy per category, then overall micro and macro."""
    lines = [f"{'category':<28}{'n':>7}{'accuracy':>10}"]
    for name, cat in results["categories"].items():
        lines.append(f"{name:<28}{cat['n']:>7}{100 * cat['accuracy']:>9.2f}%")
    lines.append(f"{'overall (micro)':<28}{results['n']:>7}{100 * results['accuracy']:>9.2f}%"
                 f"  ± {100 * results['accuracy_stderr']:.2f}")
    lines.append(f"{'overall (macro, subjects)':<28}{'':>7}{100 * results['macro_accuracy']:>9.2f}%")
    return "\n".join(lines)


def results_and_records(questions, scores, views, task, shots=None):
    """Predicted letters, results.json's metrics and predictions.jsonl's records from the letter scores.

    Each choice's probability is averaged over the question's views (rotations); ties go to the earlier
    letter, as in the published eval. With `shots` (few-shot), each record says how many examples it had.
    """
    per_question = [[] for _ in questions]
    for k, (i, order) in enumerate(views):
        per_question[i].append(slot_probabilities(scores[k], order))
    records, predictions = [], []
    for i, (q, view_probs) in enumerate(zip(questions, per_question)):
        probs = combine_views(view_probs)
        pred = LETTERS[first_max(probs)]
        record = {"subject": q["subject"], "row": q["row"], "gold": q["gold"], "pred": pred,
                  "probs": {letter: round(p, 6) for letter, p in zip(LETTERS, probs)}}
        if q.get("question_id") is not None:
            record["question_id"] = q["question_id"]
        if shots is not None:
            record["fewshot"] = shots[i]
        records.append(record)
        predictions.append(pred)
    return summarize(questions, predictions, task), records
