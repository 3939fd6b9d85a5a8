"""It's All in The [MASK] (Clavié, Cooper, Warner, 2025) on one screen: a masked LM's plain MLM head answers
multiple-choice questions. The prompt ends with `Answer: [unused0] [MASK]`; the head's probabilities at that
[MASK] over the option letters pick the answer. Plain torch + transformers; mlm_classifier/ is the same method,
batched and checked. Run it as a script (`python minimal.py`) or cell by cell as a notebook."""
# %%
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# `[MASK]` is ModernBERT's mask token (a RoBERTa-style tokenizer's is `<mask>`). It strips the space before it, and
# [unused0] is the anchor the model was instruction-tuned to put the answer right after.
ANSWER_SLOT = "ANSWER:\nAnswer: [unused0] [MASK]"


def mmlu_prompt(question, choices):
    """The paper's MMLU prompt, zero-shot, character for character."""
    lines = "".join(f"- {letter}: {choice}\n" for letter, choice in zip(LETTERS, choices))
    return ("You will be given a question as well as a list of options. Read the question carefully and select the "
            "right answer from the list.\nQUESTION:\n" + question.strip() + "\nCHOICES:\n" + lines + "\n" + ANSWER_SLOT)


def zero_shot_prompt(text, labels):
    """Any text over any labels (classify.py's zero-shot template): the labels listed as options A, B, ... in order."""
    lines = "".join(f"- {letter}: {label}\n" for letter, label in zip(LETTERS, labels))
    return ("You will be given a text as well as a list of labels. Read the text carefully and select the right "
            "label from the list.\nTEXT:\n" + text.strip() + "\nLABELS:\n" + lines + "\n" + ANSWER_SLOT)


# %%
def token_id(tokenizer, spelling):  # the scoring reads one token per spelling
    ids = tokenizer(spelling, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{spelling!r} is {len(ids)} tokens; each option must be one"
    return ids[0]


@torch.no_grad()
def answer_probabilities(model, tokenizer, prompt, options):
    """P(option) at the prompt's last [MASK]: the softmax over the whole vocabulary, summed over each option's
    spellings `X` and ` X` (counted once where they are one token), then renormalised over the options."""
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    mask_position = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero()[-1, 0]
    probs = model(**inputs).logits[0, mask_position].float().softmax(dim=-1)
    scores = torch.stack([probs[sorted({token_id(tokenizer, s) for s in (option, " " + option)})].sum()
                          for option in options])
    return (scores / scores.sum()).tolist()


# %%
if __name__ == "__main__":
    name = "answerdotai/ModernBERT-Large-Instruct"
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForMaskedLM.from_pretrained(name).to("cuda" if torch.cuda.is_available() else "cpu").eval()

    choices = ["Saturn", "Mars", "Jupiter", "Venus"]
    probs = answer_probabilities(model, tokenizer, mmlu_prompt("Which planet is the largest?", choices), "ABCD")
    print({choice: round(p, 3) for choice, p in zip(choices, probs)})

    labels = ["World", "Sports", "Business", "Sci/Tech"]
    text = "The striker scored twice in the second half to win the cup final."
    probs = answer_probabilities(model, tokenizer, zero_shot_prompt(text, labels), LETTERS[: len(labels)])
    print({label: round(p, 3) for label, p in zip(labels, probs)})
