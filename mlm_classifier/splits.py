"""A table's texts, labels and ids, with each one's row for errors to name, by rules that never classify a missing
or empty text as "None", "nan" or ""; MLMClassifier's texts by the same rules; a training run's splits.
"""

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from .data import load_hub_dataset, read_table
from .errors import InputError
from .prompts import TEXT_FIELD, placeholder_list


@dataclass
class Split:
    """One split's texts (a string for a {text} template, else a dict {field: text}; None for a row without any text,
    kept for --allow_empty_texts), raw labels (None for texts to label) and each one's row in `source`."""
    source: str
    texts: list
    labels: list | None
    rows: list
    ids: list | None = None  # a passed-through id column, for classify.py

    def __len__(self):
        return len(self.texts)

    def empty_fields(self):
        """{field: number of rows where it is empty}, for the fields empty somewhere (dict texts only)."""
        return dict(Counter(field for text in self.texts if isinstance(text, dict)
                            for field, value in text.items() if not value))

    def select(self, indices):
        """The split restricted to `indices` (positions in this split)."""
        parts = (None if v is None else [v[i] for i in indices] for v in (self.texts, self.labels, self.rows, self.ids))
        return Split(self.source, *parts)


def text_value(value):
    """(stripped text, None), or (None, why not: "missing", "empty", ...); bytes must be UTF-8, numbers are digits."""
    if value is None or (isinstance(value, float) and value != value):
        return None, "missing"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "bytes that are not UTF-8 text"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None, f"a {type(value).__name__}, not a text"
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, from a JSON escape such as \ud800: no tokenizer takes it
            return None, "a lone surrogate (an invalid \\u escape), not UTF-8 text"
    text = str(value).strip()
    return (text, None) if text else (None, "empty")


