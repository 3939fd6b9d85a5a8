"""MMLU and MMLU-Pro: the paper's prompt, the questions from the hub or local files, and their results.

A question is a dict with `subject` (MMLU-Pro: its category), `row`, `question`, `choices` and `gold` (a letter).
eval.py and the harness tasks (lm_eval_tasks/mmlu_mask) read the original CSVs through this one checked reader.
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

# The paper's template, character for character (build_prompt): this instruction once, then each question's block
# from `QUESTION:` to `Answer: [unused0] [MASK]`, solved examples first; [unused0] anchors the answer slot.
INSTRUCTION = ("You will be given a question as well as a list of options. "
               "Read the question carefully and select the right answer from the list.\n")
BLOCK_SEPARATOR = "\n\n"
# Where the examples come from: the first k of the subject's dev split (MMLU, as the MMLU authors and
# lm-evaluation-harness do) or of the category's validation split (MMLU-Pro).
FEWSHOT_SPLIT = {"mmlu": "dev", "mmlu_pro": "validation"}

# Subject -> category: the MMLU authors' (hendrycks/test categories.py), "other (business, health, misc.)" as "other".
MMLU_CATEGORY = {subject: category for category, subjects in {
    "STEM": """abstract_algebra astronomy college_biology college_chemistry college_computer_science
        college_mathematics college_physics computer_security conceptual_physics electrical_engineering
        elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science
        high_school_mathematics high_school_physics high_school_statistics machine_learning""",
    "humanities": """formal_logic high_school_european_history high_school_us_history high_school_world_history
        international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy prehistory
        professional_law world_religions""",
    "social sciences": """econometrics high_school_geography high_school_government_and_politics
        high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality
        professional_psychology public_relations security_studies sociology us_foreign_policy""",
    "other": """anatomy business_ethics clinical_knowledge college_medicine global_facts human_aging management
        marketing medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology""",
}.items() for subject in subjects.split()}
MMLU_SUBJECTS = sorted(MMLU_CATEGORY)

# --split name -> the folder and file suffix in the original MMLU archive.
MMLU_SPLIT_FILES = {"test": "test", "validation": "val", "dev": "dev"}


def read_mmlu_csv(path, subject):
    """One original MMLU CSV (headerless `question,A,B,C,D,answer`) as questions. `row` counts records, not lines
    (a question may span several); errors name the line where the record starts."""
    questions, line = [], 1
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    for row, record in enumerate(reader):
        if len(record) != 6:
            raise InputError(f"{path}: {row_and_line(row, line)}: expected 6 fields (question, A, B, C, D, answer), "
                             f"found {len(record)}")
        if record[5].strip() not in ("A", "B", "C", "D"):
            raise InputError(f"{path}: {row_and_line(row, line)}: answer {record[5]!r} is not one of A, B, C, D")
        questions.append({"subject": subject, "row": row, "question": record[0], "choices": record[1:5],
                          "gold": record[5].strip()})
        line = reader.line_num + 1
    if not questions:
        raise InputError(f"{path}: no questions (the file is empty); give the subject's questions, or leave it out "
                         "of --subjects")
    return questions


def mmlu_paths(data_dir, split, subject):
    """Where a subject's CSV may be: `DIR/<split>/<subject>_<split>.csv`, else `DIR/<subject>_<split>.csv`
    (`subject` may be a glob pattern)."""
    name = f"{subject}_{MMLU_SPLIT_FILES[split]}.csv"
    return [os.path.join(data_dir, MMLU_SPLIT_FILES[split], name), os.path.join(data_dir, name)]


def select_subjects(available, wanted, what="subject"):
    """The wanted names (all of `available` when none), each checked."""
    if not wanted:
        return sorted(available)
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise InputError(f"--subjects: unknown {what} {', '.join(unknown)}; valid: {', '.join(sorted(available))}")
    return sorted(set(wanted))


def load_mmlu_local(data_dir, split, subjects):
    """Questions from the original MMLU CSV layout, subjects in alphabetical order (as the hub's `all`)."""
    if not os.path.isdir(data_dir):
        raise InputError(f"--data_dir {data_dir}: no such folder")
    folder = MMLU_SPLIT_FILES[split]
    for pattern in mmlu_paths(data_dir, split, "*"):
        files = {os.path.basename(p)[: -len(f"_{folder}.csv")]: p for p in sorted(glob.glob(pattern))}
        if files:
            return [q for subject in select_subjects(files, subjects) for q in read_mmlu_csv(files[subject], subject)]
    raise InputError(f"--data_dir {data_dir}: no MMLU {split} files found "
                     f"(looked for {folder}/*_{folder}.csv and *_{folder}.csv)")


def load_mmlu_hub(split, subjects):
    """Questions from the hub's `cais/mmlu`, config `all`; `row` counts within each subject."""
    wanted = select_subjects(MMLU_SUBJECTS, subjects)
    rows_seen, questions = Counter(), []
    for example in load_hub_dataset("cais/mmlu", "give local files with --data_dir", "all", split=split):
        subject = example["subject"]
        rows_seen[subject] += 1
        if subject in wanted:
            questions.append({"subject": subject, "row": rows_seen[subject] - 1, "question": example["question"],
                              "choices": list(example["choices"]), "gold": LETTERS[example["answer"]]})
    return questions


def read_mmlu_pro_jsonl(path):
    """MMLU-Pro records (`question`, `options`, `answer` and/or `answer_index`, `category`), each checked; where
    `answer` and `answer_index` disagree, `answer_index` wins and a note counts such rows."""
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
        from_letter, from_index = record.get("answer"), record.get("answer_index")
        if from_letter is None and from_index is None:
            raise InputError(f"{where}: needs `answer` or `answer_index`")
        if from_letter is not None and not (isinstance(from_letter, str) and len(from_letter) == 1
                                            and from_letter in valid):
            raise InputError(f"{where}: answer {from_letter!r} is not one letter of {', '.join(valid)}")
        if from_index is not None and not (type(from_index) is int and 0 <= from_index < len(options)):
            raise InputError(f"{where}: answer_index {from_index!r} is not an integer in 0..{len(options) - 1}")
        gold = from_letter if from_index is None else valid[from_index]
        if from_letter is not None and from_letter != gold:
            disagreements.append(row)
        questions.append({"subject": record["category"], "row": row, "question": record["question"],
                          "choices": options, "gold": gold, "question_id": record.get("question_id")})
    if disagreements:
        say(f"note: {path}: {len(disagreements)} rows where `answer` and `answer_index` disagree "
            f"({some_rows(disagreements)}); used answer_index")
    return questions


def load_mmlu_pro_hub(split):
    """Every question of one split of the hub's `TIGER-Lab/MMLU-Pro`, its category as its subject."""
    return [{"subject": ex["category"], "row": row, "question": ex["question"], "choices": list(ex["options"]),
             "gold": LETTERS[ex["answer_index"]], "question_id": ex["question_id"]}
            for row, ex in enumerate(load_hub_dataset("TIGER-Lab/MMLU-Pro", "give local files with --data_dir",
                                                      split=split))]


def load_questions(task, data_dir, split, subjects, limit, sample=None, seed=0):
    """A run's questions, checked and filtered by subject, then cut to the first `limit` of each subject (as
    lm-evaluation-harness's --limit cuts each task), or to a seeded `sample` across every subject, in their order."""
    if task == "mmlu":
        questions = load_mmlu_local(data_dir, split, subjects) if data_dir else load_mmlu_hub(split, subjects)
    else:  # MMLU-Pro: DIR/<split>.jsonl (or a .jsonl path), else the hub's; filtered by category
        path = data_dir and (data_dir if data_dir.endswith(".jsonl") else os.path.join(data_dir, f"{split}.jsonl"))
        if path and not os.path.exists(path):
            raise InputError(f"--data_dir {data_dir}: {path} does not exist")
        questions = read_mmlu_pro_jsonl(path) if path else load_mmlu_pro_hub(split)
        wanted = set(select_subjects({q["subject"] for q in questions}, subjects, what="category"))
        questions = [q for q in questions if q["subject"] in wanted]
    if sample and sample < len(questions):
        questions = [questions[i] for i in sorted(random.Random(seed).sample(range(len(questions)), sample))]
    if limit:
        taken = Counter()
        questions = [q for q in questions if taken.update([q["subject"]]) or taken[q["subject"]] <= limit]
    if not questions:
        raise InputError("no questions to score (check --subjects and --limit)")
    return questions


def load_fewshot_examples(task, data_dir, subjects, num_fewshot):
    """{subject: its first `num_fewshot` questions of the few-shot split (FEWSHOT_SPLIT), solved} for each of
    `subjects` (repeats are fine); a subject without a file or with too few questions is an InputError."""
    subjects = list(dict.fromkeys(subjects))
    flag, split = f"--num_fewshot {num_fewshot}", FEWSHOT_SPLIT[task]
    if task == "mmlu" and data_dir:
        questions, where = [], {}
        for subject in subjects:
            paths = mmlu_paths(data_dir, split, subject)
            found = [path for path in paths if os.path.isfile(path)]
            if not found:
                raise InputError(f"{flag}: no {split} file for subject {subject} (looked for {' and '.join(paths)})")
            questions += read_mmlu_csv(found[0], subject)
            where[subject] = found[0]
    elif task == "mmlu":
        questions, where = load_mmlu_hub(split, subjects), dict.fromkeys(subjects, f"cais/mmlu's {split} split")
    elif data_dir:
        path = os.path.join(os.path.dirname(data_dir) if data_dir.endswith(".jsonl") else data_dir, f"{split}.jsonl")
        if not os.path.isfile(path):
            named = (f"category {subjects[0]}" if len(subjects) == 1 else f"categories {', '.join(subjects)}"
                     if len(subjects) <= 3 else f"the {len(subjects)} categories scored")
            raise InputError(f"{flag}: no {split} file for {named} (looked for {path})")
        questions, where = read_mmlu_pro_jsonl(path), dict.fromkeys(subjects, path)
    else:
        questions, where = load_mmlu_pro_hub(split), dict.fromkeys(subjects, f"TIGER-Lab/MMLU-Pro's {split} split")
    pool = {subject: [q for q in questions if q["subject"] == subject] for subject in subjects}
    what = "subject" if task == "mmlu" else "category"
    for subject in subjects:
        n = len(pool[subject])
        if n < num_fewshot:
            raise InputError(f"{flag}: {what} {subject} has only {n} questions in {where[subject]}")
    return {subject: pool[subject][:num_fewshot] for subject in subjects}


def build_prompt(question, choices, examples=(), mask_token="[MASK]"):
    """The paper's prompt, ending in `Answer: [unused0] <mask_token>` (RoBERTa's is `<mask>`), after `examples`
    (questions with their `gold`) solved; without them the paper's zero-shot prompt."""
    blocks = [(e["question"], e["choices"], e["gold"]) for e in examples] + [(question, choices, mask_token)]
    return INSTRUCTION + BLOCK_SEPARATOR.join(
        f"QUESTION:\n{text.strip()}\nCHOICES:\n{option_lines(zip(LETTERS, options))}\n\nANSWER:\nAnswer: [unused0] "
        f"{answer}" for text, options, answer in blocks)


def encode_questions(tokenizer, questions, max_positions=None, permutations=1, examples=None):
    """(sequences, views, shots): each question's prompt ids under `permutations` cyclic rotations of its choices (all,
    with fewer choices); views[k] = (question index, order), order[j] the choice under letter j; shots[i] how many
    solved examples (`examples[subject]`, never rotated) question i's prompts hold: a prompt too long for the model
    drops them from the end, for all its rotations; one too long even without them is an InputError."""
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
                    without = " even without examples" if examples else ""
                    raise InputError(f"{questions[i]['subject']} row {questions[i]['row']}: the prompt is {len(ids)} "
                                     f"tokens, more than the model's {max_positions} positions{without}")
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
            "fewshot_mean": round(sum(shots) / len(shots), 3), "fewshot_reduced": sum(n < num_fewshot for n in shots)}


