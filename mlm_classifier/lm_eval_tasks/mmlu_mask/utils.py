"""The questions of the mmlu_mask tasks: one MMLU subject, from the hub's cais/mmlu or from the original CSV files.

lm-evaluation-harness calls `load_mmlu` (the tasks' `custom_dataset`) with the task's `dataset_kwargs` (the
subject) and the run's metadata: `--metadata data_dir=DIR` (or `TaskManager(metadata={"data_dir": DIR})`) reads
DIR/test/<subject>_test.csv (or DIR/<subject>_test.csv) and the dev and val files beside it through eval.py's own
reader (mlm_classifier.mmlu), checked the same way; without it the subject comes from the hub.
"""

import os

from mlm_classifier.data import load_hub_dataset
from mlm_classifier.errors import InputError
from mlm_classifier.mmlu import MMLU_SPLIT_FILES, mmlu_paths, read_mmlu_csv
from mlm_classifier.scoring import LETTERS


def load_mmlu(subject, data_dir=None, **metadata):
    """A DatasetDict of one subject's splits (test, validation, dev), each question with `question`, `subject`,
    `choices` (four strings) and `answer` (the gold letter's index). Local files when `data_dir` is given; a split
    without a file is empty there (the harness looks up the dev split even zero-shot)."""
    import datasets

    if not data_dir:
        return load_hub_dataset("cais/mmlu", "give local files with --metadata data_dir=DIR", subject)
    data_dir = os.path.expanduser(str(data_dir))
    if not os.path.isdir(data_dir):
        raise InputError(f"--metadata data_dir={data_dir}: no such folder")
    features = datasets.Features({"question": datasets.Value("string"), "subject": datasets.Value("string"),
                                  "choices": datasets.Sequence(datasets.Value("string")),
                                  "answer": datasets.Value("int64")})
    splits = {}
    for split in MMLU_SPLIT_FILES:
        paths = [path for path in mmlu_paths(data_dir, split, subject) if os.path.isfile(path)]
        if split == "test" and not paths:
            raise InputError(f"--metadata data_dir={data_dir}: no test file for subject {subject} (looked for "
                             f"{' and '.join(mmlu_paths(data_dir, split, subject))})")
        questions = read_mmlu_csv(paths[0], subject) if paths else []
        splits[split] = datasets.Dataset.from_dict(
            {"question": [q["question"] for q in questions], "subject": [subject] * len(questions),
             "choices": [q["choices"] for q in questions], "answer": [LETTERS.index(q["gold"]) for q in questions]},
            features=features)
    return datasets.DatasetDict(splits)
