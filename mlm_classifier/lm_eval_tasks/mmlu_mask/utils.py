"""The questions of the mmlu_mask tasks: one MMLU subject, from the hub's cais/mmlu or from the original CSV files.

lm-evaluation-harness calls `load_mmlu` (the tasks' `custom_dataset`) with the task's `dataset_kwargs` (the
subject) and the run's metadata: `--metadata data_dir=DIR` (or `TaskManager(metadata={"data_dir": DIR})`) reads
DIR/test/<subject>_test.csv (or DIR/<subject>_test.csv) and the dev and val files beside it, as eval.py's
--data_dir does; without it the subject comes from the hub. Every question has eval.py's fields: `question`,
`choices` (four strings) and `answer` (the gold letter's index), read the way eval.py reads them.
"""

import csv
import io
import os

from mlm_classifier import InputError, load_hub_dataset, read_text, row_and_line

SPLIT_FILES = {"test": ("test", "test"), "validation": ("val", "val"), "dev": ("dev", "dev")}  # as eval.py's
LETTERS = "ABCD"


def read_mmlu_csv(path, subject):
    """One original MMLU CSV (headerless `question,A,B,C,D,answer`) as question dicts, checked as eval.py checks it."""
    questions = []
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    line = 1
    for row, record in enumerate(reader):
        where = f"{path}: {row_and_line(row, line)}"
        line = reader.line_num + 1
        if len(record) != 6:
            raise InputError(f"{where}: expected 6 fields (question, A, B, C, D, answer), found {len(record)}")
        answer = record[5].strip()
        if answer not in LETTERS:
            raise InputError(f"{where}: answer {record[5]!r} is not one of A, B, C, D")
        questions.append({"question": record[0], "subject": subject, "choices": record[1:5],
                          "answer": LETTERS.index(answer)})
    return questions


def local_split(data_dir, split, subject):
    """The subject's questions of one split from DIR/<folder>/<subject>_<suffix>.csv or DIR/<subject>_<suffix>.csv,
    or None when neither file exists."""
    folder, suffix = SPLIT_FILES[split]
    name = f"{subject}_{suffix}.csv"
    for path in (os.path.join(data_dir, folder, name), os.path.join(data_dir, name)):
        if os.path.isfile(path):
            return read_mmlu_csv(path, subject)
    return None


def load_mmlu(subject, data_dir=None, **metadata):
    """A DatasetDict of one subject's splits (test, validation, dev). Local files when `data_dir` is given; a
    split without a file is empty there (the harness looks up the dev split even zero-shot)."""
    import datasets

    if not data_dir:
        return load_hub_dataset("cais/mmlu", "give local files with --metadata data_dir=DIR", subject)
    data_dir = os.path.expanduser(str(data_dir))
    if not os.path.isdir(data_dir):
        raise InputError(f"--metadata data_dir={data_dir}: no such folder")
    features = datasets.Features({"question": datasets.Value("string"), "subject": datasets.Value("string"),
                                  "choices": datasets.Sequence(datasets.Value("string")),
                                  "answer": datasets.Value("int64")})
    splits = {split: local_split(data_dir, split, subject) for split in SPLIT_FILES}
    if splits["test"] is None:
        folder, suffix = SPLIT_FILES["test"]
        raise InputError(f"--metadata data_dir={data_dir}: no test file for subject {subject} (looked for "
                         f"{folder}/{subject}_{suffix}.csv and {subject}_{suffix}.csv)")
    columns = {split: {k: [q[k] for q in questions or []] for k in features} for split, questions in splits.items()}
    return datasets.DatasetDict({split: datasets.Dataset.from_dict(column, features=features)
                                 for split, column in columns.items()})
