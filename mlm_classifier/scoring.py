"""The method: a prompt ends with `Answer: [unused0] [MASK]`, and the MLM head's softmax over the whole vocabulary
at that [MASK], summed over each option's token ids, scores the options (Clavié, Cooper, Warner, 2025).
`head_logits` reads them: the encoder at every position, the head at [MASK] only."""

import itertools
import string

import numpy as np
import torch

from .errors import InputError

LETTERS = string.ascii_uppercase  # option letters, A to Z; a tokenizer may have fewer as single tokens


def letter_token_ids(tokenizer, letters):
    """For each letter, the distinct ids of its spellings `A` and ` A`, each one token: the published eval.py scores
    a letter by the summed probability of both, and so do we."""
    ids = {s: tokenizer(s, add_special_tokens=False)["input_ids"] for letter in letters for s in (letter, " " + letter)}
    for spelling, pieces in ids.items():
        if len(pieces) != 1:
            raise InputError(f"option spelling {spelling!r} is {len(pieces)} tokens "
                             f"{tokenizer.convert_ids_to_tokens(pieces)} in this tokenizer; scoring reads one token "
                             "per option")
    return [sorted({ids[letter][0], ids[" " + letter][0]}) for letter in letters]


def letters_that_fit(tokenizer):
    """How many letters, from A on, the tokenizer writes as single tokens in both spellings (at most 26)."""
    for n, letter in enumerate(LETTERS):
        if any(len(tokenizer(s, add_special_tokens=False)["input_ids"]) != 1 for s in (letter, " " + letter)):
            return n
    return len(LETTERS)


def last_index(ids, token_id):
    """Position of the last `token_id` in `ids` (the published eval reads the last [MASK])."""
    return len(ids) - 1 - ids[::-1].index(token_id)


def padded_width(length, pad_to_multiple_of):
    return -(-length // pad_to_multiple_of) * pad_to_multiple_of


def padding_bound(model):
    """The most padding a row may carry, or None. In ModernBERT's local layers a position sees `local_attention // 2`
    positions either way, so a padded position further than that from every real token sees no key at all: some
    attention kernels then return NaN there, and the next layer spreads it into the real positions (0 x NaN)."""
    window = getattr(getattr(model, "config", None), "local_attention", None)
    return window // 2 if window else None


def length_sorted_batches(lengths, batch_tokens, pad_to_multiple_of, max_padding=None):
    """Indices in batches of similar length whose padded size (rows x width) fits `batch_tokens`, and whose rows are
    padded by at most `max_padding` (padding_bound); longest first, so that a batch too big for memory fails at once.
    A sequence longer than the budget is a batch alone."""
    batches, current, width = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if current and ((len(current) + 1) * width > batch_tokens
                        or max_padding is not None and width - lengths[i] > max_padding):
            batches.append(current)
            current = []
        if not current:
            width = padded_width(lengths[i], pad_to_multiple_of)
        current.append(i)
    return batches + [current] if current else batches


def pad_batch(sequences, pad_token_id, pad_to_multiple_of):
    """`input_ids` and `attention_mask`, right-padded, built at once (a tensor per row cost 0.5 s over MMLU)."""
    lengths = torch.tensor([len(ids) for ids in sequences])
    width = padded_width(int(lengths.max()), pad_to_multiple_of)
    attention_mask = (torch.arange(width) < lengths[:, None]).long()
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    flat = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    input_ids[attention_mask.bool()] = torch.from_numpy(flat)
    return input_ids, attention_mask


def _deberta_head(model, hidden):
    # DeBERTa (v1 and v2) has two heads, and its forward picks one by `model.legacy`
    if model.legacy:
        return model.cls(hidden)
    return model.lm_predictions(hidden, model.deberta.embeddings.word_embeddings)


# Each masked LM's MLM head: what its forward does with the encoder's last hidden states (read off each class in
# transformers 5). Every step works one position at a time, so the head on a few gathered rows gives exactly those
# rows of the full logits. An architecture not here gets the logits everywhere, and the rows read are picked.
MLM_HEADS = {
    "ModernBertForMaskedLM": lambda m, h: m.decoder(m.head(h)),
    "BertForMaskedLM": lambda m, h: m.cls(h),
    "RobertaForMaskedLM": lambda m, h: m.lm_head(h),
    "XLMRobertaForMaskedLM": lambda m, h: m.lm_head(h),
    "CamembertForMaskedLM": lambda m, h: m.lm_head(h),
    "DistilBertForMaskedLM": lambda m, h: m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h)))),
    "ElectraForMaskedLM": lambda m, h: m.generator_lm_head(m.generator_predictions(h)),
    "DebertaForMaskedLM": _deberta_head,
    "DebertaV2ForMaskedLM": _deberta_head,
}


