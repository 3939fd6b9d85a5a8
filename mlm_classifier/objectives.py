"""The paper's training objectives, one drawn per example at batch time: Answer Token Prediction (ATP), and
optionally standard MLM or dummy MLM over the same prompt.

ATP replaces the answer token after [unused0] by [MASK] and makes it the only target, so the model learns to answer
with the MLM head it already has. The paper mixes in MLM (30% of the tokens masked) or dummy MLM (the same masks,
every target the [MASK] id itself) for a share of the examples; `ObjectiveCollator` draws which, afresh each epoch.
"""

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
    """Standard MLM, or dummy MLM with `dummy=True`, over one token id list; returns (input_ids, labels).

    Each non-special token is chosen with probability `mlm_probability` (the paper's 30%) and every chosen
    one becomes [MASK]: not the 80/10/10 split of transformers' MLM collator. Standard MLM labels the chosen
    positions with their original ids; dummy MLM labels them with the [MASK] id itself (the paper's dummy
    objective, which the model learns almost at once). At least one token is chosen, so that no example
    is left without a target.
    """
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


def make_example(ids, answer_position, objective, mask_token_id, special_token_ids, mlm_probability=0.3,
                 generator=None):
    """(input_ids, labels) of one training example under `objective` ("atp", "mlm" or "dummy")."""
    if objective == "atp":
        return atp_example(ids, answer_position, mask_token_id)
    return mlm_example(ids, special_token_ids, mask_token_id, mlm_probability, objective == "dummy", generator)


@dataclass
class ObjectiveCollator:
    """Batches encoded prompts, drawing each example's objective and its MLM masks afresh at every use.

    Drawing at batch time (as transformers' MLM collator does) gives MLM examples new masks each epoch.
    Batches are padded to their longest example, rounded up to `pad_to_multiple_of`; padding is labelled -100.
    Features are {"input_ids", "answer_position"}, from `encode_prompts`.
    """
    mask_token_id: int
    pad_token_id: int
    special_token_ids: frozenset
    mlm_proportion: float = 0.0
    dummy_mlm_proportion: float = 0.0
    mlm_probability: float = 0.3
    pad_to_multiple_of: int = 8

    def __call__(self, features):
        examples = [make_example(f["input_ids"], f["answer_position"],
                                 draw_objective(self.mlm_proportion, self.dummy_mlm_proportion),
                                 self.mask_token_id, self.special_token_ids, self.mlm_probability)
                    for f in features]
        input_ids, attention_mask = pad_batch([e[0] for e in examples], self.pad_token_id, self.pad_to_multiple_of)
        labels, _ = pad_batch([e[1] for e in examples], -100, self.pad_to_multiple_of)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def labelled_loss(model, input_ids, attention_mask, labels, num_items=None, call=None):
    """Cross-entropy over the vocabulary at the labelled positions (label != -100), the MLM head run there only.

    The sum over those positions divided by `num_items`, by default their number: then it is the loss that
    `model(input_ids, attention_mask=attention_mask, labels=labels).loss` computes from logits at every position.
    ATP labels one position per example and (dummy) MLM about 30% of them, so the head's vocabulary projection
    shrinks from every padded position to those. `call` is the model wrapped by DistributedDataParallel.
    """
    where = labels != -100
    logits = head_logits(model, input_ids, attention_mask, where, call)
    total = torch.nn.functional.cross_entropy(logits.float(), labels[where], reduction="sum")
    return total / (num_items if num_items is not None else where.sum())
