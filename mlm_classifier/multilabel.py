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

from .anchor import ANCHOR
from .errors import InputError
from .prompts import TEXT_PLACEHOLDERS, option_lines, parse_prompt

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

