"""Prompt templates: their rules (`parse_prompt`), filling them, and cutting only the text to fit. The answer
token is a prompt's last, right after the [unused0] the model was instruction-tuned on."""

import json
import re
from dataclasses import dataclass

from .anchor import ANCHOR, vocabulary_anchor_id
from .errors import InputError
from .scoring import LETTERS, last_index

TEXT_PLACEHOLDERS = ("{text}", "{txt}")  # {txt} is the published cookbook's spelling

ZERO_SHOT_PROMPT = (
    "You will be given a text as well as a list of labels. "
    "Read the text carefully and select the right label from the list.\n"
    "TEXT:\n{text}\nLABELS:\n{options}\n\nANSWER:\nAnswer: [unused0] {label}"
)

# A placeholder is an identifier in braces: {text}/{txt}, {options}, {label}, or a column's name filled from each
# row. `{{name}}` is a literal `{name}`; braces around anything else (JSON, `{0}`) are left as they are.
PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
TEXT_FIELD = "text"  # the field {text} and {txt} fill; the API's key for it


@dataclass(frozen=True)
class Template:
    """A checked template (from parse_prompt): `parts` are (kind, value, as written); `fields` are "text" for {text}
    and a column's name for every other `{name}`, and `columns` the latter."""
    prompt: str
    parts: tuple
    source: str
    fields: tuple
    columns: tuple
    text_only: bool


def placeholder_list(fields):
    """`{premise} and {hypothesis}`: how messages name a template's fields."""
    names = [f"{{{field}}}" for field in fields]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def parse_prompt(prompt, source="the prompt"):
    """Check a prompt template and return it as a Template: either one `{text}` or placeholders naming columns, each
    once; exactly one `{label}`, last, with `[unused0]` right before it (one space allowed)."""
    prompt = prompt.rstrip()
    parts, position = [], 0
    for match in PLACEHOLDER.finditer(prompt):
        if match.start() > position:
            parts.append(("literal", prompt[position:match.start()], prompt[position:match.start()]))
        raw = match.group(0)
        if match.group(1) is not None:
            parts.append(("literal", "{" + match.group(1) + "}", raw))
        elif match.group(2) in ("options", "label"):
            parts.append((match.group(2), "", raw))
        else:
            parts.append(("field", TEXT_FIELD if raw in TEXT_PLACEHOLDERS else match.group(2), raw))
        position = match.end()
    if position < len(prompt):
        parts.append(("literal", prompt[position:], prompt[position:]))
    fields = tuple(value for kind, value, _ in parts if kind == "field")
    columns = tuple(field for field in fields if field != TEXT_FIELD)
    n_text = len(fields) - len(columns)
    if n_text > 1 or not fields:
        hint = " (or placeholders naming the columns that fill it, such as {premise} and {hypothesis})"
        raise InputError(f"{source} has {n_text} text placeholders; it needs exactly one {{text}} "
                         f"(or the published {{txt}}) where each example's text goes{hint if not fields else ''}")
    repeated = sorted({field for field in columns if columns.count(field) > 1})
    if repeated:
        raise InputError(f"{source}: {placeholder_list(repeated)} appear(s) more than once; each column fills one "
                         "place (write a literal `{name}` as {{name}})")
    labels = [k for k, (kind, _, _) in enumerate(parts) if kind == "label"]
    if len(labels) != 1:
        raise InputError(f"{source} has {len(labels)} {{label}} placeholders; it needs exactly one, "
                         f"at the very end, after {ANCHOR}")
    if labels[0] != len(parts) - 1:
        tail = "".join(raw for _, _, raw in parts[labels[0] + 1:])
        raise InputError(f"{source}: only white space may follow {{label}}, but {tail[:40]!r} does; "
                         "the answer token must be the prompt's last token")
    before_label = "".join(raw for _, _, raw in parts[:-1])
    last = parts[-2] if len(parts) > 1 else ("", "", "")
    if last[0] != "literal" or not (last[1].endswith(ANCHOR) or last[1].endswith(ANCHOR + " ")):
        raise InputError(f"{source}: {ANCHOR} must come right before {{label}} (one space allowed), "
                         f"as in `Answer: {ANCHOR} {{label}}`; found {before_label[-30:]!r} before {{label}}")
    return Template(prompt, tuple(parts), source, fields, columns, fields == (TEXT_FIELD,))


