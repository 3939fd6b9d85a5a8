"""Multi-label: every label judged on its own, by a yes/no question through the MLM head.

A text may belong to any number of labels. For each (text, label) pair the prompt asks whether the label applies,
with the options `- A: yes` and `- B: no`, and the MLM head answers at the [MASK] after [unused0], in the paper's
style. P(yes) is renormalised over yes and no, and a text's labels are those with P(yes) >= a threshold (0.5 by
default). The cost: one forward pass per (text, label) pair, as the NLI zero-shot pipeline's `multi_label=True`
has, where a single-label question costs one pass per text.

A multi-label template has `{text}`, the label asked about as `{label}` (once or more), and ends with
`[unused0] {answer}`, where the answer letter goes. Per label it becomes an ordinary template of the core
(`question_template`), so filling, cutting and scoring are the single-label path's own.
"""

from .cli import InputError
from .data import NO_ID
from .prompts import ANCHOR, TEXT_PLACEHOLDERS, option_lines, parse_prompt

MULTI_LABEL_PROMPT = (
    "You will be given a text as well as a label. "
    "Read the text carefully and decide whether the label applies to it.\n"
    "TEXT:\n{text}\nLABEL:\n{label}\nOPTIONS:\n{options}\n\nANSWER:\nAnswer: [unused0] {answer}"
)
ANSWERS = {"yes": "A", "no": "B"}  # answer -> its option letter; zero-shot, each letter scores as `A` + ` A`
OPTIONS = option_lines((letter, answer) for answer, letter in ANSWERS.items())  # "- A: yes\n- B: no"
THRESHOLD = 0.5  # a label applies when P(yes) >= this


def question_templates(prompt, names, source="the multi-label prompt"):
    """The parsed question template of each name, in order: what every label of a multi-label classifier asks."""
    return [parse_prompt(question_template(prompt, name), source) for name in names]


def question_template(prompt, label):
    """The single-answer template that asks about `label`: its name where `{label}` stands, and the answer slot
    `{answer}` spelled `{label}`, as every template of the core spells it."""
    if "{" in label or "}" in label:
        raise InputError(f"label {label!r}: braces in a label would read as a placeholder of the prompt")
    return prompt.replace("{label}", label).replace("{answer}", "{label}")


def check_multi_label_prompt(prompt, source="the multi-label prompt"):
    """The prompt, checked: one text placeholder, the label asked about as `{label}`, and `[unused0] {answer}` at
    the very end; then the core's rules for the template it becomes."""
    prompt = prompt.rstrip()
    if prompt.count("{answer}") != 1 or not prompt.endswith("{answer}"):
        raise InputError(f"{source}: a multi-label prompt ends with `{ANCHOR} {{answer}}`, where the yes/no answer "
                         f"goes, and names the label asked about as {{label}}; it has {prompt.count('{answer}')} "
                         "{answer}")
    if "{label}" not in prompt:
        raise InputError(f"{source}: a multi-label prompt names the label it asks about as {{label}}; it has none")
    if not any(p in prompt for p in TEXT_PLACEHOLDERS):
        raise InputError(f"{source} has no {{text}} placeholder, where each example's text goes")
    parse_prompt(question_template(prompt, "label"), source)
    return prompt


def label_lists(values, separator, source, column, first_row=0):
    """Each row's labels as a list of strings: a list cell as it is (JSON, parquet), a string split at `separator`
    (parts stripped, empty ones dropped, so an empty cell is "none of these"). A missing cell is an InputError."""
    lists = []
    for row, value in enumerate(values, start=first_row):
        if value is None or (isinstance(value, float) and value != value):
            raise InputError(f"{source}: row {row} has no label in column {column!r} (an empty list, [] or an empty "
                             "cell, says that none applies)")
        if isinstance(value, str):
            lists.append([part.strip() for part in value.split(separator) if part.strip()])
        elif hasattr(value, "__iter__"):
            lists.append([str(part) for part in value])
        else:
            lists.append([str(value)])
    return lists


