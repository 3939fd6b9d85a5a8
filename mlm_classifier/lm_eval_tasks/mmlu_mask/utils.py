"""The questions of the mmlu_mask tasks: one MMLU subject, from the hub's cais/mmlu or, with `--metadata
data_dir=DIR` (or `TaskManager(metadata={"data_dir": DIR})`), from the original CSVs through eval.py's reader."""

import os

from mlm_classifier.data import load_hub_dataset
from mlm_classifier.errors import InputError
from mlm_classifier.mmlu import MMLU_SPLIT_FILES, mmlu_paths, read_mmlu_csv
from mlm_classifier.scoring import LETTERS


def load_mmlu(subject, data_dir=None, **metadata):
    """The tasks' `custom_dataset`: a DatasetDict of the subject's test, validation and dev splits (`question`,
    `subject`, `choices`, `answer`: the gold index). Locally a split without a file is empty (the harness looks up
    dev even zero-shot)."""
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
        paths = mmlu_paths(data_dir, split, subject)
        found = [path for path in paths if os.path.isfile(path)]
        if split == "test" and not found:
            raise InputError(f"--metadata data_dir={data_dir}: no test file for subject {subject} (looked for "
                             f"{' and '.join(paths)})")
        questions = read_mmlu_csv(found[0], subject) if found else []
        splits[split] = datasets.Dataset.from_dict(
            {"question": [q["question"] for q in questions], "subject": [subject] * len(questions),
             "choices": [q["choices"] for q in questions], "answer": [LETTERS.index(q["gold"]) for q in questions]},
            features=features)
    return datasets.DatasetDict(splits)
