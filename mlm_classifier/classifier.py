"""MLMClassifier, the notebook API: a folder written by train.py, or any masked LM zero-shot over any labels.

    clf = MLMClassifier.from_pretrained("my-classifier")          # a folder written by train.py
    clf = MLMClassifier.from_pretrained("answerdotai/ModernBERT-Large-Instruct", labels=["spam", "not spam"])
    clf(["text one", "text two"])  # [{"label": "spam", "probabilities": {"spam": 0.93, "not spam": 0.07}}, ...]
    for result in clf.stream(line for line in open("texts.txt") if line.strip()):  # any iterable, any length
        ...

A `ClassifierSpec` says what a classifier answers and how, before any model loads; `plan_scoring` checks it
against the tokenizer; MLMClassifier fills, cuts and scores with the core's batched scoring.
"""

import json
import os
from dataclasses import dataclass, field

from .cli import InputError
from .data import check_labels_list, parse_labels, read_label_map, read_prompt, read_text  # noqa: F401
from .models import (batch_defaults, gather_scores, load_masked_lm, load_pretrained, load_tokenizer, looks_local,
                     max_positions, require_mask_token, resolve_attn_implementation, resolve_device, resolve_dtype)
from .prompts import (ZERO_SHOT_PROMPT, answer_token_ids, check_fixed_length, encode_prompts, mask_answers,
                      options_block, parse_prompt)
from .scoring import (LETTERS, combine_views, first_max, letter_token_ids, letters_that_fit, rotations, score_sequences,
                      slot_probabilities)
from .splits import checked_texts
from .stream import stream_results

SETTINGS_FILE = "classifier.json"  # what train.py records for classify.py beside prompt.txt and label_map.json


CONTENT_FREE_TEXT = "N/A"  # Zhao et al. (2021)'s first content-free input


@dataclass
class ClassifierSpec:
    """What a classifier answers and how, before any model is loaded.

    `verbalizers` is None for letters by position (zero-shot: the label at option position j answers with
    the j-th letter, scored as `A` + ` A`, as eval.py does); otherwise each label's own answer token, the
    one a trained folder was taught.
    """
    model: str
    labels: list
    prompt: str
    verbalizers: list | None
    max_length: int | None
    mode: str  # "trained folder" or "zero-shot"
    notes: list = field(default_factory=list)

    @property
    def zero_shot(self):
        return self.verbalizers is None


def read_settings(path):
    """A trained folder's classifier.json, checked: what it must hold is a positive integer max_length."""
    try:
        settings = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(settings, dict) or type(settings.get("max_length")) is not int or settings["max_length"] < 1:
        raise InputError(f"{path}: needs a positive integer max_length, as train.py writes it")
    return settings


def model_file(model_name, filename):
    """Path of `filename` in a local folder or a hub repository, or None when it is not there."""
    if os.path.isdir(model_name):
        path = os.path.join(model_name, filename)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    return cached_file(model_name, filename, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)


def load_spec(model_name, labels=None, prompt=None, max_length=None, prompt_source="--prompt_file"):
    """The ClassifierSpec for a trained folder (its label_map.json, prompt.txt and classifier.json) or for
    zero-shot `labels` (letters A, B, ... by position, the zero-shot template unless `prompt` is given)."""
    if not looks_local(model_name):  # a hub that cannot serve the model says so, not "no label_map.json"
        from transformers import AutoConfig

        load_pretrained(AutoConfig, model_name)
    label_map_path = model_file(model_name, "label_map.json")
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
        prompt = read_prompt(prompt_path)
        parse_prompt(prompt, prompt_path)
        notes = []
        if max_length is None:
            settings_path = model_file(model_name, SETTINGS_FILE)
            if settings_path:
                max_length = read_settings(settings_path)["max_length"]
            else:
                max_length = 512
                notes.append(f"{model_name} has no {SETTINGS_FILE} (trained before it was written): "
                             "max_length 512, train.py's default; give --max_length if it was trained otherwise")
        return ClassifierSpec(model_name, list(label_map), prompt, list(label_map.values()), max_length,
                              "trained folder", notes)
    if labels is None:
        raise InputError(f"--model {model_name}: no label_map.json there, so it is not a folder written by train.py; "
                         "give --labels to classify zero-shot")
    check_labels_list(labels)
    labels = list(labels)
    prompt = ZERO_SHOT_PROMPT if prompt is None else prompt.rstrip()
    parse_prompt(prompt, prompt_source if prompt != ZERO_SHOT_PROMPT else "the zero-shot prompt")
    if "{options}" not in prompt:
        raise InputError(f"{prompt_source}: zero-shot labels answer by letter, so the prompt must list them with "
                         "{options} (one `- A: label` line each)")
    return ClassifierSpec(model_name, labels, prompt, None, max_length, "zero-shot")


@dataclass
class View:
    """One ordering of the options: the label map as the prompt shows it, and which label each slot scores."""
    label_map: dict  # label -> verbalizer, in display order
    option_at_slot: list  # slot j scores label option_at_slot[j] (a label index)