def template_columns(template, text_column, flag="--text_column"):
    """{field: the column that fills it}; a column that would fill {text} and its own placeholder is an InputError."""
    if TEXT_FIELD in template.fields and text_column in template.columns:
        raise InputError(f"{template.source} has both {{text}} ({flag} {text_column!r}) and {{{text_column}}}: one "
                         "column would fill two places; keep one of them")
    return {field: text_column if field == TEXT_FIELD else field for field in template.fields}


def fill_template(template, fields, verbalizer, options):
    """The filled prompt and each field's character span; `fields` is a dict (or a string for {text} alone)."""
    if isinstance(fields, str):
        if not template.text_only:
            raise TypeError(f"{template.source} fills {placeholder_list(template.fields)}: give a dict of them, "
                            "not one string")
        fields = {TEXT_FIELD: fields}
    pieces, spans, length = [], [], 0
    for kind, value, _ in template.parts:
        piece = {"literal": value, "options": options, "label": verbalizer}.get(kind)
        if kind == "field":
            piece = fields[value]
            spans.append((length, length + len(piece)))
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces), spans


def empty_fields(template):
    """Every field of `template` filled with the empty text: the prompt's fixed part."""
    return dict.fromkeys(template.fields, "")


def option_lines(pairs):
    """`- A: text` lines from (answer, text) pairs: how every prompt here lists its options (the paper's format)."""
    return "\n".join(f"- {answer}: {text}" for answer, text in pairs)


def options_block(label_map):
    """What `{options}` becomes: one line per label, `- <verbalizer>: <label>`, in the map's order."""
    return option_lines((verbalizer, label) for label, verbalizer in label_map.items())


def answer_token_ids(tokenizer, template, label_map, options):
    """For each label, the id of the token right after [unused0] in its filled prompt: what training teaches, so it
    must be one token in context (` Business` after `[unused0] ` may differ from `Business`), and one per label."""
    anchor_id = vocabulary_anchor_id(tokenizer)
    ids = []
    for label, verbalizer in label_map.items():
        encoded = tokenizer(fill_template(template, empty_fields(template), verbalizer, options)[0],
                            return_special_tokens_mask=True)
        if anchor_id not in encoded["input_ids"]:
            raise InputError(f"the tokenizer splits {ANCHOR} into pieces although its vocabulary has it "
                             f"(id {anchor_id}); load it with mlm_classifier.load_tokenizer, which registers it as "
                             "one token")
        start = last_index(encoded["input_ids"], anchor_id) + 1
        answer = [i for i, special in zip(encoded["input_ids"][start:], encoded["special_tokens_mask"][start:])
                  if not special]
        if len(answer) != 1:
            letters = json.dumps(dict(zip(label_map, LETTERS)))
            raise InputError(
                f"label {label!r}: its verbalizer {verbalizer!r} is {len(answer)} tokens after {ANCHOR} in the prompt "
                f"{tokenizer.convert_ids_to_tokens(answer)}; the answer must be one token: try letters, e.g. "
                f"--label_map with {letters} and an {{options}} line in the prompt so the model sees which letter "
                "means what")
        ids.append(answer[0])
    for a, id_a in enumerate(ids):
        if id_a in ids[:a]:
            labels = list(label_map)
            raise InputError(f"labels {labels[ids.index(id_a)]!r} and {labels[a]!r} both answer with the token "
                             f"{tokenizer.convert_ids_to_tokens([id_a])[0]!r}; give them different verbalizers")
    return ids


