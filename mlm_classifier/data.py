"""Reading what users bring (text files, label lists and maps, tables as {column: values}) and writing what we
produce, by the rules every output keeps: atomic writes, never over an input or a result made with other settings.
"""

import contextlib
import csv
import io
import json
import os
from collections import Counter

from .errors import InputError


def read_text(path, source=None):
    """A whole UTF-8 text file, less the byte-order mark Notepad and Excel write; errors name `source` or the path."""
    source = source or path
    if not os.path.isfile(path):
        raise InputError(f"{source}: no such file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        with open(path, "rb") as f:
            line = 1 + f.read(e.start).count(b"\n")
        raise InputError(f"{source}: not UTF-8 text (line {line}, byte {e.start}); save it as UTF-8") from None


def read_prompt(path, flag=""):
    """A prompt file, CRLF made LF (a Windows editor's prompt must tokenize as the same prompt), right-stripped."""
    return read_text(path, f"{flag} {path}".lstrip()).replace("\r\n", "\n").rstrip()


def read_label_map(path, flag=""):
    """A `{raw label: verbalizer}` map from a JSON file, in the file's order; errors name `flag` and the path."""
    source = f"{flag} {path}".lstrip()

    def unique_keys(pairs):  # json.loads would keep the last of a key given twice, silently
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise InputError(f"{source}: the key {key!r} is given more than once")
            seen[key] = value
        return seen

    try:
        label_map = json.loads(read_text(path, source), object_pairs_hook=unique_keys)
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


def parse_labels(value, least=2):
    """A label list from a comma list (`"World,Sports"`) or a file with one label per line (blank lines skipped).
    A value that looks like a path (a folder separator, or a file extension, and no comma) must be a file."""
    if os.path.isfile(value):
        source = f"--labels {value}"
        labels = [line.strip() for line in read_text(value, source).split("\n") if line.strip()]
    elif "," not in value and ("/" in value or os.sep in value or os.path.splitext(value)[1][1:].isalpha()):
        raise InputError(f"--labels {value}: no such file (a list of labels is written with commas: \"World,Sports\")")
    else:
        labels = [label.strip() for label in value.split(",")]
        source = "--labels"
    check_labels_list(labels, source, least)
    return labels


def check_labels_list(labels, source="labels", least=2):
    """An InputError for fewer than `least` labels, an empty one, one given twice, or two that differ only by case
    or surrounding spaces (`World`, `world `): the model and a reader take those for one label."""
    if isinstance(labels, str):
        raise InputError(f"{source}: {labels!r} is one string; give a list of labels, e.g. {labels.split(',')!r}")
    labels = list(labels)
    if len(labels) < least:
        needs = "two (multi-label, one is enough)" if least == 2 else str(least)
        raise InputError(f"{source}: {len(labels)} label(s); a classifier needs at least {needs}")
    for k, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise InputError(f"{source}: label {k + 1} is empty")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InputError(f"{source}: {', '.join(repr(r) for r in repeated)} given more than once")
    seen = {}
    for label in labels:
        key = label.strip().casefold()
        if key in seen:
            raise InputError(f"{source}: {seen[key]!r} and {label!r} differ only by case or surrounding spaces, so "
                             "they read as one label; keep one, or name them apart")
        seen[key] = label


def write_atomic(path, text, sync=False):
    """Write `path` through a temporary file and a rename, so no reader sees half a file; `sync`: on disk first."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C too: no stray temporary file beside the output
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_jsonl(path, source=None):
    """[(row, line, record)] for each non-blank line of a JSONL file: `row` counts records from 0, `line` from 1."""
    source = source or path
    return list(jsonl_records(read_text(path, source).split("\n"), source))  # not splitlines: JSON may hold U+2028


def jsonl_records(lines, source, keep=lambda row: True):
    """(row, line, record) for each non-blank of a JSONL file's lines; a row `keep` refuses is not parsed (None)."""
    row = 0
    for line, text in enumerate(lines, start=1):
        if text.strip():
            try:
                record = json.loads(text) if keep(row) else None
            except json.JSONDecodeError as e:
                raise InputError(f"{source}: {row_and_line(row, line)}: not valid JSON ({e.msg})") from None
            yield row, line, record
            row += 1


def read_table(path, flag):
    """A csv, json (a list of objects, or JSON lines), jsonl or parquet file as {column: list of values}."""
    source = f"{flag} {path}"
    extension = check_table_file(path, flag)
    with reading_errors(source, extension):
        if extension == ".csv":
            import pandas

            check_unique_columns(csv_header(path), source)
            with fields_checked(path, source):
                frame = pandas.read_csv(path, **CSV_OPTIONS)
            return {str(c): frame[c].tolist() for c in frame.columns}
        if extension == ".parquet":
            import pyarrow.parquet

            table = pyarrow.parquet.read_table(path)
            check_unique_columns(table.column_names, source)
            return table.to_pydict()
        return records_to_columns(read_json_records(path, source), source)


@contextlib.contextmanager
def reading_errors(source, extension):
    """Any error of reading a table as one InputError naming `source`: pandas' and pyarrow's messages do not."""
    try:
        yield
    except InputError:
        raise
    except UnicodeDecodeError as e:
        raise InputError(f"{source}: not UTF-8 text (byte {e.start})") from None
    except Exception as e:
        raise InputError(f"{source}: cannot be read as {extension[1:]} ({error_reason(e)})") from None


def check_table_file(path, flag):
    """The lower-case extension of a table file that read_table can read, or an InputError."""
    source = f"{flag} {path}"
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".csv", ".json", ".jsonl", ".parquet"):
        raise InputError(f"{source}: unknown format {extension!r}; use .csv, .json, .jsonl or .parquet")
    if not os.path.isfile(path):
        raise InputError(f"{source}: no such file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{source}: the file is empty")
    return extension


