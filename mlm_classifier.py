"""The MLM head as a generative classifier: the method in one place.

*It's All in The [MASK]* (Clavié, Cooper, Warner, 2025): a prompt ends with `Answer: [unused0] [MASK]`,
and a masked LM's plain MLM head, read at that [MASK] over the option tokens (letters `A`, `B`, ... or
single-token label words), picks the answer in one forward pass. eval.py, train.py and classify.py
import this module (as nanoGPT's train.py and sample.py import model.py); it holds:

- prompt templates: the rules a template must keep, filling it, cutting only the text to fit;
- answer tokens: letters and verbalizers, checked to be single tokens; [unused0] made one token;
- scoring: length-sorted batches under a token budget, the MLM head only at [MASK] (BERT, RoBERTa, DeBERTa,
  ModernBERT and others: `head_logits`, which train.py's loss uses too);
- bias controls: cyclic rotations of the option order, content-free calibration;
- devices, models and torchrun; errors that name the culprit; atomic writes;
- `MLMClassifier`, for notebooks:

    clf = MLMClassifier.from_pretrained("my-classifier")          # a folder written by train.py
    clf = MLMClassifier.from_pretrained("answerdotai/ModernBERT-Large-Instruct", labels=["spam", "not spam"])
    clf(["text one", "text two"])  # [{"label": "spam", "probabilities": {"spam": 0.93, "not spam": 0.07}}, ...]

Every function takes explicit arguments, so that it can be pasted into a notebook on its own.
"""

import argparse
import gc
import itertools
import json
import os
import string
from dataclasses import dataclass, field

import numpy as np
import torch

ANCHOR = "[unused0]"  # the model was instruction-tuned to put the answer token right after it
LETTERS = string.ascii_uppercase  # option letters, A to Z; a tokenizer may have fewer as single tokens
TEXT_PLACEHOLDERS = ("{text}", "{txt}")  # {txt} is the published cookbook's spelling
TABLE_FORMATS = (".csv", ".json", ".jsonl", ".parquet")  # what read_table reads
SETTINGS_FILE = "classifier.json"  # what train.py records for classify.py beside prompt.txt and label_map.json
CONTENT_FREE_TEXT = "N/A"  # Zhao et al. (2021)'s first content-free input

# The zero-shot template, in the style of the paper's MMLU prompt: instruction, the text, the options as
# `- A: label` lines, an empty line, then the answer slot after [unused0].
ZERO_SHOT_PROMPT = (
    "You will be given a text as well as a list of labels. "
    "Read the text carefully and select the right label from the list.\n"
    "TEXT:\n{text}\nLABELS:\n{options}\n\nANSWER:\nAnswer: [unused0] {label}"
)


class InputError(ValueError):
    """Bad user input (a file, row, label or flag). The scripts print it as one line and exit 1."""


def run_command(main):
    """Run a script's main(): bad input ends as one line, `error: ...`, and exit status 1, never a traceback."""
    import sys

    try:
        main()
    except InputError as e:
        sys.exit(f"error: {e}")


def error_reason(error):
    """The first line of an exception's message (or its type's name): what a one-line error can quote."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_hub_dataset(name, instead, *args, flag=None, **kwargs):
    """`datasets.load_dataset(name, *args, **kwargs)`; a hub that cannot serve it (no connection, no such dataset
    or split) is one InputError that names the dataset (by `flag` when a flag gave it) and what to give `instead`."""
    from datasets import load_dataset

    try:
        return load_dataset(name, *args, **kwargs)
    except Exception as e:  # datasets raises many kinds
        what = f"{flag} {name}: the dataset hub cannot serve it" if flag else f"the dataset hub cannot serve {name}"
        raise InputError(f"{what} ({error_reason(e)}); {instead}") from None


def say(*parts):
    """Print from the first process only, so that torchrun does not repeat every line."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*parts, flush=True)


class HelpFormatter(argparse.HelpFormatter):
    """--help shows each flag's default once: appended unless the help already says it, left out when None/off."""

    def _get_help_string(self, action):
        help = action.help or ""
        if "default" in help.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return help
        return f"{help} (default: %(default)s)".lstrip()


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag ends like any other bad input: one `error:` line and exit status 1."""

    def error(self, message):
        import sys

        sys.exit(f"error: {message} (see --help)")


def make_parser(doc):
    """A parser with the script's first docstring paragraph, our help formatter and no abbreviations."""
    return ArgumentParser(description=doc.split("\n\n")[0], formatter_class=HelpFormatter, allow_abbrev=False)


