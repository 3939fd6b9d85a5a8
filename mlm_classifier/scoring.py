"""The idea: a masked LM's MLM head, read at the last [MASK], answers over a few option tokens.

A sequence ends with `Answer: [unused0] [MASK]`; the MLM head's softmax over the whole vocabulary at that
[MASK], summed over each option's token ids (a letter's `A` and ` A`, or a label's one answer token), scores
the options (Clavié, Cooper, Warner, 2025). Fast because sequences are batched by length under a token
budget and the head (its vocabulary projection is most of its cost) runs only at the [MASK] rows.
Bias controls: the options' order rotated, and content-free calibration (Zhao et al., 2021).
"""

import itertools
import string

import numpy as np
import torch

from .cli import InputError

LETTERS = string.ascii_uppercase  # option letters, A to Z; a tokenizer may have fewer as single tokens


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


def last_index(ids, token_id):
    """Position of the last `token_id` in `ids` (the published eval reads the last [MASK])."""
    for position in range(len(ids) - 1, -1, -1):
        if ids[position] == token_id:
            return position
    raise ValueError(f"token id {token_id} not found")


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



def labelled_loss(model, input_ids, attention_mask, labels, num_items=None, call=None):
    """Cross-entropy over the vocabulary at the labelled positions (label != -100), with the MLM head run there only.

    The sum over those positions divided by `num_items`, by default their number: then it is the loss that
    `model(input_ids, attention_mask=attention_mask, labels=labels).loss` computes from logits at every position.
    Answer Token Prediction labels one position per example and (dummy) MLM about 30% of them, so the head's
    vocabulary projection shrinks from every padded position to those. `call` is the wrapped model under
    DistributedDataParallel (see head_logits).
    """
    where = labels != -100
    logits = head_logits(model, input_ids, attention_mask, where, call)
    total = torch.nn.functional.cross_entropy(logits.float(), labels[where], reduction="sum")
    return total / (num_items if num_items is not None else where.sum())

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


def first_max(values):
    """Index of the largest value; a tie goes to the earliest, as Python's max over A, B, C, D in the published eval."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def predict_option(log_probs, n_options):
    """Predicted option index and probabilities renormalised over the first `n_options` options."""
    probs = torch.tensor(log_probs[:n_options], dtype=torch.float64).softmax(dim=0).tolist()
    return first_max(probs), probs


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