def id_value(value):
    """An id as the output records it: as it is where JSON can hold it, else as text (a date in ISO 8601)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if value != value else value  # NaN is how pandas and parquet say "no id"
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def some_rows(rows, total=None):
    """`row 3` or `rows 3, 8, 9, 14, 20 and 7 more`, of `total` rows where `rows` holds only the first."""
    total = len(rows) if total is None else total
    named = ", ".join(str(r) for r in rows[:5])
    return f"row {named}" if total == 1 else f"rows {named}{f' and {total - 5} more' if total > 5 else ''}"


def without_text_error(source, fields, rows, total=None):
    """The InputError for `rows` (the first five are enough) of `total` without a text, for {field: column}."""
    total = len(rows) if total is None else total
    lacks = (f"no text in column {fields[TEXT_FIELD]!r}" if TEXT_FIELD in fields
             else f"every one of the columns {', '.join(repr(c) for c in fields.values())} empty")
    count = f" ({total} rows)" if total > 1 else ""
    return InputError(f"{source}: {some_rows(rows, total)} {'has' if total == 1 else 'have'} {lacks}{count}: "
                      "a missing, empty or white-space text")


def row_fields(values, fields):
    """({field: stripped text}, None) or (None, (field, problem)) for a row's or an input's {field: value}: {text}
    must be a text; another field may be missing or empty (""), but not every one (None, "every field empty")."""
    texts = {}
    for field in fields:
        text, problem = text_value(values.get(field))
        if problem in ("missing", "empty") and field != TEXT_FIELD:
            text, problem = "", None
        if problem:
            return None, (field, problem)
        texts[field] = text
    return (texts, None) if any(texts.values()) else (None, (None, "every field empty"))


def take_columns(table, source, text_column, label_column=None, id_column=None, allow_empty=False, first_row=0,
                 fields=None, fields_source="the prompt"):
    """The Split in `table`'s text (or `fields`' {field: column}, by row_fields' rules), label and id columns, rows
    counted from `first_row`. A row without a text is an InputError, or with `allow_empty` kept as None."""
    fields = {TEXT_FIELD: text_column} if fields is None else dict(fields)
    columns = [(column, "--text_column" if field == TEXT_FIELD else f"{{{field}}}") for field, column in fields.items()]
    for column, flag in columns + [(label_column, "--label_column"), (id_column, "--id_column")]:
        if column is not None and column not in table:
            named = flag if flag.startswith("--") else f"which {fields_source} names as {flag}"
            raise InputError(f"{source}: no column {column!r} ({named}); its columns are "
                             f"{', '.join(repr(c) for c in table) or 'none'}")
    texts, without_text = [], []
    for row, values in enumerate(zip(*(table[column] for column in fields.values())), start=first_row):
        text, problem = row_fields(dict(zip(fields, values)), fields)
        if problem and problem[1] not in ("missing", "empty", "every field empty"):
            raise InputError(f"{source}: row {row}: column {fields[problem[0]]!r} holds {problem[1]}")
        if problem:
            without_text.append(row)
        texts.append(text if text is None or len(fields) > 1 or TEXT_FIELD not in fields else text[TEXT_FIELD])
    if without_text and not allow_empty:
        raise without_text_error(source, fields, without_text)
    labels = None
    if label_column is not None:
        labels = [None if text_value(label)[1] in ("missing", "empty") else str(label) for label in table[label_column]]
        unlabelled = [row for row, label in enumerate(labels, start=first_row) if label is None]
        if unlabelled:
            raise InputError(f"{source}: {some_rows(unlabelled)} {'has' if len(unlabelled) == 1 else 'have'} "
                             f"no label in column {label_column!r}")
    ids = None if id_column is None else [id_value(v) for v in table[id_column]]
    return Split(source, texts, labels, list(range(first_row, first_row + len(texts))), ids)


def template_inputs(template, inputs, first=0):
    """What MLMClassifier scores, by row_fields' rules: one input or a list, each a string (a {text}-only template) or
    a dict of the template's fields. Errors (TypeError, ValueError) name the position, counted from `first`."""
    if isinstance(inputs, (str, Mapping)):  # one text
        inputs = [dict(inputs) if isinstance(inputs, Mapping) else inputs]
    inputs = frame_rows(template, inputs)
    try:
        inputs = list(inputs)
    except TypeError:
        kinds = "a string or a list of strings" if template.text_only else "a dict or a list of dicts"
        raise TypeError(f"texts must be {kinds}, not {type(inputs).__name__}") from None
    checked = []
    for k, item in enumerate(inputs, start=first):
        if template.text_only and not isinstance(item, dict):
            if text_value(item)[1] != "missing" and not isinstance(item, str):
                raise TypeError(f"texts[{k}] is a {type(item).__name__} ({item!r:.40}), not a string")
            item, where = {TEXT_FIELD: item}, f"texts[{k}]"
        elif not isinstance(item, dict):
            raise TypeError(f"texts[{k}] is a {type(item).__name__} ({item!r:.40}); {template.source} fills "
                            f"{placeholder_list(template.fields)}, so each text is a dict with the keys "
                            f"{', '.join(repr(f) for f in template.fields)}")
        else:
            where = f"texts[{k}]['text']"
        for field in template.fields:
            if field not in item:
                raise ValueError(f"texts[{k}] has no {field!r} ({template.source}'s {{{field}}}); it has "
                                 f"{', '.join(repr(key) for key in item) or 'no keys'}")
            value = item[field]
            if not isinstance(value, str) and text_value(value)[1] != "missing":
                raise TypeError(f"texts[{k}][{field!r}] is a {type(value).__name__} ({value!r:.40}), not a string")
        fields, problem = row_fields(item, template.fields)
        if problem and problem[0] is None:
            raise ValueError(f"texts[{k}]: every field ({', '.join(repr(f) for f in template.fields)}) is empty")
        if problem and problem[1] in ("missing", "empty"):
            shown = f" ({item[TEXT_FIELD]!r})" if problem[1] == "missing" and where == f"texts[{k}]" else ""
            raise ValueError(f"{where} is {problem[1]}{shown}; every text must be a non-empty string")
        if problem:  # a string no tokenizer takes
            raise ValueError(f"{where if problem[0] == TEXT_FIELD else f'texts[{k}][{problem[0]!r}]'} is "
                             f"{problem[1]}")
        checked.append(fields[TEXT_FIELD] if template.text_only else fields)
    return checked