def add_flag(parser, name, **kwargs):
    """Register `--name` under both spellings, underscores and hyphens: the published scripts mixed them."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*spellings, dest=name, **kwargs)


def add_scoring_flags(parser):
    """The flags of scoring with a loaded model, as eval.py and classify.py both take them."""
    add_flag(parser, "batch_tokens", type=int, default=None,
             help="padded tokens per batch (default: 65536 on a GPU, 8192 on the CPU)")
    add_flag(parser, "pad_to_multiple_of", type=int, default=None,
             help="pad batch width to a multiple of this (default: 64 on a GPU, 8 on the CPU)")
    add_flag(parser, "dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
             help="auto: bfloat16 on a GPU, float32 on the CPU")
    add_flag(parser, "attn_implementation", default="auto", choices=["auto", "sdpa", "flash_attention_2", "eager"],
             help="auto: flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa")
    add_flag(parser, "device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    add_flag(parser, "no_progress", action="store_true", help="no progress bar")


def check_positive(**flags):
    """An InputError naming the first flag (given by its dest name) whose value is set but not above zero."""
    for name, value in flags.items():
        if value is not None and value <= 0:
            raise InputError(f"--{name} {value} must be a positive number")


def located(row, line=None):
    """How errors name a record: `row N`, counted from 0 as `row` in predictions.jsonl, and `(line L)`, the file's
    1-based line where the record starts, when the file has lines and that line is known."""
    return f"row {row}" if line is None else f"row {row} (line {line})"


def check_output_path(path, flag, folder=False):
    """An InputError, before any work, when `path` cannot be written: it is a folder (or, with `folder`, a file),
    a folder above it is a file, or the nearest existing folder above it is not writable."""
    path = os.path.abspath(path)
    if os.path.exists(path) and os.path.isdir(path) != folder:
        raise InputError(f"{flag} {path}: is a {'file' if folder else 'folder'}; "
                         f"give a {'folder' if folder else 'file name'}")
    parent = path if folder else os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"{flag} {path}: {parent} is a file, so nothing can be written under it")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{flag} {path}: {parent} is not writable")


def write_atomic(path, text):
    """Write text to `path` through a temporary file and a rename, so no reader ever sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


# -----------------------------------------------------------------------------
# Prompt templates: `{text}`, optional `{options}`, and `[unused0] {label}` at the very end


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


def parse_prompt(prompt, source="the prompt"):
    """Check a prompt template and split it at its text placeholder into (before, after).

    The rules: exactly one `{text}` (or the published `{txt}`), exactly one `{label}`, `[unused0]` right
    before `{label}` (one space allowed), and nothing but white space after `{label}`, because the answer
    token must be the last token, right after the anchor the model was tuned on. `{options}` may appear
    anywhere; other braces are left as they are.
    """
    prompt = prompt.rstrip()
    found = [p for p in TEXT_PLACEHOLDERS if p in prompt]
    n_text = sum(prompt.count(p) for p in TEXT_PLACEHOLDERS)
    if n_text != 1:
        raise InputError(f"{source} has {n_text} text placeholders; it needs exactly one {{text}} "
                         "(or the published {txt}) where each example's text goes")
    if prompt.count("{label}") != 1:
        raise InputError(f"{source} has {prompt.count('{label}')} {{label}} placeholders; it needs exactly one, "
                         f"at the very end, after {ANCHOR}")
    if not prompt.endswith("{label}"):
        tail = prompt[prompt.index("{label}") + len("{label}"):]
        raise InputError(f"{source}: only white space may follow {{label}}, but {tail[:40]!r} does; "
                         "the answer token must be the prompt's last token")
    before_label = prompt[: -len("{label}")]
    if not (before_label.endswith(ANCHOR) or before_label.endswith(ANCHOR + " ")):
        raise InputError(f"{source}: {ANCHOR} must come right before {{label}} (one space allowed), "
                         f"as in `Answer: {ANCHOR} {{label}}`; found {before_label[-30:]!r} before {{label}}")
    before, after = prompt.split(found[0])
    return before, after


def options_block(label_map):
    """What `{options}` becomes: one line per label, `- <verbalizer>: <label>`, in the map's order."""
    return "\n".join(f"- {verbalizer}: {label}" for label, verbalizer in label_map.items())


def fill_prompt(before, after, text, verbalizer, options):
    """The filled prompt and the character span of the text in it."""
    head = before.replace("{options}", options)
    tail = after.replace("{options}", options).replace("{label}", verbalizer)
    return head + text + tail, (len(head), len(head) + len(text))


def letter_suggestion(label_map):
    """A letter label map to suggest when a verbalizer is not one token: letters are single tokens."""
    letters = dict(zip(label_map, LETTERS))
    return (f"try letters, e.g. --label_map with {json.dumps(letters)} and an {{options}} line "
            "in the prompt so the model sees which letter means what")


def answer_token_ids(tokenizer, before, after, label_map, options):
    """For each label, in label map order, the id of the token right after [unused0] in its filled prompt.

    That token is what training masks and teaches, so it must be exactly one token in context (` Business`
    after `[unused0] ` is one token where `Business` alone might be another), and different for every label.
    """
    anchor_id = vocabulary_anchor_id(tokenizer)
    ids = []
    for label, verbalizer in label_map.items():
        encoded = tokenizer(fill_prompt(before, after, "", verbalizer, options)[0], return_special_tokens_mask=True)
        if anchor_id not in encoded["input_ids"]:
            raise InputError(f"the tokenizer splits {ANCHOR} into pieces although its vocabulary has it "
                             f"(id {anchor_id}); load it with mlm_classifier.load_tokenizer, which registers it as "
                             "one token")
        start = last_index(encoded["input_ids"], anchor_id) + 1
        answer = [i for i, special in zip(encoded["input_ids"][start:], encoded["special_tokens_mask"][start:])
                  if not special]
        if len(answer) != 1:
            raise InputError(
                f"label {label!r}: its verbalizer {verbalizer!r} is {len(answer)} tokens after {ANCHOR} in the prompt "
                f"{tokenizer.convert_ids_to_tokens(answer)}; the answer must be one token: "
                f"{letter_suggestion(label_map)}")
        ids.append(answer[0])
    for a, id_a in enumerate(ids):
        for b in range(a):
            if ids[b] == id_a:
                labels = list(label_map)
                raise InputError(f"labels {labels[b]!r} and {labels[a]!r} both answer with the token "
                                 f"{tokenizer.convert_ids_to_tokens([id_a])[0]!r}; give them different verbalizers")
    return ids