def check_fixed_length(tokenizer, template, label_map, options, max_length):
    """Tokens the prompt needs without any text; an InputError when that leaves no room within `max_length`."""
    empty = fill_template(template, empty_fields(template), next(iter(label_map.values())), options)[0]
    needed = len(tokenizer(empty)["input_ids"])
    if needed >= max_length:
        raise InputError(f"the prompt needs {needed} tokens without any text (options and special tokens included), "
                         f"which leaves no room for the text within --max_length {max_length}; raise --max_length "
                         "or shorten the prompt")
    return needed


def kept_lengths(lengths, excess):
    """How many tokens each field keeps when `excess` tokens must go, one at a time from the end of the field with
    the most left (the earlier field first among equals). In closed form: the longest fields come down to a common
    level L, the first of them in prompt order to L and the rest to L + 1; shorter fields keep every token."""
    if excess <= 0:
        return list(lengths)
    if excess > sum(lengths):
        raise ValueError(f"{excess} tokens cannot go from fields of {sum(lengths)}")
    low, high = 0, max(lengths)
    while low < high:  # the largest level at which cutting to it removes at least `excess` tokens
        middle = (low + high + 1) // 2
        if sum(max(0, n - middle) for n in lengths) >= excess:
            low = middle
        else:
            high = middle - 1
    kept = [min(n, low + 1) for n in lengths]
    left = excess - sum(n - k for n, k in zip(lengths, kept))
    for k, n in enumerate(lengths):
        if left and n >= low + 1:
            kept[k], left = low, left - 1
    return kept


def encode_prompts(tokenizer, template, texts, verbalizers, options, max_length, rows=None, source=""):
    """Token ids of the filled prompts, each one's answer position (after the last [unused0]), and how many were cut.
    Each prompt is tokenised whole; one too long loses the ids of its fields' last tokens (kept_lengths), as
    decoding and re-tokenising could overshoot."""
    anchor_id = tokenizer.convert_tokens_to_ids(ANCHOR)
    rows = rows if rows is not None else list(range(len(texts)))
    sequences, positions, n_cut = [], [], 0
    chunk = 1000  # tokenizes in parallel, without holding every offset mapping at once
    for start in range(0, len(texts), chunk):
        filled = [fill_template(template, text, verbalizer, options)
                  for text, verbalizer in zip(texts[start:start + chunk], verbalizers[start:start + chunk])]
        encoded = tokenizer([prompt for prompt, _ in filled], return_offsets_mapping=True, verbose=False)
        for k, ((_, spans), ids, offsets) in enumerate(zip(filled, encoded["input_ids"], encoded["offset_mapping"])):
            if len(ids) > max_length:
                ids = cut_to_fit(ids, offsets, spans, max_length, f"{source}: row {rows[start + k]}")
                n_cut += 1
            sequences.append(ids)
            positions.append(last_index(ids, anchor_id) + 1)
    return sequences, positions, n_cut


def cut_to_fit(ids, offsets, spans, max_length, where):
    """`ids` less the tokens kept_lengths drops from each field (character spans `spans`), `max_length` left."""
    claimed, field_tokens = set(), []
    for t0, t1 in spans:
        # Special tokens have the empty offset (0, 0) and never overlap a field; an empty field has no tokens.
        tokens = [i for i, (a, b) in enumerate(offsets) if t0 < t1 and a < t1 and b > t0 and i not in claimed]
        claimed.update(tokens)
        field_tokens.append(tokens)
    lengths = [len(tokens) for tokens in field_tokens]
    excess = len(ids) - max_length
    if sum(lengths) < excess:
        raise InputError(f"{where}: the prompt without its text is {len(ids) - sum(lengths)} tokens, more than "
                         f"--max_length {max_length}")
    dropped = set()
    for tokens, kept in zip(field_tokens, kept_lengths(lengths, excess)):
        dropped.update(tokens[kept:])
    return [token for i, token in enumerate(ids) if i not in dropped]


def mask_answers(sequences, positions, mask_token_id):
    """Copies of the sequences with [MASK] at each answer position: what is scored."""
    return [[*ids[:position], mask_token_id, *ids[position + 1:]] for ids, position in zip(sequences, positions)]