def head_logits(model, input_ids, attention_mask, where, call=None):
    """MLM logits at the positions `where` selects (a boolean mask, or a pair (rows, positions)), (selected, vocab).
    `call` is the model wrapped by DistributedDataParallel: the forward must run through it for the gradients to be
    synchronised, so there the rows are picked by a hook on the encoder's output."""
    head = MLM_HEADS.get(type(model).__name__)
    if head is None:
        return (call or model)(input_ids=input_ids, attention_mask=attention_mask).logits[where]
    if call is None:
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        return head(model, hidden[where])  # the encoder ran at every position; the head runs at the rows read only

    def pick_rows(module, args, output):
        output.last_hidden_state = output.last_hidden_state[where]
        return output

    handle = model.base_model.register_forward_hook(pick_rows)
    try:
        return call(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        handle.remove()


@torch.no_grad()
def score_sequences(model, sequences, mask_token_id, pad_token_id, option_ids, batch_tokens,
                    pad_to_multiple_of=64, shard=(0, 1), progress=False):
    """{index: log P of each option} at each sequence's last [MASK] (the log of its ids' summed probabilities over
    the whole vocabulary, as published). Batches are padded with `pad_token_id` (None: [MASK], masked out anyway).
    With `shard=(rank, world)` under torchrun each process scores every world-th batch, and every process gets all
    the scores."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    pad_token_id = mask_token_id if pad_token_id is None else pad_token_id
    bound = padding_bound(model)
    pad_to_multiple_of = min(pad_to_multiple_of, bound + 1) if bound else pad_to_multiple_of  # one row within it too
    mine = length_sorted_batches([len(s) for s in sequences], batch_tokens, pad_to_multiple_of,
                                 bound)[shard[0]::shard[1]]
    option_ids = [torch.tensor(ids, device=device) for ids in option_ids]
    # On a GPU nothing below waits for the GPU until the end: inputs go from pinned memory without blocking and the
    # scores stay on the device, so padding the next batch overlaps the current batch's forward pass.
    pinned = device.type == "cuda"
    parts = []
    for batch in tqdm(mine, desc="scoring", unit="batch", disable=not progress):
        input_ids, attention_mask = pad_batch([sequences[i] for i in batch], pad_token_id, pad_to_multiple_of)
        positions = torch.tensor([last_index(sequences[i], mask_token_id) for i in batch])
        input_ids, attention_mask, positions = (t.pin_memory().to(device, non_blocking=True) if pinned else t.to(device)
                                                for t in (input_ids, attention_mask, positions))
        rows = torch.arange(len(batch), device=device)
        log_probs = head_logits(model, input_ids, attention_mask, (rows, positions)).float().log_softmax(dim=-1)
        parts.append(torch.stack([log_probs[:, ids].logsumexp(dim=-1) for ids in option_ids], dim=1))
    values = torch.cat(parts).cpu().tolist() if parts else []
    scores = dict(zip(itertools.chain.from_iterable(mine), values))
    if shard[1] > 1:  # every process's share, merged
        gathered = [None] * shard[1]
        torch.distributed.all_gather_object(gathered, scores)
        scores = {i: s for part in gathered for i, s in part.items()}
    return scores


def first_max(values):
    """Index of the largest value; a tie goes to the earliest, as Python's max over A, B, C, D in the published eval."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def slot_probabilities(slot_log_probs, option_at_slot=None):
    """The options' probabilities from one prompt's log P over its slots, slot j standing for `option_at_slot[j]`."""
    option_at_slot = range(len(slot_log_probs)) if option_at_slot is None else option_at_slot
    probs = torch.tensor(slot_log_probs[: len(option_at_slot)], dtype=torch.float64).softmax(dim=0).tolist()
    out = [0.0] * len(option_at_slot)
    for slot, option in enumerate(option_at_slot):
        out[option] = probs[slot]
    return out


def rotations(n, k):
    """The first `k` cyclic rotations of n options: in rotation r, position j shows option (j + r) % n."""
    if not 1 <= k <= n:
        raise InputError(f"--permutations {k} must be between 1 and the number of options ({n})")
    return [[(j + r) % n for j in range(n)] for r in range(k)]


def calibrate(probs, content_free_probs):
    """Contextual calibration (Zhao et al., 2021): divide by the content-free probabilities, renormalise."""
    weighted = [p / q for p, q in zip(probs, content_free_probs)]
    return [w / sum(weighted) for w in weighted]


def combine_views(view_probs, content_free=None):
    """The mean over views (rotations) of each option's probability, each view calibrated first if given."""
    if content_free is not None:
        view_probs = [calibrate(p, q) for p, q in zip(view_probs, content_free)]
    return [sum(column) / len(view_probs) for column in zip(*view_probs)]


def decide(labels, probs, threshold=None, abstain_label=None, multi_label=False):
    """A text's result: {"label": the likeliest (ties to the earlier), or `abstain_label` when the top probability is
    below `threshold`, "probabilities"}; multi-label, {"labels": those whose P(yes) reaches `threshold`, ...}."""
    probabilities = dict(zip(labels, probs))
    if multi_label:
        return {"labels": [label for label, p in probabilities.items() if p >= threshold],
                "probabilities": probabilities}
    label = abstain_label if abstains(probs, threshold) else labels[first_max(probs)]
    return {"label": label, "probabilities": probabilities}


def abstains(probs, threshold):
    """Whether a single-label text abstains: its top probability is below `threshold` (None: never)."""
    return threshold is not None and max(probs) < threshold