def check_fixed_length(tokenizer, before, after, label_map, options, max_length):
    """Tokens the prompt needs without any text; an InputError when that leaves no room within `max_length`."""
    empty = fill_prompt(before, after, "", next(iter(label_map.values())), options)[0]
    needed = len(tokenizer(empty)["input_ids"])
    if needed >= max_length:
        raise InputError(f"the prompt needs {needed} tokens without any text (options and special tokens included), "
                         f"which leaves no room for the text within --max_length {max_length}; raise --max_length "
                         "or shorten the prompt")
    return needed


def encode_prompts(tokenizer, before, after, texts, verbalizers, options, max_length, rows=None, source=""):
    """Token ids of the filled prompts, each one's answer position, and how many texts were cut.

    Each prompt is tokenised whole, so an example that fits gets exactly the ids a user's own tokenizer
    call gives. One that does not fit loses the tail of its text at the token level: the ids of the tokens
    overlapping the text are cut, and the prompt's own ids before and after are joined around them
    (decoding and re-tokenising could overshoot). The prompt, options and answer are never cut. The
    answer position is the token right after the last [unused0] (a text may contain one too).
    """
    anchor_id = tokenizer.convert_tokens_to_ids(ANCHOR)
    rows = rows if rows is not None else list(range(len(texts)))
    sequences, positions, n_cut = [], [], 0
    chunk = 1000  # tokenizes in parallel, without holding every offset mapping at once
    for start in range(0, len(texts), chunk):
        filled = [fill_prompt(before, after, text, verbalizer, options)
                  for text, verbalizer in zip(texts[start:start + chunk], verbalizers[start:start + chunk])]
        encoded = tokenizer([prompt for prompt, _ in filled], return_offsets_mapping=True, verbose=False)
        for k, ((_, (t0, t1)), ids, offsets) in enumerate(zip(filled, encoded["input_ids"], encoded["offset_mapping"])):
            if len(ids) > max_length:
                # Special tokens have the empty offset (0, 0) and never overlap the text.
                text_tokens = [i for i, (a, b) in enumerate(offsets) if a < t1 and b > t0]
                excess = len(ids) - max_length
                if len(text_tokens) < excess:
                    raise InputError(f"{source}: row {rows[start + k]}: the prompt without its text is "
                                     f"{len(ids) - len(text_tokens)} tokens, more than --max_length {max_length}")
                end = text_tokens[-1] + 1
                ids = ids[: end - excess] + ids[end:]
                n_cut += 1
            sequences.append(ids)
            positions.append(last_index(ids, anchor_id) + 1)
    return sequences, positions, n_cut


def mask_answers(sequences, positions, mask_token_id):
    """Copies of the sequences with the answer token at each position replaced by [MASK]: what is scored."""
    masked = []
    for ids, position in zip(sequences, positions):
        ids = list(ids)
        ids[position] = mask_token_id
        masked.append(ids)
    return masked


# -----------------------------------------------------------------------------
# Tables: texts (and labels) from csv, json, jsonl or parquet files


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
        def pick(values):
            return None if values is None else [values[i] for i in indices]
        return Split(self.source, pick(self.texts), pick(self.labels), pick(self.rows), pick(self.ids))


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
                raise InputError(f"{source}: {located(len(records), line)}: not valid JSON ({e.msg})") from None
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


# -----------------------------------------------------------------------------
# Answer tokens