def make_views(spec, permutations=1):
    """The option orders a text is scored under: `permutations` cyclic rotations of the label list.

    Zero-shot, the letters are reassigned by position, so each rotation shows every label under another
    letter. A trained folder keeps each label's own answer token, and a rotation only reorders the
    `{options}` lines; without `{options}` in its prompt, rotations would all be the same prompt.
    """
    n = len(spec.labels)
    if permutations > 1 and not spec.zero_shot and "{options}" not in spec.prompt:
        raise InputError("--permutations: this folder's prompt has no {options} block, so every rotation of the "
                         "labels gives the same prompt")
    views = []
    for order in rotations(n, permutations):
        if spec.zero_shot:
            label_map = {spec.labels[i]: LETTERS[j] for j, i in enumerate(order)}
            views.append(View(label_map, order))
        else:
            label_map = {spec.labels[i]: spec.verbalizers[i] for i in order}
            views.append(View(label_map, list(range(n))))
    return views


@dataclass
class ScoringPlan:
    """How a spec is scored with one tokenizer: the views, the template's halves, each slot's option ids."""
    views: list
    before: str
    after: str
    option_ids: list
    max_length: int | None


def plan_scoring(spec, tokenizer, permutations=1):
    """Check everything a spec needs of the tokenizer, before any weights load, and return its ScoringPlan.

    Every view's answers must be single, distinct tokens, the letters must fit (zero-shot), and every view's
    prompt must leave room for text within max_length (the folder's, else the model's positions).
    """
    require_mask_token(tokenizer, spec.model)
    views = make_views(spec, permutations)
    before, after = parse_prompt(spec.prompt)
    positions = max_positions(spec.model, tokenizer)
    if spec.max_length and positions and spec.max_length > positions:
        raise InputError(f"--max_length {spec.max_length} is more than the {positions} positions of "
                         f"--model {spec.model}")
    max_length = spec.max_length or positions
    n = len(spec.labels)
    if spec.zero_shot:
        fit = letters_that_fit(tokenizer)
        if n > fit:
            raise InputError(f"--labels: {n} labels, but this tokenizer writes only {fit} letters "
                             f"({LETTERS[0]}-{LETTERS[max(fit - 1, 0)]}) as single tokens, so at most {fit} labels fit")
    answer_ids = []  # per view, each label's answer token in that view's order
    for view in views:
        options = options_block(view.label_map)
        answer_ids.append(answer_token_ids(tokenizer, before, after, view.label_map, options))
        if max_length:
            check_fixed_length(tokenizer, before, after, view.label_map, options, max_length)
    # Zero-shot, slot j is the j-th letter in both spellings (as eval.py); a trained folder's slot i is
    # label i's answer token, the one it was taught (as train.py scores it; views[0] is the folder's order).
    option_ids = letter_token_ids(tokenizer, LETTERS[:n]) if spec.zero_shot else [[i] for i in answer_ids[0]]
    return ScoringPlan(views, before, after, option_ids, max_length)


def check_abstention(threshold, abstain_label, labels=(), prefix=""):
    """An InputError for a threshold that is not above 0 and at most 1, or an abstain label that is empty, comes
    without a threshold or reads as one of the labels. `prefix` is `--` for the command line's flags."""
    if threshold is not None and not (type(threshold) in (int, float) and 0 < threshold <= 1):
        raise InputError(f"{prefix}threshold {threshold} must be above 0 and at most 1 (a probability)")
    if abstain_label is None:
        return
    if threshold is None:
        raise InputError(f"{prefix}abstain_label {abstain_label!r} needs {prefix}threshold: without it none abstains")
    if not isinstance(abstain_label, str) or not abstain_label.strip():
        raise InputError(f"{prefix}abstain_label {abstain_label!r} must be a non-empty string")
    same = [label for label in labels if label.strip().casefold() == abstain_label.strip().casefold()]
    if same:
        raise InputError(f"{prefix}abstain_label {abstain_label!r} reads as the label {same[0]!r}; give a name that is "
                         "no label (or leave it out: an abstention is then null)")


