"""Zero-shot multiple choice through a masked language model's MLM head: MMLU and MMLU-Pro.

The method of *It's All in The [MASK]* (Clavié, Cooper, Warner, 2025): the prompt ends with
`Answer: [unused0] [MASK]`, and the model's logits at the last [MASK] pick the answer letter.
Each letter scores the summed probability of its single-token spellings `A` and ` A`, exactly as the
published eval.py does, so our predictions equal its predictions; we get there much faster by
batching length-sorted prompts and running the MLM head only on the [MASK] rows (mlm_classifier.py).

    python eval.py                                  # ModernBERT-Large-Instruct on the MMLU test set (hub)
    python eval.py --data_dir ~/mmlu                # the same from the original MMLU CSV files
    python eval.py --task mmlu_pro --data_dir DIR   # MMLU-Pro from DIR/test.jsonl
    python eval.py --permutations 4                 # each question under 4 rotations of its choices
    torchrun --nproc_per_node 2 eval.py ...         # one shard of the questions per process

This file holds what is MMLU's own (the template, the files, subjects and categories); the scoring is
the core module's. Every function takes explicit arguments, so it can be pasted into a notebook.
"""

import argparse
import csv
import glob
import json
import math
import os
import sys
import time
import warnings
from collections import Counter

from mlm_classifier import (InputError, accuracy_table, batch_defaults, combine_views, end_distributed, first_max,
                            gather_scores, init_distributed, letter_token_ids, load_masked_lm, load_tokenizer,
                            max_positions, read_jsonl, resolve_attn_implementation, resolve_device, resolve_dtype,
                            rotations, score_sequences, slot_probabilities, write_atomic)

LETTERS = "ABCDEFGHIJ"

# The paper's MMLU template, character for character. The question is stripped, each choice line ends
# with a newline, then comes an empty line. [unused0] anchors the answer slot: the model was trained to
# put the answer token right after it.
PROMPT_HEADER = (
    "You will be given a question as well as a list of options. "
    "Read the question carefully and select the right answer from the list.\n"
    "QUESTION:\n"
)
PROMPT_FOOTER = "\nANSWER:\nAnswer: [unused0] [MASK]"

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

    `row` counts CSV records from 0, not physical lines: many questions span several lines.
    Errors name the file and the record's 1-based number as `line N`.
    """
    questions = []
    with open(path, newline="", encoding="utf-8") as f:
        for number, record in enumerate(csv.reader(f), start=1):
            if len(record) != 6:
                raise InputError(
                    f"{path}: line {number}: expected 6 fields (question, A, B, C, D, answer), "
                    f"found {len(record)}"
                )
            answer = record[5].strip()
            if answer not in ("A", "B", "C", "D"):
                raise InputError(f"{path}: line {number}: answer {record[5]!r} is not one of A, B, C, D")
            questions.append({"subject": subject, "row": number - 1, "question": record[0],
                              "choices": record[1:5], "gold": answer})
    return questions


def find_mmlu_files(data_dir, split):
    """Map subject -> CSV path for one split, from `DIR/<split>/<subject>_<split>.csv` or `DIR/*_<split>.csv`."""
    folder, suffix = MMLU_SPLIT_FILES[split]
    for pattern in (os.path.join(data_dir, folder, f"*_{suffix}.csv"), os.path.join(data_dir, f"*_{suffix}.csv")):
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
    from datasets import load_dataset  # only the hub path needs `datasets`

    wanted = select_subjects(MMLU_SUBJECTS, subjects)
    rows_seen = Counter()
    questions = []
    for example in load_dataset("cais/mmlu", "all", split=split):
        subject = example["subject"]
        row = rows_seen[subject]
        rows_seen[subject] += 1
        if subject in wanted:
            questions.append({"subject": subject, "row": row, "question": example["question"],
                              "choices": list(example["choices"]), "gold": LETTERS[example["answer"]]})
    return questions


def read_mmlu_pro_jsonl(path):
    """Read MMLU-Pro records (`question`, `options`, `answer` and/or `answer_index`, `category`).

    When `answer` and `answer_index` disagree, `answer_index` wins; a warning counts such rows.
    """
    questions, disagreements = [], 0
    for number, record in read_jsonl(path):
        missing = [k for k in ("question", "options", "category") if k not in record]
        if missing:
            raise InputError(f"{path}: line {number}: missing field {', '.join(missing)}")
        options = record["options"]
        if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
            raise InputError(f"{path}: line {number}: options must be a list of 2 to {len(LETTERS)} strings")
        valid = LETTERS[: len(options)]
        from_letter = record.get("answer")
        from_index = record.get("answer_index")
        if from_letter is None and from_index is None:
            raise InputError(f"{path}: line {number}: needs `answer` or `answer_index`")
        if from_letter is not None and from_letter not in valid:
            raise InputError(f"{path}: line {number}: answer {from_letter!r} is not one of {', '.join(valid)}")
        if from_index is not None and not (isinstance(from_index, int) and 0 <= from_index < len(options)):
            raise InputError(f"{path}: line {number}: answer_index {from_index!r} is outside 0..{len(options) - 1}")
        gold = from_letter
        if from_index is not None:
            gold = valid[from_index]
            disagreements += from_letter is not None and from_letter != gold
        questions.append({"subject": record["category"], "row": number - 1, "question": record["question"],
                          "choices": options, "gold": gold, "question_id": record.get("question_id")})
    if disagreements:
        warnings.warn(f"{path}: {disagreements} rows where `answer` and `answer_index` disagree; used answer_index",
                      stacklevel=2)
    return questions


def load_mmlu_pro(data_dir, split, subjects):
    """MMLU-Pro questions from `DIR/<split>.jsonl` (or a .jsonl path), else the hub's `TIGER-Lab/MMLU-Pro`."""
    if data_dir:
        path = data_dir if data_dir.endswith(".jsonl") else os.path.join(data_dir, f"{split}.jsonl")
        if not os.path.exists(path):
            raise InputError(f"--data_dir {data_dir}: {path} does not exist")
        questions = read_mmlu_pro_jsonl(path)
    else:
        from datasets import load_dataset

        questions = []
        for row, ex in enumerate(load_dataset("TIGER-Lab/MMLU-Pro", split=split)):
            questions.append({"subject": ex["category"], "row": row, "question": ex["question"],
                              "choices": list(ex["options"]), "gold": LETTERS[ex["answer_index"]],
                              "question_id": ex["question_id"]})
    wanted = set(select_subjects({q["subject"] for q in questions}, subjects, what="category"))
    return [q for q in questions if q["subject"] in wanted]