def single_token_id(tokenizer, spelling, what="option spelling"):
    """The id of `spelling` if the tokenizer writes it as exactly one token, else an InputError."""
    ids = tokenizer(spelling, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(
            f"{what} {spelling!r} is {len(ids)} tokens {tokenizer.convert_ids_to_tokens(ids)} in this tokenizer; "
            "scoring reads one token per option"
        )
    return ids[0]


def letter_token_ids(tokenizer, letters):
    """For each letter, the distinct ids of its spellings `A` and ` A` (both must be single tokens).

    The published eval.py scores a letter by the summed probability of both spellings, and so do we.
    """
    return [sorted({single_token_id(tokenizer, spelling) for spelling in (letter, " " + letter)})
            for letter in letters]


def letters_that_fit(tokenizer):
    """How many letters, from A on, the tokenizer writes as single tokens in both spellings (at most 26)."""
    for n, letter in enumerate(LETTERS):
        for spelling in (letter, " " + letter):
            if len(tokenizer(spelling, add_special_tokens=False)["input_ids"]) != 1:
                return n
    return len(LETTERS)


def require_mask_token(tokenizer, model_name):
    """The tokenizer's [MASK] id, or an InputError: the whole method reads the MLM head at [MASK]."""
    if tokenizer.mask_token_id is None:
        raise InputError(f"--model {model_name}: the tokenizer has no mask token; this method needs a masked LM")
    return tokenizer.mask_token_id


def vocabulary_anchor_id(tokenizer, source="the tokenizer"):
    """The vocabulary's id of [unused0], or an InputError that says how to add one."""
    anchor_id = tokenizer.convert_tokens_to_ids(ANCHOR)
    if anchor_id is None or anchor_id == tokenizer.unk_token_id:
        raise InputError(
            f"{source}: no {ANCHOR} in the vocabulary, and the prompt's answer slot needs it as one token. Add it, "
            f"give the model a row for it and save both: tokenizer.add_tokens([\"{ANCHOR}\"], special_tokens=True); "
            "model.resize_token_embeddings(len(tokenizer)); tokenizer.save_pretrained(folder); "
            "model.save_pretrained(folder). Then fine-tune from that folder with train.py: a new row means nothing "
            "to the model until it is trained")
    return anchor_id


def register_anchor(tokenizer, model_name):
    """Make the tokenizer write [unused0] as one token, the vocabulary's own; returns its id.

    ModernBERT's tokenizer has it as an added token. BERT's vocabulary has [unused0] as an ordinary entry that
    its pre-tokenizer splits into `[`, `unused`, `##0`, `]`; it is registered here as a special added token with
    the same id, so there is no new embedding (len(tokenizer) and the model are unchanged). It is not normalized,
    so an uncased tokenizer's lowercasing cannot touch it. A tokenizer saved afterwards keeps it registered
    (train.py saves it with the model), so later loads agree and need no note.
    """
    from tokenizers import AddedToken

    anchor_id = vocabulary_anchor_id(tokenizer, f"--model {model_name}")
    probe = f"Answer: {ANCHOR} {tokenizer.mask_token}"
    if anchor_id in tokenizer(probe, add_special_tokens=False)["input_ids"]:
        return anchor_id
    tokenizer.add_tokens([AddedToken(ANCHOR, special=True, normalized=False)], special_tokens=True)
    if anchor_id not in tokenizer(probe, add_special_tokens=False)["input_ids"]:
        raise InputError(f"--model {model_name}: the tokenizer splits {ANCHOR} into pieces, even registered as a "
                         f"special token (id {anchor_id}); the answer slot needs it as one token")
    say(f"note: {model_name}: the tokenizer split {ANCHOR} into pieces although its vocabulary has it "
        f"(id {anchor_id}); registered it as one special token with that id (no new embedding)")
    return anchor_id


def last_index(ids, token_id):
    """Position of the last `token_id` in `ids` (the published eval reads the last [MASK])."""
    for position in range(len(ids) - 1, -1, -1):
        if ids[position] == token_id:
            return position
    raise ValueError(f"token id {token_id} not found")


# -----------------------------------------------------------------------------
# Scoring: the MLM head at [MASK], read over the option tokens


def padded_width(length, pad_to_multiple_of):
    """`length` rounded up to a multiple of `pad_to_multiple_of`: the width a batch is padded to."""
    return -(-length // pad_to_multiple_of) * pad_to_multiple_of


def length_sorted_batches(lengths, batch_tokens, pad_to_multiple_of):
    """Group indices into batches of similar length whose padded size (rows x width) fits `batch_tokens`.

    Longest first, so that a batch too big for memory fails at once rather than at the end.
    A sequence longer than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current, width = [], [], 0
    for i in order:
        if current and (len(current) + 1) * width > batch_tokens:
            batches.append(current)
            current = []
        if not current:
            width = padded_width(lengths[i], pad_to_multiple_of)
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(sequences, pad_token_id, pad_to_multiple_of):
    """Right-pad token id lists into `input_ids` and `attention_mask` tensors, the width a multiple of
    `pad_to_multiple_of`. One array is built from all the ids at once (a tensor per row cost 0.5 s over MMLU)."""
    lengths = torch.tensor([len(ids) for ids in sequences])
    width = padded_width(int(lengths.max()), pad_to_multiple_of)
    attention_mask = (torch.arange(width) < lengths[:, None]).long()
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    flat = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    input_ids[attention_mask.bool()] = torch.from_numpy(flat)
    return input_ids, attention_mask


# Where the MLM head of each masked LM in transformers begins: the submodule its forward hands the backbone's
# last hidden states to. From there on every step works one position at a time (dense, activation, norm, the
# 30k-50k-row vocabulary projection), so running it on a few gathered rows gives exactly those rows of the
# full logits. Read off each class's forward in transformers 5.
MLM_HEAD_ENTRIES = {
    "ModernBertForMaskedLM": "head",  # decoder(head(h))
    "BertForMaskedLM": "cls",  # cls.predictions: transform, then decoder
    "RobertaForMaskedLM": "lm_head", "XLMRobertaForMaskedLM": "lm_head", "CamembertForMaskedLM": "lm_head",
    "DistilBertForMaskedLM": "vocab_transform",  # then activation, vocab_layer_norm, vocab_projector
    "ElectraForMaskedLM": "generator_predictions",  # then generator_lm_head
}


def mlm_head_entry(model):
    """The submodule where `model`'s MLM head begins, or None for an architecture not known here.

    DeBERTa (v1 and v2) has two heads and its forward picks one by `model.legacy`: `cls(h)`, or
    `lm_predictions(h, word_embeddings)`.
    """
    name = type(model).__name__
    if name in ("DebertaForMaskedLM", "DebertaV2ForMaskedLM"):
        return model.cls if model.legacy else model.lm_predictions
    return getattr(model, MLM_HEAD_ENTRIES[name]) if name in MLM_HEAD_ENTRIES else None


def head_logits(model, input_ids, attention_mask, where, call=None):
    """MLM logits only at the positions `where` selects, shape (selected, vocab), in row-major order.

    The backbone runs on every position and the head (with its vocabulary projection, most of the head's cost)
    only on the selected ones. `where` indexes the (batch, length) grid: a pair (rows, positions) or a boolean
    mask. The model's own forward runs, with a pre-hook on its head's first module that gathers the selected
    hidden states, so the head is exactly the model's own code. `call` is what to call when `model` is wrapped
    (DistributedDataParallel): the forward must go through the wrapper for gradients to be synchronised. An
    architecture not in mlm_head_entry computes logits everywhere and the selected rows are picked from them.
    """
    call = call if call is not None else model
    entry = mlm_head_entry(model)
    if entry is None:
        return call(input_ids=input_ids, attention_mask=attention_mask).logits[where]
    handle = entry.register_forward_pre_hook(lambda module, args: (args[0][where], *args[1:]))
    try:
        return call(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        handle.remove()


def logits_at(model, input_ids, attention_mask, positions):
    """MLM logits over the vocabulary at one position per row, shape (rows, vocab): the head runs there only."""
    rows = torch.arange(len(positions), device=input_ids.device)
    return head_logits(model, input_ids, attention_mask, (rows, positions))


@torch.no_grad()
def option_log_probs(model, input_ids, attention_mask, positions, option_ids):
    """log P(option) at `positions`: per option, the log of the summed vocabulary probabilities of its ids.

    The softmax is over the whole vocabulary, as published; float32 whatever the model's dtype.
    """
    log_probs = logits_at(model, input_ids, attention_mask, positions).float().log_softmax(dim=-1)
    return torch.stack([log_probs[:, ids].logsumexp(dim=-1) for ids in option_ids], dim=1)


def score_sequences(model, sequences, mask_token_id, pad_token_id, option_ids, batch_tokens,
                    pad_to_multiple_of=64, shard=(0, 1), progress=False):
    """Score token id lists (each holding a [MASK]) over the options; returns {index: [log P per option]}.

    Each sequence is read at its last [MASK]. Batches are length-sorted and bounded by `batch_tokens`;
    with `shard=(rank, world)` this process scores every world-th batch only, so that several processes
    split the work (`gather_scores` then merges their shares).
    """
    from tqdm import tqdm

    device = next(model.parameters()).device
    batches = length_sorted_batches([len(s) for s in sequences], batch_tokens, pad_to_multiple_of)
    mine = batches[shard[0]::shard[1]]
    option_ids = [torch.tensor(ids, device=device) for ids in option_ids]
    # On a GPU nothing below waits for the GPU until the end: inputs go from pinned memory without blocking and
    # the scores stay on the device, so padding the next batch overlaps the current batch's forward pass (a
    # blocking copy or a .cpu() per batch would idle the GPU while the host pads).
    pinned = device.type == "cuda"
    parts = []
    for batch in tqdm(mine, desc="scoring", unit="batch", disable=not progress):
        input_ids, attention_mask = pad_batch([sequences[i] for i in batch], pad_token_id, pad_to_multiple_of)
        positions = torch.tensor([last_index(sequences[i], mask_token_id) for i in batch])
        input_ids, attention_mask, positions = (t.pin_memory().to(device, non_blocking=True) if pinned else t.to(device)
                                                for t in (input_ids, attention_mask, positions))
        parts.append(option_log_probs(model, input_ids, attention_mask, positions, option_ids))
    values = torch.cat(parts).cpu().tolist() if parts else []
    return dict(zip(itertools.chain.from_iterable(mine), values))


def gather_scores(scores):
    """Under torchrun, merge every process's {index: scores} so that each process holds them all."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return scores
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, scores)
    return {i: s for part in gathered for i, s in part.items()}


def current_shard():
    """(rank, world size) of this process under torchrun, (0, 1) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def first_max(values):
    """Index of the largest value; a tie goes to the earliest, as Python's max over A, B, C, D in the published eval."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def pick(log_probs, n_options):
    """Predicted option index and probabilities renormalised over the first `n_options` options."""
    probs = torch.tensor(log_probs[:n_options], dtype=torch.float64).softmax(dim=0).tolist()
    return first_max(probs), probs


# -----------------------------------------------------------------------------
# Bias controls: the option order rotated, and content-free calibration


def rotations(n, k):
    """The first `k` cyclic rotations of n options: in rotation r, position j shows option (j + r) % n.

    With k == n every option is shown once at every position (under every letter).
    """
    if not 1 <= k <= n:
        raise InputError(f"--permutations {k} must be between 1 and the number of options ({n})")
    return [[(j + r) % n for j in range(n)] for r in range(k)]


def slot_probabilities(slot_log_probs, option_at_slot):
    """Probabilities of the options, in their own order, from one prompt's log P over its slots.

    Slot j (a letter, or a fixed answer token) stands for option `option_at_slot[j]`; the probabilities
    are renormalised over the slots.
    """
    probs = torch.tensor(slot_log_probs[: len(option_at_slot)], dtype=torch.float64).softmax(dim=0).tolist()
    out = [0.0] * len(option_at_slot)
    for slot, option in enumerate(option_at_slot):
        out[option] = probs[slot]
    return out


def calibrate(probs, content_free_probs):
    """Contextual calibration (Zhao et al., 2021): divide by the content-free probabilities, renormalise."""
    weighted = [p / q for p, q in zip(probs, content_free_probs)]
    total = sum(weighted)
    return [w / total for w in weighted]


def combine_views(view_probs, content_free=None):
    """The mean over views (rotations) of each option's probability, each view calibrated first if given."""
    if content_free is not None:
        view_probs = [calibrate(p, q) for p, q in zip(view_probs, content_free)]
    return [sum(column) / len(view_probs) for column in zip(*view_probs)]


# -----------------------------------------------------------------------------
# Devices, models, torchrun


def resolve_device(device, local_rank=0):
    """`auto` picks the process's GPU when there is one, else the CPU; a GPU asked for but absent is an InputError."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: torch sees no GPU here; use --device cpu (or auto)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: there are only {torch.cuda.device_count()} GPU(s)")
    return resolved


def resolve_dtype(dtype, device):
    """`auto` is bfloat16 on a GPU and float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def resolve_attn_implementation(attn_implementation, device, dtype):
    """`auto` is flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa."""
    if attn_implementation != "auto":
        return attn_implementation
    import importlib.util

    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


def batch_defaults(device, batch_tokens=None, pad_to_multiple_of=None):
    """(padded tokens per scoring batch, width multiple): 65,536 and 64 on a GPU, 8,192 and 8 on the CPU; a value
    given wins. Training batches take the same width multiple.

    Odd widths are several times slower on GPUs; on the CPU, padding is pure waste.
    """
    on_gpu = device.type == "cuda"
    return batch_tokens or (65536 if on_gpu else 8192), pad_to_multiple_of or (64 if on_gpu else 8)


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spm.model",
                   "sentencepiece.bpe.model")


def looks_local(name):
    """Whether a --model value means a folder rather than a hub id (`org/name`): it exists, or is written as a path."""
    return (os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1
            or (os.sep != "/" and os.sep in name))


def check_model_source(name, flag="--model", weights=True):
    """An InputError, before anything loads, for a local model folder that is missing or lacks a config,
    a tokenizer or (with `weights`) weights. Hub ids are checked when they load (see load_pretrained)."""
    if not looks_local(name):
        return
    if not os.path.isdir(name):
        raise InputError(f"{flag} {name}: no such folder (a hub model is named as org/name)")
    files = set(os.listdir(name))
    missing = [what for what, needed in (("config.json", ("config.json",)), ("tokenizer files", TOKENIZER_FILES),
                                         ("weights", WEIGHT_FILES if weights else ("config.json",)))
               if not files & set(needed)]
    if missing:
        raise InputError(f"{flag} {name}: the folder has no {', no '.join(missing)}; give a folder that "
                         "save_pretrained wrote for both the model and its tokenizer")


def load_pretrained(loader, name, flag="--model", **kwargs):
    """`loader.from_pretrained(name, **kwargs)`, with a hub or folder that cannot serve it as one InputError."""
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        reason = error_reason(e)
        if looks_local(name):
            raise InputError(f"{flag} {name}: cannot be loaded ({reason})") from None
        raise InputError(f"{flag} {name}: not a local folder, and the model hub cannot serve it ({reason}); "
                         "give a local folder, or run where the hub is reachable") from None


def load_masked_lm(model_name, dtype, attn_implementation, device):
    """The model in eval mode; the dtype is passed explicitly, since transformers 5 otherwise keeps the checkpoint's."""
    from transformers import AutoModelForMaskedLM

    model = load_pretrained(AutoModelForMaskedLM, model_name, dtype=dtype, attn_implementation=attn_implementation)
    return model.to(device).eval()


def max_positions(model_name, tokenizer):
    """The most tokens one prompt may have: the model's positions, or the tokenizer's limit when smaller."""
    from transformers import AutoConfig

    limits = [getattr(load_pretrained(AutoConfig, model_name), "max_position_embeddings", None),
              tokenizer.model_max_length if tokenizer.model_max_length < 1e9 else None]  # 1e30 means "unset"
    limits = [n for n in limits if n]
    return min(limits) if limits else None


def init_distributed(device):
    """(rank, world_size): under torchrun, start a process group (nccl on GPUs, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return int(os.environ.get("RANK", "0")), world


def end_distributed():
    """Under torchrun, leave together and tidily: free what still holds the process group (train.py's DDP
    wrapper), wait for every process, then close the group. Left to the interpreter's exit, or closed while
    another process is still talking, gloo can hang or abort ("terminate called without an active exception")."""
    if torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# -----------------------------------------------------------------------------
# Predictions and metrics: the record train.py and classify.py both write


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


# -----------------------------------------------------------------------------
# MLMClassifier: a trained folder, or zero-shot over any label list


def parse_labels(value):
    """A label list from a comma list (`"World,Sports"`) or a file with one label per line (blank lines skipped)."""
    if os.path.isfile(value):
        source = f"--labels {value}"
        labels = [line.strip() for line in read_text(value, source).split("\n") if line.strip()]
    else:
        labels = [label.strip() for label in value.split(",")]
        source = "--labels"
    check_labels_list(labels, source)
    return labels


def check_labels_list(labels, source="labels"):
    """An InputError for fewer than two labels, an empty one, or one given twice."""
    if len(labels) < 2:
        raise InputError(f"{source}: {len(labels)} label(s); a classifier needs at least two")
    for k, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise InputError(f"{source}: label {k + 1} is empty")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InputError(f"{source}: {', '.join(repr(r) for r in repeated)} given more than once")


@dataclass
class ClassifierSpec:
    """What a classifier answers and how, before any model is loaded.

    `verbalizers` is None for letters by position (zero-shot: the label at option position j answers with
    the j-th letter, scored as `A` + ` A`, as eval.py does); otherwise each label's own answer token, the
    one a trained folder was taught.
    """
    model: str
    labels: list
    prompt: str
    verbalizers: list | None
    max_length: int | None
    source: str  # "trained folder" or "zero-shot"
    notes: list = field(default_factory=list)

    @property
    def zero_shot(self):
        return self.verbalizers is None


def read_settings(path):
    """A trained folder's classifier.json, checked: what it must hold is a positive integer max_length."""
    try:
        settings = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(settings, dict) or type(settings.get("max_length")) is not int or settings["max_length"] < 1:
        raise InputError(f"{path}: needs a positive integer max_length, as train.py writes it")
    return settings


def locate(model_name, filename):
    """Path of `filename` in a local folder or a hub repository, or None when it is not there."""
    if os.path.isdir(model_name):
        path = os.path.join(model_name, filename)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    return cached_file(model_name, filename, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)


def load_spec(model_name, labels=None, prompt=None, max_length=None, prompt_source="--prompt_file"):
    """The ClassifierSpec for a trained folder (its label_map.json, prompt.txt and classifier.json) or for
    zero-shot `labels` (letters A, B, ... by position, the zero-shot template unless `prompt` is given)."""
    if not looks_local(model_name):  # a hub that cannot serve the model says so, not "no label_map.json"
        from transformers import AutoConfig

        load_pretrained(AutoConfig, model_name)
    label_map_path = locate(model_name, "label_map.json")
    if label_map_path and labels is not None:
        raise InputError(f"--labels: {model_name} is a trained folder with its own label_map.json; it answers with "
                         "the labels it was trained on (leave out --labels, or point --model at a base model)")
    if label_map_path and prompt is not None:
        raise InputError(f"{prompt_source}: {model_name} is a trained folder with its own prompt.txt, the prompt it "
                         "was trained on (leave out the prompt, or point --model at a base model)")
    if label_map_path:
        label_map = read_label_map(label_map_path)
        prompt_path = locate(model_name, "prompt.txt")
        if prompt_path is None:
            raise InputError(f"--model {model_name}: has label_map.json but no prompt.txt; train.py writes both")
        prompt = read_prompt(prompt_path)
        parse_prompt(prompt, prompt_path)
        notes = []
        if max_length is None:
            settings_path = locate(model_name, SETTINGS_FILE)
            if settings_path:
                max_length = read_settings(settings_path)["max_length"]
            else:
                max_length = 512
                notes.append(f"{model_name} has no {SETTINGS_FILE} (trained before it was written): "
                             "max_length 512, train.py's default; give --max_length if it was trained otherwise")
        return ClassifierSpec(model_name, list(label_map), prompt, list(label_map.values()), max_length,
                              "trained folder", notes)
    if labels is None:
        raise InputError(f"--model {model_name}: no label_map.json there, so it is not a folder written by train.py; "
                         "give --labels to classify zero-shot")
    labels = list(labels)
    check_labels_list(labels)
    prompt = ZERO_SHOT_PROMPT if prompt is None else prompt.rstrip()
    parse_prompt(prompt, prompt_source if prompt != ZERO_SHOT_PROMPT else "the zero-shot prompt")
    if "{options}" not in prompt:
        raise InputError(f"{prompt_source}: zero-shot labels answer by letter, so the prompt must list them with "
                         "{options} (one `- A: label` line each)")
    return ClassifierSpec(model_name, labels, prompt, None, max_length, "zero-shot")


@dataclass
class View:
    """One ordering of the options: the label map as the prompt shows it, and which label each slot scores."""
    label_map: dict  # label -> verbalizer, in display order
    option_at_slot: list  # slot j scores label option_at_slot[j] (a label index)


def make_views(spec, permutations=1):
    """The option orders a text is scored under: `permutations` cyclic rotations of the label list.

    Zero-shot, the letters are reassigned by position, so each rotation shows every label under another
    letter. A trained folder keeps each label's own answer token, and a rotation only reorders the
    `{options}` lines; without `{options}` in its prompt, rotations would all be the same prompt.
    """
    n = len(spec.labels)
    if permutations > 1 and not spec.zero_shot and "{options}" not in spec.prompt:
        raise InputError("--permutations: this folder's prompt has no {options} block, so every rotation of the "
                         "labels gives the same prompt")
    views = []
    for order in rotations(n, permutations):
        if spec.zero_shot:
            label_map = {spec.labels[i]: LETTERS[j] for j, i in enumerate(order)}
            views.append(View(label_map, order))
        else:
            label_map = {spec.labels[i]: spec.verbalizers[i] for i in order}
            views.append(View(label_map, list(range(n))))
    return views


@dataclass
class ScoringPlan:
    """How a spec is scored with one tokenizer: the views, the template's halves, each slot's option ids."""
    views: list
    before: str
    after: str
    option_ids: list
    max_length: int | None


def plan_scoring(spec, tokenizer, permutations=1):
    """Check everything a spec needs of the tokenizer, before any weights load, and return its ScoringPlan.

    Every view's answers must be single, distinct tokens, the letters must fit (zero-shot), and every view's
    prompt must leave room for text within max_length (the folder's, else the model's positions).
    """
    require_mask_token(tokenizer, spec.model)
    views = make_views(spec, permutations)
    before, after = parse_prompt(spec.prompt)
    max_length = spec.max_length or max_positions(spec.model, tokenizer)
    n = len(spec.labels)
    if spec.zero_shot:
        fit = letters_that_fit(tokenizer)
        if n > fit:
            raise InputError(f"--labels: {n} labels, but this tokenizer writes only {fit} letters "
                             f"({LETTERS[0]}-{LETTERS[max(fit - 1, 0)]}) as single tokens, so at most {fit} labels fit")
    answer_ids = []  # per view, each label's answer token in that view's order
    for view in views:
        options = options_block(view.label_map)
        answer_ids.append(answer_token_ids(tokenizer, before, after, view.label_map, options))
        if max_length:
            check_fixed_length(tokenizer, before, after, view.label_map, options, max_length)
    # Zero-shot, slot j is the j-th letter in both spellings (as eval.py); a trained folder's slot i is
    # label i's answer token, the one it was taught (as train.py scores it; views[0] is the folder's order).
    option_ids = letter_token_ids(tokenizer, LETTERS[:n]) if spec.zero_shot else [[i] for i in answer_ids[0]]
    return ScoringPlan(views, before, after, option_ids, max_length)


class MLMClassifier:
    """A masked LM that labels texts with its MLM head, in one forward pass per text (and per rotation).

    Build it with `from_pretrained`; call it on a text or a list of texts. `permutations` (1 to the number
    of labels) scores each text under that many cyclic rotations of the label order and averages each
    label's probability; `calibrate` divides by the probabilities of `content_free_text` (Zhao et al., 2021).
    """

    def __init__(self, spec, tokenizer, model, permutations=1, calibrate=False, content_free_text=CONTENT_FREE_TEXT,
                 batch_tokens=None, pad_to_multiple_of=None, plan=None):
        self.spec, self.tokenizer, self.model = spec, tokenizer, model
        self.permutations, self.calibrate, self.content_free_text = permutations, calibrate, content_free_text
        self.plan = plan or plan_scoring(spec, tokenizer, permutations)
        self.mask_token_id = tokenizer.mask_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.mask_token_id
        self.batch_tokens, self.pad_to_multiple_of = batch_defaults(next(model.parameters()).device, batch_tokens,
                                                                    pad_to_multiple_of)
        self.truncated = 0  # texts cut to fit max_length in the last call (in any view)
        self._content_free = None

    @classmethod
    def from_pretrained(cls, model_name, labels=None, prompt=None, max_length=None, permutations=1, calibrate=False,
                        content_free_text=CONTENT_FREE_TEXT, device="auto", dtype="auto", attn_implementation="auto",
                        batch_tokens=None, pad_to_multiple_of=None):
        """A trained folder (reads prompt.txt, label_map.json, classifier.json), or any masked LM zero-shot over
        `labels`. Everything is checked before the weights load: bad labels or prompts cost no time.

        `device` auto is the GPU when there is one; `dtype` auto is bfloat16 there and float32 on the CPU.
        """
        spec = load_spec(model_name, labels, prompt, max_length)
        tokenizer = load_tokenizer(model_name)
        plan = plan_scoring(spec, tokenizer, permutations)
        device = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        dtype = resolve_dtype(dtype, device)
        model = load_masked_lm(model_name, dtype, resolve_attn_implementation(attn_implementation, device, dtype),
                               device)
        return cls(spec, tokenizer, model, permutations, calibrate, content_free_text, batch_tokens,
                   pad_to_multiple_of, plan)

    @property
    def labels(self):
        return self.spec.labels

    @property
    def max_length(self):
        return self.plan.max_length

    def encode(self, texts):
        """Token ids of every text under every view (view-major), [MASK] at the answer; texts cut to fit."""
        texts = [str(t).strip() for t in texts]  # as train.py reads its rows
        sequences, self.truncated = [], 0
        for view in self.plan.views:
            options = options_block(view.label_map)
            verbalizer = next(iter(view.label_map.values()))  # any one: the answer is masked
            ids, positions, n_cut = encode_prompts(self.tokenizer, self.plan.before, self.plan.after, texts,
                                                   [verbalizer] * len(texts), options, self.max_length)
            sequences += mask_answers(ids, positions, self.mask_token_id)
            self.truncated = max(self.truncated, n_cut)
        return sequences

    def view_probabilities(self, texts, shard=(0, 1), progress=False):
        """For each text, its label probabilities under each view: a list (texts) of lists (views) of lists."""
        sequences = self.encode(texts)
        scores = gather_scores(score_sequences(self.model, sequences, self.mask_token_id, self.pad_token_id,
                                               self.plan.option_ids, self.batch_tokens, self.pad_to_multiple_of,
                                               shard=shard, progress=progress))
        n = len(texts)
        return [[slot_probabilities(scores[v * n + t], view.option_at_slot) for v, view in enumerate(self.plan.views)]
                for t in range(n)]

    def content_free_probabilities(self):
        """Each view's label probabilities for the content-free text (scored once, then kept)."""
        if self._content_free is None:
            self._content_free = self.view_probabilities([self.content_free_text])[0]
        return self._content_free

    def probabilities(self, texts, shard=(0, 1), progress=False):
        """Each text's probability for each label: averaged over the rotations, calibrated first if asked."""
        content_free = self.content_free_probabilities() if self.calibrate else None
        return [combine_views(views, content_free) for views in self.view_probabilities(texts, shard, progress)]

    def __call__(self, texts, progress=False):
        """[{"label", "probabilities"}] for a list of texts; one dict for a single text."""
        single = isinstance(texts, str)
        results = []
        for probs in self.probabilities([texts] if single else list(texts), progress=progress):
            results.append({"label": self.labels[first_max(probs)], "probabilities": dict(zip(self.labels, probs))})
        return results[0] if single else results


def load_tokenizer(model_name, fast=True):
    """The model's tokenizer, with a mask token and [unused0] as one token (`register_anchor`); a fast one unless
    `fast=False` (its offsets locate a text to cut)."""
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, model_name)
    if fast and not tokenizer.is_fast:
        raise InputError(f"--model {model_name}: a fast tokenizer is needed (token offsets locate the text)")
    require_mask_token(tokenizer, model_name)
    register_anchor(tokenizer, model_name)
    return tokenizer