class MLMClassifier:
    """A masked LM that labels texts with its MLM head, in one forward pass per text (and per rotation).

    Build it with `from_pretrained`; call it on a text or a list of texts, or `stream` any iterable of them.
    `permutations` (1 to the number of labels) scores each text under that many cyclic rotations of the label
    order and averages each label's probability; `calibrate` divides by the probabilities of `content_free_text`
    (Zhao et al., 2021). With `threshold`, a text whose top probability (after both) is below it gets the label
    `abstain_label` (None unless given) instead; its probabilities are still there.
    """

    def __init__(self, spec, tokenizer, model, permutations=1, calibrate=False, content_free_text=CONTENT_FREE_TEXT,
                 batch_tokens=None, pad_to_multiple_of=None, plan=None, threshold=None, abstain_label=None):
        check_abstention(threshold, abstain_label, spec.labels)
        self.spec, self.tokenizer, self.model = spec, tokenizer, model
        self.threshold, self.abstain_label = threshold, abstain_label
        self.permutations, self.calibrate, self.content_free_text = permutations, calibrate, content_free_text
        self.plan = plan or plan_scoring(spec, tokenizer, permutations)
        self.mask_token_id = tokenizer.mask_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.mask_token_id
        self.batch_tokens, self.pad_to_multiple_of = batch_defaults(next(model.parameters()).device, batch_tokens,
                                                                    pad_to_multiple_of)
        self.truncated = 0  # texts cut to fit max_length in the last call (in any view; stream: so far)
        self.cut_by_view = [0] * len(self.plan.views)  # of those, how many in each view (in the last call)
        self._content_free = None

    @classmethod
    def from_pretrained(cls, model_name, labels=None, prompt=None, max_length=None, permutations=1, calibrate=False,
                        content_free_text=CONTENT_FREE_TEXT, device="auto", dtype="auto", attn_implementation="auto",
                        batch_tokens=None, pad_to_multiple_of=None, threshold=None, abstain_label=None):
        """A trained folder (reads prompt.txt, label_map.json, classifier.json), or any masked LM zero-shot over
        `labels`. Everything is checked before the weights load: bad labels, prompts or thresholds cost no time.

        `device` auto is the GPU when there is one; `dtype` auto is bfloat16 there and float32 on the CPU.
        """
        spec = load_spec(model_name, labels, prompt, max_length)
        tokenizer = load_tokenizer(model_name)
        plan = plan_scoring(spec, tokenizer, permutations)
        check_abstention(threshold, abstain_label, spec.labels)
        device = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        dtype = resolve_dtype(dtype, device)
        model = load_masked_lm(model_name, dtype, resolve_attn_implementation(attn_implementation, device, dtype),
                               device)
        return cls(spec, tokenizer, model, permutations, calibrate, content_free_text, batch_tokens,
                   pad_to_multiple_of, plan, threshold, abstain_label)

    @property
    def labels(self):
        return self.spec.labels

    @property
    def max_length(self):
        return self.plan.max_length

    def encode(self, texts):
        """Token ids of every text under every view (view-major), [MASK] at the answer; texts cut to fit."""
        texts = checked_texts(texts)
        sequences, self.cut_by_view = [], []
        for view in self.plan.views:
            options = options_block(view.label_map)
            verbalizer = next(iter(view.label_map.values()))  # any one: the answer is masked
            ids, positions, n_cut = encode_prompts(self.tokenizer, self.plan.before, self.plan.after, texts,
                                                   [verbalizer] * len(texts), options, self.max_length)
            sequences += mask_answers(ids, positions, self.mask_token_id)
            self.cut_by_view.append(n_cut)
        self.truncated = max(self.cut_by_view)
        return sequences

    def view_probabilities(self, texts, shard=(0, 1), progress=False):
        """For each text, its label probabilities under each view: a list (texts) of lists (views) of lists."""
        sequences = self.encode(texts)
        scores = score_sequences(self.model, sequences, self.mask_token_id, self.pad_token_id, self.plan.option_ids,
                                 self.batch_tokens, self.pad_to_multiple_of, shard=shard, progress=progress)
        if shard[1] > 1:  # each process scored a share: merge them (a process scoring texts of its own does not)
            scores = gather_scores(scores)
        n = len(texts)
        return [[slot_probabilities(scores[v * n + t], view.option_at_slot) for v, view in enumerate(self.plan.views)]
                for t in range(n)]

    def content_free_probabilities(self):
        """Each view's label probabilities for the content-free text (scored once, then kept)."""
        if self._content_free is None:
            self._content_free = self.view_probabilities([self.content_free_text])[0]
        return self._content_free

    def probabilities(self, texts, shard=(0, 1), progress=False):
        """Each text's probability for each label: averaged over the rotations, calibrated first if asked."""
        content_free = self.content_free_probabilities() if self.calibrate else None
        return [combine_views(views, content_free) for views in self.view_probabilities(texts, shard, progress)]

    def label_of(self, probs):
        """The likeliest label, or `abstain_label` (None unless given) when its probability is below `threshold`."""
        best = first_max(probs)
        return self.abstain_label if self.threshold is not None and probs[best] < self.threshold else self.labels[best]

    def result(self, probs):
        return {"label": self.label_of(probs), "probabilities": dict(zip(self.labels, probs))}

    def __call__(self, texts, progress=False):
        """[{"label", "probabilities"}] for a list of texts; one dict for a single text."""
        single = isinstance(texts, str)
        results = [self.result(probs) for probs in self.probabilities(checked_texts(texts), progress=progress)]
        return results[0] if single else results

    def stream(self, texts, chunk_size=10000, progress=False):
        """Yield the result of each text of any iterable (a list, a generator over a file), in order, as __call__
        gives it: `chunk_size` texts are read, scored by length within the chunk, and yielded before the next are
        read, so memory holds one chunk whatever the iterable's length. `truncated` counts the texts cut so far."""
        return stream_results(self, texts, chunk_size, progress)
