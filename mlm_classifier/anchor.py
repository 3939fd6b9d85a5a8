"""[unused0], the anchor of the answer slot: the model was instruction-tuned to put the answer token right after it,
so every tokenizer must write it as one token, its vocabulary's own."""

from .cli import InputError, say

ANCHOR = "[unused0]"


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
