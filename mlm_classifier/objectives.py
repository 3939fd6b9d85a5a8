"""The paper's training objectives: Answer Token Prediction (the answer token after [unused0] becomes [MASK], the
only target), and for a share of the examples standard MLM or dummy MLM (every target the [MASK] id), drawn per
example at batch time."""

from dataclasses import dataclass

import torch

from .scoring import head_logits, pad_batch


def atp_example(ids, answer_position, mask_token_id):
    """Answer Token Prediction: the answer token becomes [MASK] and is the only target; every other label is -100."""
    input_ids, labels = list(ids), [-100] * len(ids)
    labels[answer_position] = ids[answer_position]
    input_ids[answer_position] = mask_token_id
    return input_ids, labels


def mlm_example(ids, special_token_ids, mask_token_id, mlm_probability=0.3, dummy=False, generator=None):
    """Standard MLM, or dummy MLM (targets the [MASK] id), over one token id list: every chosen token becomes [MASK]
    (not transformers' 80/10/10), and at least one is chosen so that every example has a target."""
    ids_t = torch.tensor(ids)
    candidates = ~torch.isin(ids_t, torch.tensor(sorted(special_token_ids), dtype=ids_t.dtype))
    chosen = (torch.rand(len(ids), generator=generator) < mlm_probability) & candidates
    if not chosen.any() and candidates.any():
        allowed = candidates.nonzero().flatten()
        chosen[allowed[torch.randint(len(allowed), (), generator=generator)]] = True
    labels = torch.full_like(ids_t, -100)
    labels[chosen] = mask_token_id if dummy else ids_t[chosen]
    return ids_t.masked_fill(chosen, mask_token_id).tolist(), labels.tolist()


def draw_objective(mlm_proportion, dummy_mlm_proportion, generator=None):
    """"mlm", "dummy" or "atp", drawn with probabilities mlm_proportion, dummy_mlm_proportion and the rest."""
    u = torch.rand((), generator=generator).item()
    return "mlm" if u < mlm_proportion else "dummy" if u < mlm_proportion + dummy_mlm_proportion else "atp"


@dataclass
class ObjectiveCollator:
    """Batches {"input_ids", "answer_position"} features, drawing each example's objective and masks afresh at every
    use (new masks each epoch), padded to the longest rounded up to `pad_to_multiple_of`; padding is labelled -100."""
    mask_token_id: int
    pad_token_id: int
    special_token_ids: frozenset
    mlm_proportion: float = 0.0
    dummy_mlm_proportion: float = 0.0
    mlm_probability: float = 0.3
    pad_to_multiple_of: int = 8

    def __call__(self, features):
        examples = []
        for f in features:
            objective = draw_objective(self.mlm_proportion, self.dummy_mlm_proportion)
            examples.append(atp_example(f["input_ids"], f["answer_position"], self.mask_token_id) if objective == "atp"
                            else mlm_example(f["input_ids"], self.special_token_ids, self.mask_token_id,
                                             self.mlm_probability, objective == "dummy"))
        input_ids, attention_mask = pad_batch([e[0] for e in examples], self.pad_token_id, self.pad_to_multiple_of)
        labels, _ = pad_batch([e[1] for e in examples], -100, self.pad_to_multiple_of)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def labelled_loss(model, input_ids, attention_mask, labels, num_items=None, call=None):
    """Cross-entropy at the labelled positions (label != -100), the MLM head run there only, summed and divided by
    `num_items` (by default their number: then it equals `model(..., labels=labels).loss`, without projecting every
    padded position onto the vocabulary). `call` is the model wrapped by DistributedDataParallel."""
    where = labels != -100
    logits = head_logits(model, input_ids, attention_mask, where, call)
    total = torch.nn.functional.cross_entropy(logits.float(), labels[where], reduction="sum")
    return total / (num_items if num_items is not None else where.sum())
