"""The published one-prompt-at-a-time loop, kept as the reference the batched path must equal.

The published eval.py scores each prompt alone: one forward pass in float32, the logits over the whole
vocabulary at every position, a softmax at the last [MASK], and per letter the sum of its spellings `A` and
` A`. tests/test_eval.py checks that eval.py's batched scoring predicts what this does, and
bench/eval_speed.py times both.
"""

import torch


@torch.no_grad()
def published_predict(model, tokenizer, prompt, letters="ABCD"):
    """The published eval.py's scoring of one prompt: full logits, softmax, sum of `A` and ` A` per letter.

    Like the original it looks up each spelling as `tokenizer.encode(spelling)[1]` (the first token after [CLS]).
    """
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    logits = model(**inputs).logits
    mask_positions = (inputs.input_ids == tokenizer.mask_token_id).nonzero()
    probabilities = torch.softmax(logits[0, mask_positions[-1, 1]], dim=-1)
    totals = {}
    for letter in letters:
        for spelling in (letter, " " + letter):
            totals[letter] = totals.get(letter, 0) + probabilities[tokenizer.encode(spelling)[1]].item()
    return max(totals.items(), key=lambda item: item[1])[0]