def frame_rows(template, inputs):
    """A pandas DataFrame as the dicts of its rows, read from the columns the template fills (`text` for {text}), so
    that it is classified row by row rather than as its column names; anything else as it is."""
    if not (hasattr(inputs, "columns") and hasattr(inputs, "to_dict")):
        return inputs
    missing = [field for field in template.fields if field not in inputs.columns]
    if missing:
        raise ValueError(f"the DataFrame has no column {', '.join(repr(f) for f in missing)}, which "
                         f"{template.source} fills; its columns are {', '.join(repr(c) for c in inputs.columns)} "
                         "(rename the text column to 'text')")
    return inputs[list(template.fields)].to_dict("records")


def label_lists(values, separator, source, column):
    """Each row's labels as a list of strings: a list cell as it is, a string split at `separator` (an empty cell is
    "none of these"). A missing cell is an InputError."""
    lists = []
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and value != value):
            raise InputError(f"{source}: row {row} has no label in column {column!r} (an empty list, [] or an empty "
                             "cell, says that none applies)")
        parts = value.split(separator) if isinstance(value, str) else value if hasattr(value, "__iter__") else [value]
        if isinstance(value, dict) or any(not isinstance(part, (str, int)) or isinstance(part, bool) for part in parts):
            raise InputError(f"{source}: row {row}: the labels in column {column!r} are {value!r:.60}; give a list of "
                             f"label names, or one text of them split at {separator!r}")
        lists.append([part.strip() for part in parts if part.strip()] if isinstance(value, str)
                     else [str(part) for part in parts])
    return lists


def check_labels(split, label_map, label_map_source):
    """An InputError naming each label of `split` that the label map lacks, with a row where it occurs."""
    unknown = {}
    for row, labels in zip(split.rows, split.labels):
        for label in labels if isinstance(labels, list) else [labels]:  # multi-label rows hold lists
            if label not in label_map:
                unknown.setdefault(label, row)
    if unknown:
        found = "; ".join(f"{label!r} (row {row})" for label, row in unknown.items())
        raise InputError(f"{split.source}: labels missing from {label_map_source}: {found}. "
                         f"The map has {', '.join(repr(k) for k in label_map)}")


def shuffled(split, seed):
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    return order


def load_splits(dataset, train_file, validation_file, test_file, predict_file, text_column, label_column,
                validation_fraction, max_train_samples, max_eval_samples, seed, label_separator=None, fields=None,
                fields_source="the prompt"):
    """{"train", "validation", "test", "predict"} -> Split (absent ones left out), from files, or without a
    --train_file the hub's train and test splits. With `label_separator` (multi-label) each row's labels are a list."""
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
    splits = {name: take_columns(table, source, text_column,
                                 None if name == "predict" or label_separator is not None else label_column,
                                 fields=fields, fields_source=fields_source)
              for name, (table, source) in tables.items()}
    if label_separator is not None:
        for name, (table, source) in tables.items():
            if name != "predict":
                if label_column not in table:
                    take_columns(table, source, text_column, label_column)  # the error naming the column
                splits[name].labels = label_lists(table[label_column], label_separator, source, label_column)
    for split in splits.values():
        if not len(split):
            raise InputError(f"{split.source}: no rows")
    train = splits["train"]
    if validation_fraction:  # too few rows held out to tell every label apart cannot choose a checkpoint
        order, n = shuffled(train, seed), max(1, round(validation_fraction * len(train)))
        n_labels = len({label for labels in train.labels
                        for label in (labels if isinstance(labels, list) else [labels])})
        if n >= len(train):
            raise InputError(f"--validation_fraction {validation_fraction} of {len(train)} training rows leaves no "
                             "rows to train on")
        if n < n_labels:
            raise InputError(f"--validation_fraction {validation_fraction} holds out {n} of {len(train)} rows, fewer "
                             f"than the {n_labels} labels; raise it, or give --validation_file")
        splits["train"], splits["validation"] = train.select(sorted(order[n:])), train.select(sorted(order[:n]))
    for name, most in (("train", max_train_samples), ("validation", max_eval_samples), ("test", max_eval_samples)):
        if name in splits and most and most < len(splits[name]):  # drawn by a seeded shuffle, kept in file order
            splits[name] = splits[name].select(sorted(shuffled(splits[name], seed)[:most]))
    return splits