def load_questions(task, data_dir, split, subjects, limit):
    """All questions for a run, validated, filtered by subject and cut to the first `limit`."""
    if task == "mmlu":
        questions = load_mmlu_local(data_dir, split, subjects) if data_dir else load_mmlu_hub(split, subjects)
    else:
        questions = load_mmlu_pro(data_dir, "validation" if split == "validation" else split, subjects)
    return questions[:limit] if limit else questions


def category_of(task, subject):
    """MMLU's four categories; MMLU-Pro's questions carry their category as their subject."""
    return MMLU_CATEGORY.get(subject, "other") if task == "mmlu" else subject


# -----------------------------------------------------------------------------
# Prompts and token ids


def build_prompt(question, choices, mask_token="[MASK]"):
    """The paper's multiple-choice prompt, ending in `Answer: [unused0] [MASK]`, with the tokenizer's own mask
    token in the answer slot (RoBERTa's is `<mask>`)."""
    lines = "".join(f"- {letter}: {choice}\n" for letter, choice in zip(LETTERS, choices))
    return PROMPT_HEADER + question.strip() + "\nCHOICES:\n" + lines + PROMPT_FOOTER.replace("[MASK]", mask_token)


def encode_questions(tokenizer, questions, max_positions=None, permutations=1):
    """Token ids of every question's prompt, under `permutations` cyclic rotations of its choices.

    Returns (sequences, views): views[k] = (question index, order), where order[j] is the choice shown
    under the j-th letter. A question with fewer choices than `permutations` is scored under all of its
    rotations. A prompt longer than the model's positions is an InputError.
    """
    views = [(i, order) for i, q in enumerate(questions)
             for order in rotations(len(q["choices"]), min(permutations, len(q["choices"])))]
    prompts = [build_prompt(questions[i]["question"], [questions[i]["choices"][c] for c in order],
                            tokenizer.mask_token) for i, order in views]
    sequences = tokenizer(prompts)["input_ids"]
    for (i, _), ids in zip(views, sequences):
        if max_positions and len(ids) > max_positions:
            q = questions[i]
            raise InputError(f"{q['subject']} row {q['row']}: the prompt is {len(ids)} tokens, "
                             f"more than the model's {max_positions} positions")
    return sequences, views


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


def finish(questions, scores, views, task):
    """Predicted letters, results.json's metrics and predictions.jsonl's records from the letter scores.

    Each choice's probability is averaged over the question's views (rotations); ties go to the earlier
    letter, as in the published eval.
    """
    per_question = [[] for _ in questions]
    for k, (i, order) in enumerate(views):
        per_question[i].append(slot_probabilities(scores[k], order))
    records, predictions = [], []
    for q, view_probs in zip(questions, per_question):
        probs = combine_views(view_probs)
        pred = LETTERS[first_max(probs)]
        record = {"subject": q["subject"], "row": q["row"], "gold": q["gold"], "pred": pred,
                  "probs": {letter: round(p, 6) for letter, p in zip(LETTERS, probs)}}
        if q.get("question_id") is not None:
            record["question_id"] = q["question_id"]
        records.append(record)
        predictions.append(pred)
    return summarize(questions, predictions, task), records