# Every cell as its text, an empty cell as "" (no NA guessing: "NA" and "null" are texts too); never the first
# column taken for an index (with one field more per row than the header, pandas would, and shift every cell); and a
# blank line is a row, so that a one-column file's white-space text is refused or labelled null, never dropped.
CSV_OPTIONS = dict(dtype=str, keep_default_na=False, encoding="utf-8-sig", index_col=False, skip_blank_lines=False)


@contextlib.contextmanager
def fields_checked(path, source):
    """pandas reading `path`, a record with more fields than the header (a trailing comma, as spreadsheets export)
    an InputError naming its row and line, where pandas would drop the extra fields with a warning."""
    import warnings

    from pandas.errors import ParserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ParserWarning)
        try:
            yield
        except ParserWarning:
            with open(path, encoding="utf-8-sig", newline="") as f:
                reader = csv.reader(f)
                width, line = len(next(reader)), reader.line_num + 1
                for row, fields in enumerate(reader):
                    if len(fields) > width:
                        raise InputError(f"{source}: {row_and_line(row, line)} has {len(fields)} fields, more than "
                                         f"the header's {width} (a comma at the end of each row?); fix the file so "
                                         "that every row has the header's columns") from None
                    line = reader.line_num + 1
            raise


def csv_header(path):
    """A CSV file's column names as written (pandas renames a repeated one)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f), [])


def check_unique_columns(names, source):
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"{source}: the header names {', '.join(repr(r) for r in repeated)} more than once; "
                         "rename the columns so that each is named once")


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
    return [record for _, _, record in jsonl_records(text.split("\n"), source)]


def records_to_columns(records, source, first_row=0, columns=None):
    """{column: values} of JSON objects (None where one lacks the key), for every key or only `columns`."""
    for row, record in enumerate(records, start=first_row):
        if not isinstance(record, dict):
            raise InputError(f"{source}: row {row} is {type(record).__name__}, not a JSON object")
    keys = dict.fromkeys(key for record in records for key in record) if columns is None else columns
    return {key: [record.get(key) for record in records] for key in keys}


def load_hub_dataset(name, instead, *args, flag=None, **kwargs):
    """`datasets.load_dataset(...)`, or an InputError naming the dataset (by `flag`) and what to give `instead`."""
    from datasets import load_dataset

    try:
        return load_dataset(name, *args, **kwargs)
    except Exception as e:  # datasets raises many kinds
        what = f"{flag} {name}: the dataset hub cannot serve it" if flag else f"the dataset hub cannot serve {name}"
        raise InputError(f"{what} ({error_reason(e)}); {instead}") from None


def accuracy_table(correct, groups):
    """{group: {accuracy, n}} for parallel lists of booleans and group names, sorted by name."""
    totals, hits = Counter(groups), Counter(g for g, ok in zip(groups, correct) if ok)
    return {g: {"accuracy": hits[g] / totals[g], "n": totals[g]} for g in sorted(totals)}


NO_ID = object()  # a record without an id column (None is a missing id, kept as null)


def prediction_record(row, text, result, row_id=NO_ID, multi_label=False):
    """One record of a predictions file: row, (id), text, then the result (scoring.decide's), probabilities rounded
    to 6 digits; a row without a text (result None) has them null."""
    record = {"row": row} if row_id is NO_ID else {"row": row, "id": row_id}
    if result is None:
        return {**record, "text": text, "labels" if multi_label else "label": None, "probabilities": None}
    probabilities = {label: round(p, 6) for label, p in result["probabilities"].items()}
    return {**record, "text": text, **result, "probabilities": probabilities}


def records_to_jsonl(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def records_to_csv(records, class_names, header=True):
    """CSV of prediction records, a `p_<label>` column per label; null is empty, a list or dict its JSON. Without
    `header`, only the rows: what follows the first chunk of an output written a chunk at a time."""
    out = io.StringIO()
    head = [k for k in records[0] if k != "probabilities"] if records else ["row", "text", "label"]
    writer = csv.writer(out)
    if header:
        writer.writerow(head + [f"p_{label}" for label in class_names])
    for r in records:
        probabilities = r["probabilities"] or {}
        cells = [json.dumps(r[k], ensure_ascii=False) if isinstance(r[k], (list, dict)) else r[k] for k in head]
        writer.writerow(cells + [probabilities.get(label) for label in class_names])
    return out.getvalue()


def say(*parts):
    """Print from the first process only, so that torchrun does not repeat every line."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*parts, flush=True)


def error_reason(error):
    """The first line of an exception's message (or its type's name): what a one-line error can quote."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def row_and_line(row, line=None):
    """How errors name a record: `row N` (from 0, as predictions.jsonl's `row`) and its file's `(line L)` if known."""
    return f"row {row}" if line is None else f"row {row} (line {line})"


def short(value, width=40):
    """A setting's repr for an error line, cut to `width` characters (a prompt is long)."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "...'"


def recorded_settings(path):
    """The "settings" a result recorded in its JSON file, or None when they cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return None
    return recorded.get("settings") if isinstance(recorded, dict) else None


def check_same_settings(recorded, wanted, what, remedy, show=lambda key, value: short(value)):
    """An InputError naming each difference (`key 'old' (now 'new')`) when a result was made with settings other
    than `wanted`: no script replaces or resumes a result made otherwise."""
    if recorded == wanted:
        return
    if not isinstance(recorded, dict):
        changed = "its settings were not recorded"
    else:
        keys = [k for k in sorted(set(recorded) | set(wanted)) if recorded.get(k) != wanted.get(k)]
        changed = "; ".join(f"{k} {show(k, recorded.get(k))} (now {show(k, wanted.get(k))})" for k in keys)
    raise InputError(f"{what} with other settings: {changed}. {remedy}")


def check_output_path(path, flag, folder=False):
    """An InputError, before any work, when `path` cannot be written: it is a folder (or, with `folder`, a file),
    a folder above it is a file, or the nearest existing folder above it is not writable."""
    path = os.path.abspath(path)
    if os.path.exists(path) and os.path.isdir(path) != folder:
        raise InputError(f"{flag} {path}: is a {'file' if folder else 'folder'}; "
                         f"give a {'folder' if folder else 'file name'}")
    parent = path if folder else os.path.dirname(path)
    while not os.path.exists(parent):
        if os.path.islink(parent):  # a link to nowhere, or to itself
            raise InputError(f"{flag} {path}: {parent} is a link that leads nowhere, so nothing can be written there")
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"{flag} {path}: {parent} is a file, so nothing can be written under it")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{flag} {path}: {parent} is not writable")


def check_spares_inputs(outputs, inputs):
    """An InputError, before any work, when a file about to be written is one of the run's inputs, under any spelling
    (`./x.csv`, an absolute path, a link), or a file already inside an input folder. Both are (flag, path) pairs."""
    for out_flag, out in outputs:
        target = os.path.realpath(out)
        for in_flag, path in inputs:
            if path is None or not os.path.exists(path):
                continue
            source = os.path.realpath(path)
            if target == source or (os.path.isdir(source) and os.path.isfile(target)
                                    and target.startswith(source + os.sep)):
                what = "is" if target == source else f"would replace {target}, a file of"
                raise InputError(f"{out_flag} {out}: {what} {in_flag} {path}, which this run reads; "
                                 "nothing is written over an input: give another path")
