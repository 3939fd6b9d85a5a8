"""Prompt templates: the rules a template keeps, filling it, and cutting only the text to fit.

A template holds `{text}` (or the published `{txt}`), optionally `{options}`, and ends with
`[unused0] {label}`: the answer token is the prompt's last token, right after the anchor the model was
instruction-tuned on. Long texts are cut at the token level; the instruction, the options and the answer
never are.
"""

import json

from .cli import InputError, say
from .scoring import LETTERS, last_index

ANCHOR = "[unused0]"  # the model was instruction-tuned to put the answer token right after it
TEXT_PLACEHOLDERS = ("{text}", "{txt}")  # {txt} is the published cookbook's spelling


# The zero-shot template, in the style of the paper's MMLU prompt: instruction, the text, the options as
# `- A: label` lines, an empty line, then the answer slot after [unused0].
ZERO_SHOT_PROMPT = (
    "You will be given a text as well as a list of labels. "
    "Read the text carefully and select the right label from the list.\n"
    "TEXT:\n{text}\nLABELS:\n{options}\n\nANSWER:\nAnswer: [unused0] {label}"
)


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


def option_lines(pairs):
    """`- A: text` lines from (answer, text) pairs: how every prompt here lists its options (the paper's format)."""
    return "\n".join(f"- {answer}: {text}" for answer, text in pairs)


def options_block(label_map):
    """What `{options}` becomes: one line per label, `- <verbalizer>: <label>`, in the map's order."""
    return option_lines((verbalizer, label) for label, verbalizer in label_map.items())


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