def write_outputs(output_dir, results, records):
    """results.json and predictions.jsonl, each written atomically."""
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(os.path.join(output_dir, "results.json"), json.dumps(results, indent=2) + "\n")
    write_atomic(os.path.join(output_dir, "predictions.jsonl"), "".join(json.dumps(r) + "\n" for r in records))


# -----------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="answerdotai/ModernBERT-Large-Instruct", help="hub name or local folder")
    p.add_argument("--task", default="mmlu", choices=["mmlu", "mmlu_pro"])
    p.add_argument("--data_dir", default=None,
                   help="local data: MMLU's original CSV folder, or a folder with MMLU-Pro's <split>.jsonl; "
                        "without it the hub (cais/mmlu, TIGER-Lab/MMLU-Pro)")
    p.add_argument("--split", default="test", choices=["test", "validation", "dev"])
    p.add_argument("--subjects", default="", help="comma-separated subjects (MMLU) or categories (MMLU-Pro)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N questions after filtering")
    p.add_argument("--permutations", type=int, default=1,
                   help="score each question under this many cyclic rotations of its choices and average each "
                        "choice's probability (a question with fewer choices uses all of its rotations)")
    p.add_argument("--batch_tokens", type=int, default=None,
                   help="padded tokens per batch (default: 65536 on a GPU, 8192 on the CPU)")
    p.add_argument("--pad_to_multiple_of", type=int, default=None,
                   help="pad batch width to a multiple of this (default: 64 on a GPU, 8 on the CPU)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--attn_implementation", default="auto", choices=["auto", "sdpa", "flash_attention_2", "eager"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder (slow first pass)")
    p.add_argument("--output_dir", default=None, help="default: results/<task>_<split>_<model name>")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    rank, world = init_distributed(device)
    dtype = resolve_dtype(args.dtype, device)
    attn_implementation = resolve_attn_implementation(args.attn_implementation, device, dtype)
    batch_tokens, pad_to_multiple_of = batch_defaults(device, args.batch_tokens, args.pad_to_multiple_of)
    output_dir = args.output_dir or os.path.join(
        "results", f"{args.task}_{args.split}_{os.path.basename(args.model.rstrip('/'))}")
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()]
    if args.permutations < 1:
        raise InputError(f"--permutations {args.permutations} must be at least 1")

    # 1. Questions, validated before anything heavy is loaded.
    questions = load_questions(args.task, args.data_dir, args.split, subjects, args.limit)
    if not questions:
        raise InputError("no questions to score (check --subjects and --limit)")
    n_letters = max(len(q["choices"]) for q in questions)

    # 2. Prompts -> token ids, with the letters' spellings checked as single tokens.
    tokenizer = load_tokenizer(args.model, fast=False)
    option_ids = letter_token_ids(tokenizer, LETTERS[:n_letters])
    start = time.perf_counter()
    sequences, views = encode_questions(tokenizer, questions, max_positions(args.model, tokenizer), args.permutations)
    tokenize_seconds = time.perf_counter() - start

    # 3. The model, then the scores: each process takes its share of the length-sorted batches.
    model = load_masked_lm(args.model, dtype, attn_implementation, device)
    if args.compile:  # the backbone only: the head runs at [MASK] through a hook (mlm_classifier.head_logits)
        model.base_model.compile(dynamic=True)
    start = time.perf_counter()
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.mask_token_id
    scores = score_sequences(model, sequences, tokenizer.mask_token_id, pad_token_id, option_ids, batch_tokens,
                             pad_to_multiple_of, shard=(rank, world), progress=rank == 0 and not args.no_progress)
    scores = gather_scores(scores)
    seconds = tokenize_seconds + time.perf_counter() - start

    # 4. Predictions and metrics, written by one process.
    if rank == 0:
        results, records = finish(questions, scores, views, args.task)
        results.update(task=args.task, split=args.split, model=args.model, permutations=args.permutations,
                       dtype=str(dtype).removeprefix("torch."), device=str(device),
                       attn_implementation=attn_implementation, processes=world, seconds=round(seconds, 3),
                       questions_per_second=round(len(questions) / seconds, 2))
        write_outputs(output_dir, results, records)
        print(format_table(results))
        print(f"{len(questions)} questions in {seconds:.1f} s ({results['questions_per_second']:.1f}/s) "
              f"on {device}, {results['dtype']}, {attn_implementation}; wrote {output_dir}/")
    end_distributed()


if __name__ == "__main__":
    try:
        main()
    except InputError as e:
        sys.exit(f"error: {e}")
