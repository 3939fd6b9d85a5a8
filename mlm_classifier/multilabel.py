"""Multi-label: per label, a yes/no question (`- A: yes`, `- B: no`) through the MLM head; a label applies when
P(yes), renormalised over yes and no, reaches a threshold. Per label the template becomes an ordinary one
(`question_template`), its `{label}` the label asked about and its `{answer}` the answer slot."""

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


def question_template(prompt, label):
    """The single-answer template that asks about `label`, its answer slot `{answer}` spelled `{label}`."""
    if "{" in label or "}" in label:
        raise InputError(f"label {label!r}: braces in a label would read as a placeholder of the prompt")
    return prompt.replace("{label}", label).replace("{answer}", "{label}")


def check_multi_label_prompt(prompt, source="the multi-label prompt"):
    """The prompt, checked: a text placeholder, `{label}`, `[unused0] {answer}` at the end, then the core's rules."""
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