def pair_answers(label_sets, class_names):
    """For each text, for each label: the answer to "does the label apply?", as its letter."""
    return [[ANSWERS["yes" if name in labels else "no"] for name in class_names] for labels in label_sets]


def yes_probabilities(pair_scores, n_labels):
    """[[P(yes) per label] per text] from the pairs' [log P(yes), log P(no)], text-major, P(yes) renormalised over
    yes and no."""
    from .scoring import predict_option

    values = [predict_option(s, 2)[1][0] for s in pair_scores]
    return [values[k:k + n_labels] for k in range(0, len(values), n_labels)]


def chosen_labels(yes_probs, class_names, threshold=THRESHOLD):
    """The labels whose P(yes) reaches the threshold, in label order."""
    return [name for name, p in zip(class_names, yes_probs) if p >= threshold]


def multi_label_record(row, text, class_names, yes_probs, threshold=THRESHOLD, row_id=NO_ID):
    """One predictions record of a multi-label classifier: row, (id), text, the labels that apply (a list, maybe
    empty) and every label's P(yes); a row without a text (yes_probs None) has labels and probabilities null."""
    record = {"row": row} if row_id is NO_ID else {"row": row, "id": row_id}
    if yes_probs is None:
        return {**record, "text": text, "labels": None, "probabilities": None}
    return {**record, "text": text, "labels": chosen_labels(yes_probs, class_names, threshold),
            "probabilities": {name: round(p, 6) for name, p in zip(class_names, yes_probs)}}


def multi_label_metrics(pair_scores, gold_sets, class_names, threshold=THRESHOLD):
    """Micro- and macro-F1, exact match, per-label precision/recall/F1 and the ATP loss (mean -log P of the right
    answer over the pairs) from the pairs' log P(yes), log P(no) and each text's gold label set."""
    import math

    from sklearn.metrics import f1_score, precision_recall_fscore_support

    predicted = [[int(p >= threshold) for p in row] for row in yes_probabilities(pair_scores, len(class_names))]
    gold = [[int(name in labels) for name in class_names] for labels in gold_sets]
    right = [s[0] if g else s[1] for s, g in zip(pair_scores, (g for row in gold for g in row))]
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, average=None, zero_division=0)
    return {
        "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "exact_match": sum(p == g for p, g in zip(predicted, gold)) / len(gold),
        "loss": -sum(right) / len(right) if right and not any(map(math.isinf, right)) else float("inf"),
        "n": len(gold),
        "threshold": threshold,
        "per_label": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
                      for name, p, r, f, n in zip(class_names, precision, recall, f1, support)},
    }


def plan_questions(tokenizer, prompt, names, max_length, source="the multi-label prompt"):
    """Each label's question template as (before, after), checked to leave room for text within `max_length`, and
    the in-context ids of the answers yes and no (one token each, as the single-label path requires)."""
    from .prompts import answer_token_ids, check_fixed_length

    halves = question_templates(prompt, names, source)
    answer_ids = answer_token_ids(tokenizer, *halves[0], ANSWERS, OPTIONS)
    for before, after in halves:
        check_fixed_length(tokenizer, before, after, ANSWERS, OPTIONS, max_length)
    return halves, answer_ids


def encode_pairs(tokenizer, halves, texts, answers, max_length, rows=None, source=""):
    """Token ids of every (text, label) pair's prompt, text-major, each one's answer position, and how many texts
    were cut to fit. `answers[t][l]` is the answer letter filled in for text t and label l (masked when scored)."""
    from .prompts import encode_prompts

    per_label = [encode_prompts(tokenizer, before, after, texts, [a[l] for a in answers], OPTIONS, max_length, rows,
                                source) for l, (before, after) in enumerate(halves)]
    pairs = [(t, l) for t in range(len(texts)) for l in range(len(halves))]
    return ([per_label[l][0][t] for t, l in pairs], [per_label[l][1][t] for t, l in pairs],
            max((n for _, _, n in per_label), default=0))
