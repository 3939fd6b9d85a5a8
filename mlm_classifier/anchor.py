"""[unused0], the anchor of the answer slot: the model was instruction-tuned to put the answer token right after it,
so every tokenizer must write it as one token, its vocabulary's own (models.load_tokenizer makes sure of that)."""

from .errors import InputError

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
