"""What a classifier answers and how, before any model loads: a folder written by train.py, or labels zero-shot."""

import json
import os
from dataclasses import dataclass

from .data import check_labels_list, read_label_map, read_prompt, read_text, say
from .errors import InputError
from .models import load_pretrained, looks_local
from .multilabel import MULTI_LABEL_PROMPT, THRESHOLD, check_multi_label_prompt
from .prompts import ZERO_SHOT_PROMPT, parse_prompt

SETTINGS_FILE = "classifier.json"  # what train.py records for classify.py beside prompt.txt and label_map.json


@dataclass
class ClassifierSpec:
    """What a classifier answers and how. `verbalizers` is None for letters by position (zero-shot, each scored as
    `A` + ` A`, as eval.py does), else each label's trained answer token; multi-label, each label is a yes/no
    question (multilabel.py) about its verbalizer (zero-shot, its name), applying when P(yes) reaches `threshold`."""
    model: str
    labels: list
    prompt: str
    verbalizers: list | None
    max_length: int | None
    mode: str  # "trained folder", "zero-shot" or "training"
    multi_label: bool = False
    threshold: float | None = None
    prompt_source: str = "the prompt"  # where the prompt came from, as errors name it

    @property
    def zero_shot(self):
        return self.mode == "zero-shot"

    @property
    def question_names(self):
        return self.verbalizers or self.labels


def model_file(model_name, filename):
    """Path of `filename` in a local folder or a hub repository, or None when it is not there."""
    if os.path.isdir(model_name):
        path = os.path.join(model_name, filename)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    return cached_file(model_name, filename, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)


def load_spec(model_name, labels=None, prompt=None, max_length=None, prompt_source="--prompt_file", multi_label=None):
    """The ClassifierSpec of a folder written by train.py (its classifier.json checked as train.py writes it), or of
    zero-shot `labels` (letters by position)."""
    if not looks_local(model_name):  # a hub that cannot serve the model says so, not "no label_map.json"
        from transformers import AutoConfig

        load_pretrained(AutoConfig, model_name)
    label_map_path, settings = model_file(model_name, "label_map.json"), {}
    if label_map_path and labels is not None:
        raise InputError(f"--labels: {model_name} is a trained folder with its own label_map.json; it answers with "
                         "the labels it was trained on (leave out --labels, or point --model at a base model)")
    if label_map_path and prompt is not None:
        raise InputError(f"{prompt_source}: {model_name} is a trained folder with its own prompt.txt, the prompt it "
                         "was trained on (leave out the prompt, or point --model at a base model)")
    if label_map_path:
        label_map = read_label_map(label_map_path)
        prompt_path = model_file(model_name, "prompt.txt")
        if prompt_path is None:
            raise InputError(f"--model {model_name}: has label_map.json but no prompt.txt; train.py writes both")
        prompt, path = read_prompt(prompt_path), model_file(model_name, SETTINGS_FILE)
        if path:
            try:
                settings = json.loads(read_text(path))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
            if (not isinstance(settings, dict) or type(settings.get("max_length")) is not int
                    or settings["max_length"] < 1):
                raise InputError(f"{path}: needs a positive integer max_length, as train.py writes it")
            threshold = settings.get("threshold", THRESHOLD)
            if type(threshold) not in (int, float) or not 0 < threshold <= 1:
                raise InputError(f"{path}: threshold {threshold!r} must be a number above 0 and at most 1 "
                                 "(a probability)")
        trained = settings.get("multi_label") is True
        if multi_label is not None and bool(multi_label) != trained:
            how = "multi-label" if trained else "single-label (one label per text)"
            raise InputError(f"--multi_label: {model_name} was trained {how}, and answers that way; leave out "
                             "--multi_label to use it as it was trained")
        spec = ClassifierSpec(model_name, list(label_map), prompt, list(label_map.values()),
                              max_length or settings.get("max_length", 512), "trained folder", trained,
                              settings.get("threshold", THRESHOLD) if trained else None, prompt_path)
    elif labels is None:
        raise InputError(f"--model {model_name}: no label_map.json there, so it is not a folder written by train.py; "
                         "give --labels to classify zero-shot")
    else:
        check_labels_list(labels, least=1 if multi_label else 2)
        default = MULTI_LABEL_PROMPT if multi_label else ZERO_SHOT_PROMPT
        prompt = default if prompt is None else prompt.rstrip()
        source = (prompt_source if prompt != default else "the multi-label prompt" if multi_label
                  else "the zero-shot prompt")
        spec = ClassifierSpec(model_name, list(labels), prompt, None, max_length, "zero-shot", bool(multi_label),
                              THRESHOLD if multi_label else None, source)
    if spec.multi_label:
        check_multi_label_prompt(spec.prompt, spec.prompt_source)
    else:
        parse_prompt(spec.prompt, spec.prompt_source)
    if spec.zero_shot and "{options}" not in spec.prompt:
        options = "`- A: yes` and `- B: no`" if spec.multi_label else "them with {options} (one `- A: label` line each)"
        raise InputError(f"{prompt_source}: zero-shot answers are letters, so the prompt must list {options} "
                         "with {options}")
    if label_map_path and max_length is None and settings.get("max_length") is None:
        say(f"note: {model_name} has no {SETTINGS_FILE} (trained before it was written): max_length 512, train.py's "
            "default; give --max_length if it was trained otherwise")
    return spec
