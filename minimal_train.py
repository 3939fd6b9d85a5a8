"""The training half of It's All in The [MASK] (Clavié, Cooper, Warner, 2025) on one screen: Answer Token Prediction
teaches the MLM head the model already has (no new head) to put each label's one token after `Answer: [unused0]`. Plain
torch + transformers; minimal.py is the inference half, train.py this recipe at scale. A script or a notebook."""
# %%
import random

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer


def filled_prompt(template, text, label_map, answer):
    """The template with `{text}`, `{options}` (`- A: positive` lines) and `{label}` = `answer` filled in."""
    options = "\n".join(f"- {verbalizer}: {label}" for label, verbalizer in label_map.items())
    return template.rstrip().format(text=text, options=options, label=answer)


# %%
def atp_batch(tokenizer, prompts, dummy_mlm=0.0, rng=random):
    """Prompts filled with their verbalizers -> input_ids, attention_mask, labels. ATP: the answer becomes [MASK],
    the only target (every other label -100). With probability `dummy_mlm` an example gets dummy MLM instead: 30% of
    its non-special tokens (at least one) become [MASK], each with the [MASK] id itself as its target."""
    anchor, mask = tokenizer.convert_tokens_to_ids("[unused0]"), tokenizer.mask_token_id
    special, rows = set(tokenizer.all_special_ids), []
    for ids in tokenizer(prompts)["input_ids"]:
        position = len(ids) - ids[::-1].index(anchor)  # right after the last [unused0]: ` A` after `[unused0] `
        assert ids[position] not in special and set(ids[position + 1:]) <= special, "an answer must be one token"
        targets = {position: ids[position]}
        if rng.random() < dummy_mlm:
            candidates = [k for k, i in enumerate(ids) if i not in special]
            targets = {k: mask for k in candidates if rng.random() < 0.3} or {rng.choice(candidates): mask}
        rows.append([[mask if k in targets else i for k, i in enumerate(ids)], [1] * len(ids),
                     [targets.get(k, -100) for k in range(len(ids))]])
    def pad(j, value):  # right-padding to the longest
        return torch.nn.utils.rnn.pad_sequence([torch.tensor(r[j]) for r in rows], True, value)
    return {"input_ids": pad(0, tokenizer.pad_token_id), "attention_mask": pad(1, 0), "labels": pad(2, -100)}


def train(model, tokenizer, template, label_map, texts, labels, epochs=2, batch_size=8, lr=2e-5, dummy_mlm=0.0, seed=0):
    """AdamW over shuffled batches of (text, raw label); the model's own MLM loss is the cross-entropy over the
    vocabulary where a label is not -100: at the answer only, under ATP. Returns the model in eval mode."""
    rng, optimizer = random.Random(seed), torch.optim.AdamW(model.parameters(), lr=lr)
    prompts = [filled_prompt(template, text, label_map, label_map[label]) for text, label in zip(texts, labels)]
    model.train()
    for _ in range(epochs):
        order = rng.sample(prompts, len(prompts))
        for start in range(0, len(order), batch_size):
            batch = atp_batch(tokenizer, order[start:start + batch_size], dummy_mlm, rng)
            model(**{key: value.to(model.device) for key, value in batch.items()}).loss.backward()
            optimizer.step(), optimizer.zero_grad()
    return model.eval()


# %%
@torch.no_grad()
def answer_probabilities(model, tokenizer, prompt, option_ids):
    """P(option) at the prompt's last [MASK]: the softmax over the whole vocabulary, summed over each option's token
    id(s) (here the label's trained answer token), then renormalised over the options; as minimal.py reads it."""
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    mask_position = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero()[-1, 0]
    probs = model(**inputs).logits[0, mask_position].float().softmax(dim=-1)
    scores = torch.stack([probs[ids].sum() for ids in option_ids])
    return (scores / scores.sum()).tolist()


# %%
if __name__ == "__main__":
    name = "answerdotai/ModernBERT-Large-Instruct"
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForMaskedLM.from_pretrained(name).to("cuda" if torch.cuda.is_available() else "cpu")
    template = ("You will be given a review as well as a list of labels. Read the review carefully and select the "
                "right label from the list.\nTEXT:\n{text}\nLABELS:\n{options}\n\nANSWER:\nAnswer: [unused0] {label}")
    label_map = {"positive": "A", "negative": "B"}  # raw label -> verbalizer, one token after [unused0]
    reviews = {"Loved it, start to finish.": "positive", "Dull and far too long.": "negative", "A gem.": "positive",
               "I walked out halfway.": "negative", "Superb cast, moving end.": "positive", "Wooden.": "negative"}
    model = train(model, tokenizer, template, label_map, list(reviews), list(reviews.values()), epochs=3, batch_size=3)
    answers = atp_batch(tokenizer, [filled_prompt(template, "", label_map, v) for v in label_map.values()])
    ids = answers["labels"].amax(dim=1).tolist()  # each label's answer token: its prompt's one ATP target
    for text in ["Smart, tender and often hilarious.", "A tedious mess with no story at all."]:
        probs = answer_probabilities(model, tokenizer, filled_prompt(template, text, label_map, "[MASK]"), ids)
        print({label: round(p, 3) for label, p in zip(label_map, probs)})
