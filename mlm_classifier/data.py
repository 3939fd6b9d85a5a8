"""Reading what users bring and writing what we produce: text files, label maps, tables, records.

Tables are csv, json, jsonl or parquet files read as {column: values}; a `Split` is one split's texts (and
labels, ids) with the row each came from, so that every error can name the row. Outputs are written
atomically, so no reader ever sees half a file.
"""

import json
import os
import random
from dataclasses import dataclass

from .cli import InputError, error_reason, row_and_line
from .scoring import first_max

TABLE_FORMATS = (".csv", ".json", ".jsonl", ".parquet")  # what read_table reads


def read_text(path, source=None):
    """A whole UTF-8 text file; a missing file or one that is not UTF-8 is an InputError naming `source` or the path."""
    source = source or path
    if not os.path.isfile(path):
        raise InputError(f"{source}: no such file")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        with open(path, "rb") as f:
            line = 1 + f.read(e.start).count(b"\n")
        raise InputError(f"{source}: not UTF-8 text (line {line}, byte {e.start}); save it as UTF-8") from None


def read_prompt(path, flag=""):
    """A prompt template from a file, trailing white space stripped; errors name `flag` and the path."""
    return read_text(path, f"{flag} {path}".lstrip()).rstrip()


def read_label_map(path, flag=""):
    """A `{raw label: verbalizer}` map from a JSON file, in the file's order; errors name `flag` and the path."""
    source = f"{flag} {path}".lstrip()
    try:
        label_map = json.loads(read_text(path, source))
    except json.JSONDecodeError as e:
        raise InputError(f"{source}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(label_map, dict) or not label_map:
        raise InputError(f"{source}: expected a JSON object {{\"raw label\": \"verbalizer\", ...}}")
    for label, verbalizer in label_map.items():
        if not isinstance(verbalizer, str):
            raise InputError(f"{source}: the verbalizer of {label!r} is {verbalizer!r}, not a string")
        if not verbalizer.strip():
            raise InputError(f"{source}: the verbalizer of {label!r} is empty; the answer must be one real token")
    return label_map


def write_atomic(path, text):
    """Write text to `path` through a temporary file and a rename, so no reader ever sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass
class Split:
    """One split's texts and raw labels (strings; None for texts to label), and each one's row in `source`."""
    source: str
    texts: list
    labels: list | None
    rows: list
    ids: list | None = None  # a passed-through id column, for classify.py

    def __len__(self):
        return len(self.texts)

    def select(self, indices):
        """The split restricted to `indices` (positions in this split)."""
        def subset(values):
            return None if values is None else [values[i] for i in indices]
        return Split(self.source, subset(self.texts), subset(self.labels), subset(self.rows), subset(self.ids))


def check_labels(split, label_map, label_map_source):
    """An InputError naming each label of `split` that the label map lacks, with a row where it occurs."""
    unknown = {}
    for row, label in zip(split.rows, split.labels):
        if label not in label_map:
            unknown.setdefault(label, row)
    if unknown:
        found = "; ".join(f"{label!r} (row {row})" for label, row in unknown.items())
        raise InputError(f"{split.source}: labels missing from {label_map_source}: {found}. "
                         f"The map has {', '.join(repr(k) for k in label_map)}")


def subsample(split, max_samples, seed):
    """At most `max_samples` rows, drawn by a seeded shuffle, kept in file order."""
    if not max_samples or max_samples >= len(split):
        return split
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    return split.select(sorted(order[:max_samples]))


def hold_out(split, fraction, seed):
    """(train, validation): a seeded `fraction` of the rows held out for validation.

    An InputError when that leaves no training rows, or fewer validation rows than the training rows have
    labels (accuracy on such a slice cannot choose a checkpoint).
    """
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    n_validation = max(1, round(fraction * len(split)))
    n_labels = len(set(split.labels))
    if n_validation >= len(split):
        raise InputError(f"--validation_fraction {fraction} of {len(split)} training rows leaves no rows to train on")
    if n_validation < n_labels:
        raise InputError(f"--validation_fraction {fraction} holds out {n_validation} of {len(split)} rows, fewer than "
                         f"the {n_labels} labels; raise it, or give --validation_file")
    return split.select(sorted(order[n_validation:])), split.select(sorted(order[:n_validation]))


def load_splits(dataset, train_file, validation_file, test_file, predict_file, text_column, label_column,
                validation_fraction, max_train_samples, max_eval_samples, seed):
    """{"train", "validation", "test", "predict"} -> Split (absent ones left out), from files or the hub.

    The hub dataset (its train and test splits) is used when there is no --train_file; a --test_file
    replaces the hub's test split. Nothing is held out of the training rows unless `validation_fraction`.
    """
    tables = {}
    if train_file is None:
        hub = load_hub_dataset(dataset, "give local files with --train_file (and --validation_file, --test_file)",
                               flag="--dataset")
        if "train" not in hub:
            raise InputError(f"--dataset {dataset}: no train split (it has {', '.join(hub)})")
        tables = {name: (hub[name].to_dict(), f"{dataset}[{name}]") for name in ("train", "test") if name in hub}
    for name, path in (("train", train_file), ("validation", validation_file), ("test", test_file),
                       ("predict", predict_file)):
        if path is not None:
            tables[name] = (read_table(path, f"--{name}_file"), path)
    splits = {name: take_columns(table, source, text_column, None if name == "predict" else label_column)
              for name, (table, source) in tables.items()}
    for split in splits.values():
        if not len(split):
            raise InputError(f"{split.source}: no rows")
    if validation_fraction:
        splits["train"], splits["validation"] = hold_out(splits["train"], validation_fraction, seed)
    splits["train"] = subsample(splits["train"], max_train_samples, seed)
    for name in ("validation", "test"):
        if name in splits:
            splits[name] = subsample(splits[name], max_eval_samples, seed)
    return splits


def read_jsonl(path, source=None):
    """[(row, line, record)] for each non-blank line of a JSONL file: `row` counts records from 0, `line` is 1-based.

    Errors start with `source` (default: the path), e.g. "--input data.jsonl", and name the row and line.
    """
    source = source or path
    records = []
    for line, text in enumerate(read_text(path, source).split("\n"), start=1):  # not splitlines: JSON may hold U+2028
        if text.strip():
            try:
                records.append((len(records), line, json.loads(text)))
            except json.JSONDecodeError as e:
                raise InputError(f"{source}: {row_and_line(len(records), line)}: not valid JSON ({e.msg})") from None
    return records


def read_table(path, flag):
    """A csv, json, jsonl or parquet file as {column: list of values}, every cell as the file has it.

    CSV cells are read as text (an empty cell is None); a .json file holds a list of objects (or JSON
    lines); a .jsonl file one object per line. Any file that cannot be read is an InputError naming it.
    """
    source = f"{flag} {path}"
    extension = os.path.splitext(path)[1].lower()
    if extension not in TABLE_FORMATS:
        raise InputError(f"{source}: unknown format {extension!r}; use .csv, .json, .jsonl or .parquet")
    if not os.path.isfile(path):
        raise InputError(f"{source}: no such file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{source}: the file is empty")
    try:
        if extension == ".csv":
            import pandas

            frame = pandas.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
            return {str(c): [None if v != v else v for v in frame[c].tolist()] for c in frame.columns}  # NaN -> None
        if extension == ".parquet":
            import pyarrow.parquet

            return pyarrow.parquet.read_table(path).to_pydict()
        return records_to_columns(read_json_records(path, source), source)
    except InputError:
        raise
    except UnicodeDecodeError as e:
        raise InputError(f"{source}: not UTF-8 text (byte {e.start})") from None
    except Exception as e:  # pandas' and pyarrow's many error types: the message is what the user needs
        raise InputError(f"{source}: cannot be read as {extension[1:]} ({error_reason(e)})") from None


def read_json_records(path, source):
    """The objects of a JSON lines file, or of a .json file holding a list of them; bad JSON names its line."""
    text = read_text(path, source)
    if path.lower().endswith(".json"):
        try:
            whole = json.loads(text)
            return whole if isinstance(whole, list) else [whole]
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # more than one value: JSON lines under a .json name
                raise InputError(f"{source}: line {e.lineno}: not valid JSON ({e.msg})") from None
    return [record for _, _, record in read_jsonl(path, source)]


def records_to_columns(records, source):
    """{column: values} from a list of JSON objects; a key absent from a record gives None there."""
    columns = {}
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"{source}: row {row} is {type(record).__name__}, not a JSON object")
        for key in record:
            columns.setdefault(key, [None] * row)
        for key, values in columns.items():
            values.append(record.get(key))
    return columns


def take_columns(table, source, text_column, label_column=None, id_column=None):
    """The Split in `table`'s text (and label, id) columns, rows counted from 0; texts are stripped."""
    for column, flag in ((text_column, "--text_column"), (label_column, "--label_column"), (id_column, "--id_column")):
        if column is not None and column not in table:
            raise InputError(f"{source}: no column {column!r} ({flag}); its columns are "
                             f"{', '.join(repr(c) for c in table) or 'none'}")
    texts = table[text_column]
    labels = None if label_column is None else table[label_column]
    for row, text in enumerate(texts):
        if text is None:
            raise InputError(f"{source}: row {row} has no text in column {text_column!r}")
        if isinstance(text, (dict, list, tuple)):
            raise InputError(f"{source}: row {row}: column {text_column!r} holds a {type(text).__name__}, not a text")
        if labels is not None and labels[row] is None:
            raise InputError(f"{source}: row {row} has no label in column {label_column!r}")
    labels = None if labels is None else [str(label) for label in labels]
    ids = None if id_column is None else list(table[id_column])
    return Split(source, [str(t).strip() for t in texts], labels, list(range(len(texts))), ids)


def load_hub_dataset(name, instead, *args, flag=None, **kwargs):
    """`datasets.load_dataset(name, *args, **kwargs)`; a hub that cannot serve it (no connection, no such dataset
    or split) is one InputError that names the dataset (by `flag` when a flag gave it) and what to give `instead`."""
    from datasets import load_dataset

    try:
        return load_dataset(name, *args, **kwargs)
    except Exception as e:  # datasets raises many kinds
        what = f"{flag} {name}: the dataset hub cannot serve it" if flag else f"the dataset hub cannot serve {name}"
        raise InputError(f"{what} ({error_reason(e)}); {instead}") from None


def accuracy_table(correct, groups):
    """{group: {accuracy, n}} for parallel lists of booleans and group names, sorted by name."""
    from collections import Counter

    totals, hits = Counter(groups), Counter(g for g, ok in zip(groups, correct) if ok)
    return {g: {"accuracy": hits[g] / totals[g], "n": totals[g]} for g in sorted(totals)}


def prediction_record(row, text, class_names, probs, row_id=None):
    """One predictions.jsonl record: row, (id), text, the likeliest label and every label's probability."""
    record = {"row": row}
    if row_id is not None:
        record["id"] = row_id
    record.update(text=text, label=class_names[first_max(probs)],
                  probabilities={name: round(p, 6) for name, p in zip(class_names, probs)})
    return record


def records_to_jsonl(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def records_to_csv(records):
    """CSV of prediction records: row, (id), text, label, then one `p_<label>` column per label."""
    import csv
    import io

    out = io.StringIO()
    head = [k for k in records[0] if k != "probabilities"] if records else ["row", "text", "label"]
    labels = list(records[0]["probabilities"]) if records else []
    writer = csv.writer(out)
    writer.writerow(head + [f"p_{label}" for label in labels])
    for r in records:
        writer.writerow([r[k] for k in head] + [r["probabilities"][label] for label in labels])
    return out.getvalue()