def results_and_records(questions, scores, views, task, shots=None):
    """results.json's metrics and predictions.jsonl's records from the letter scores: each choice's probability is
    averaged over the question's views, ties go to the earlier letter (as in the published eval); with `shots`
    (few-shot) each record says how many examples it had."""
    per_question = [[] for _ in questions]
    for k, (i, order) in enumerate(views):
        per_question[i].append(slot_probabilities(scores[k], order))
    records = []
    for i, (q, view_probs) in enumerate(zip(questions, per_question)):
        probs = combine_views(view_probs)
        record = {"subject": q["subject"], "row": q["row"], "gold": q["gold"], "pred": LETTERS[first_max(probs)],
                  "probs": {letter: round(p, 6) for letter, p in zip(LETTERS, probs)}}
        if q.get("question_id") is not None:
            record["question_id"] = q["question_id"]
        if shots is not None:
            record["fewshot"] = shots[i]
        records.append(record)
    correct = [r["pred"] == r["gold"] for r in records]
    accuracy = sum(correct) / len(correct)
    subjects = accuracy_table(correct, [q["subject"] for q in questions])
    categories = [MMLU_CATEGORY.get(q["subject"], "other") if task == "mmlu" else q["subject"] for q in questions]
    return {"accuracy": accuracy, "accuracy_stderr": math.sqrt(accuracy * (1 - accuracy) / len(correct)),
            "macro_accuracy": sum(s["accuracy"] for s in subjects.values()) / len(subjects), "n": len(correct),
            "categories": accuracy_table(correct, categories), "subjects": subjects,
            "predicted_letters": dict(sorted(Counter(r["pred"] for r in records).items())),
            "gold_letters": dict(sorted(Counter(q["gold"] for q in questions).items()))}, records


def format_table(results):
    """The console summary: accuracy per category, then overall micro and macro."""
    lines = [f"{'category':<28}{'n':>7}{'accuracy':>10}"]
    lines += [f"{name:<28}{cat['n']:>7}{100 * cat['accuracy']:>9.2f}%" for name, cat in results["categories"].items()]
    lines.append(f"{'overall (micro)':<28}{results['n']:>7}{100 * results['accuracy']:>9.2f}%"
                 f"  ± {100 * results['accuracy_stderr']:.2f}")
    lines.append(f"{'overall (macro, subjects)':<28}{'':>7}{100 * results['macro_accuracy']:>9.2f}%")
    return "\n".join(lines)
