"""MLMClassifier, the notebook API: a folder written by train.py, or any masked LM zero-shot over any labels.

    clf = MLMClassifier.from_pretrained("my-classifier")          # a folder written by train.py
    clf = MLMClassifier.from_pretrained("answerdotai/ModernBERT-Large-Instruct", labels=["spam", "not spam"])
    clf(["text one", "text two"])  # [{"label": "spam", "probabilities": {"spam": 0.93, "not spam": 0.07}}, ...]
    for result in clf.stream(line for line in open("texts.txt") if line.strip()):  # any iterable, any length
        ...

    clf = MLMClassifier.from_pretrained("answerdotai/ModernBERT-Large-Instruct", labels=["billing", "bug", "urgent"],
                                        multi_label=True)  # every label a yes/no question of its own
    clf("The app crashes and I was charged twice")  # {"labels": ["billing", "bug"], "probabilities": {...}}
    clf = MLMClassifier.from_pretrained("my-nli-classifier")  # its prompt names columns: {premise}, {hypothesis}
    clf({"premise": "A man sleeps.", "hypothesis": "Someone rests."})

A `ClassifierSpec` (spec.py) says what a classifier answers and how, before any model loads; `plan_scoring` checks
it against the tokenizer; `encode_views` fills and cuts its prompts (training encodes its examples with it too);
MLMClassifier scores them with the core's batched scoring.
"""

import math
import numbers
from dataclasses import dataclass

from .data import say
from .errors import InputError
from .models import Runtime, check_max_length, gather_scores, load_masked_lm, load_tokenizer, require_mask_token
from .multilabel import ANSWERS, question_templates
from .prompts import answer_token_ids, check_fixed_length, encode_prompts, mask_answers, options_block, parse_prompt
from .scoring import (LETTERS, calibrate, combine_views, decide, letter_token_ids, letters_that_fit, rotations,
                      score_sequences, slot_probabilities)
from .spec import load_spec
from .splits import template_inputs
from .stream import CHUNK_ROWS, batches_of

CONTENT_FREE_TEXT = "N/A"  # Zhao et al. (2021)'s first content-free input


@dataclass
class View:
    """One prompt a text is scored under: the template, its options as the prompt shows them ({answer: its
    token}, in display order), and which label each slot scores."""
    template: object  # a prompts.Template
    label_map: dict  # label -> verbalizer, in display order
    option_at_slot: list  # slot j scores label option_at_slot[j] (a label index); multi-label: yes, no


def make_views(spec, permutations=1):
    """The prompts a text is scored under: `permutations` cyclic rotations of the label list, or, multi-label, one
    yes/no question per label.

    Zero-shot, the letters are reassigned by position, so each rotation shows every label under another
    letter. A trained folder keeps each label's own answer token, and a rotation only reorders the
    `{options}` lines; without `{options}` in its prompt, rotations would all be the same prompt.
    """
    n = len(spec.labels)
    if spec.multi_label:
        if permutations > 1:
            raise InputError("--permutations: a multi-label question always offers yes and no in one order, so there "
                             "is nothing to rotate; --calibrate corrects each label's bias towards yes or no")
        return [View(template, ANSWERS, [0, 1])
                for template in question_templates(spec.prompt, spec.question_names, spec.prompt_source)]
    if permutations > 1 and not spec.zero_shot and "{options}" not in spec.prompt:
        raise InputError("--permutations: this folder's prompt has no {options} block, so every rotation of the "
                         "labels gives the same prompt")
    template = parse_prompt(spec.prompt, spec.prompt_source)
    views = []
    for order in rotations(n, permutations):
        if spec.zero_shot:
            label_map = {spec.labels[i]: LETTERS[j] for j, i in enumerate(order)}
            views.append(View(template, label_map, order))
        else:
            label_map = {spec.labels[i]: spec.verbalizers[i] for i in order}
            views.append(View(template, label_map, list(range(n))))
    return views


@dataclass
class ScoringPlan:
    """How a spec is scored with one tokenizer: the views, each slot's option ids, the tokens per prompt, and each
    view's answer tokens in its label map's order (what training teaches)."""
    views: list
    option_ids: list
    max_length: int | None
    answer_ids: list

    @property
    def template(self):
        """The template every view fills (multi-label: the first label's question; all take the same fields)."""
        return self.views[0].template


def plan_scoring(spec, tokenizer, permutations=1, config=None):
    """Check everything a spec needs of the tokenizer, before any weights load, and return its ScoringPlan.

    Every view's answers must be single, distinct tokens, the letters must fit (zero-shot), and every view's
    prompt must leave room for text within max_length (the folder's, else the model's positions: from `config`,
    a loaded model's, else spec.model's config).
    """
    require_mask_token(tokenizer, spec.model)
    views = make_views(spec, permutations)
    max_length = check_max_length(spec.model, tokenizer, spec.max_length, config)
    n = len(views[0].label_map)  # the options each prompt offers
    if spec.zero_shot:
        fit = letters_that_fit(tokenizer)
        if n > fit:
            raise InputError(f"--labels: {n} labels, but this tokenizer writes only {fit} letters "
                             f"({LETTERS[0]}-{LETTERS[max(fit - 1, 0)]}) as single tokens, so at most {fit} labels fit")
    answer_ids = []  # per view, each option's answer token in that view's order
    for view in views:
        options = options_block(view.label_map)
        answer_ids.append(answer_token_ids(tokenizer, view.template, view.label_map, options))
        if max_length:
            check_fixed_length(tokenizer, view.template, view.label_map, options, max_length)
    # Zero-shot, slot j is the j-th letter in both spellings (as eval.py); a trained folder's slot i is
    # option i's answer token, the one it was taught (as train.py scores it; views[0] is the folder's order).
    option_ids = letter_token_ids(tokenizer, LETTERS[:n]) if spec.zero_shot else [[i] for i in answer_ids[0]]
    return ScoringPlan(views, option_ids, max_length, answer_ids)


def encode_views(tokenizer, plan, texts, answers=None, rows=None, source=""):
    """Token ids of every text under every view (view-major), each one's answer position, and how many texts each
    view cut to fit max_length. `answers[v][t]` is the answer filled in for text t under view v (training's gold
    answers); without them any one, since the answer is masked when scored."""
    sequences, positions, cut_by_view = [], [], []
    for v, view in enumerate(plan.views):
        filled = answers[v] if answers is not None else [next(iter(view.label_map.values()))] * len(texts)
        ids, where, n_cut = encode_prompts(tokenizer, view.template, texts, filled, options_block(view.label_map),
                                           plan.max_length, rows, source)
        sequences += ids
        positions += where
        cut_by_view.append(n_cut)
    return sequences, positions, cut_by_view


def check_abstention(threshold, abstain_label, labels=(), prefix="", multi_label=False):
    """An InputError for a threshold that is not above 0 and at most 1, or an abstain label that is empty, comes
    without a threshold, reads as one of the labels or comes with multi-label (where a text above no threshold
    has the empty list). `prefix` is `--` for the command line's flags."""
    if threshold is not None and (not isinstance(threshold, numbers.Real) or isinstance(threshold, bool)
                                  or math.isnan(threshold) or not 0 < threshold <= 1):
        raise InputError(f"{prefix}threshold {threshold} must be above 0 and at most 1 (a probability)")
    if abstain_label is None:
        return
    if multi_label:
        raise InputError(f"{prefix}abstain_label: multi-label, a text whose every label is below the threshold has "
                         "the labels [] (none applies); there is nothing to abstain with")
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

    Build it with `from_pretrained`; call it on a text or a list of texts, or `stream` any iterable of them. A text
    is a string, or, for a prompt that names columns ({premise}, {hypothesis}), a dict of them. `permutations`
    (1 to the number of labels) scores each text under that many cyclic rotations of the label order and averages
    each label's probability; `calibrate` divides by the probabilities of `content_free_text` (Zhao et al., 2021).
    With `threshold`, a text whose top probability (after both) is below it gets the label `abstain_label` (None
    unless given) instead; its probabilities are still there.

    Multi-label (`multi_label=True` zero-shot, or a folder trained so), each label is a yes/no question of its own,
    one forward pass per (text, label): a text's `labels` are those whose P(yes) (renormalised over yes and no,
    calibrated per label if asked) reaches `threshold` (0.5 unless given, or the folder's).
    """

    def __init__(self, spec, tokenizer, model, permutations=1, calibrate=False, content_free_text=CONTENT_FREE_TEXT,
                 batch_tokens=None, pad_to_multiple_of=None, plan=None, threshold=None, abstain_label=None):
        check_abstention(threshold, abstain_label, spec.labels, multi_label=spec.multi_label)
        if threshold is not None and not spec.multi_label and threshold <= 1 / len(spec.labels):
            say(f"note: threshold {threshold} is at most 1/{len(spec.labels)}, the least top probability "
                f"{len(spec.labels)} labels can have: no text abstains")
        self.spec, self.tokenizer, self.model = spec, tokenizer, model
        self.threshold = spec.threshold if threshold is None and spec.multi_label else threshold
        self.abstain_label = abstain_label
        self.permutations, self.calibrate, self.content_free_text = permutations, calibrate, content_free_text
        self.plan = plan or plan_scoring(spec, tokenizer, permutations, getattr(model, "config", None))
        runtime = Runtime.resolve(device=str(next(model.parameters()).device), batch_tokens=batch_tokens,
                                  pad_to_multiple_of=pad_to_multiple_of, distributed=False)
        self.batch_tokens, self.pad_to_multiple_of = runtime.batch_tokens, runtime.pad_to_multiple_of
        self.mask_token_id, self.pad_token_id = tokenizer.mask_token_id, runtime.pad_id(tokenizer)
        self.truncated = 0  # texts cut to fit max_length in the last call (in any view; stream: so far)
        self.cut_by_view = [0] * len(self.plan.views)  # of those, how many in each view (in the last call)
        self._content_free = None

    @classmethod
    def from_pretrained(cls, model_name, labels=None, prompt=None, max_length=None, permutations=1, calibrate=False,
                        content_free_text=CONTENT_FREE_TEXT, device="auto", dtype="auto", attn_implementation="auto",
                        batch_tokens=None, pad_to_multiple_of=None, threshold=None, abstain_label=None,
                        multi_label=None):
        """A trained folder (reads prompt.txt, label_map.json, classifier.json), or any masked LM zero-shot over
        `labels`. Everything is checked before the weights load: bad labels, prompts or thresholds cost no time.

        `multi_label` True judges each label on its own (zero-shot; a folder is multi-label when it was trained
        so). `device` auto is the GPU when there is one; `dtype` auto is bfloat16 there and float32 on the CPU.
        """
        spec = load_spec(model_name, labels, prompt, max_length, multi_label=multi_label)
        tokenizer = load_tokenizer(model_name)
        plan = plan_scoring(spec, tokenizer, permutations)
        check_abstention(threshold, abstain_label, spec.labels, multi_label=spec.multi_label)
        runtime = Runtime.resolve(device=device, dtype=dtype, attn_implementation=attn_implementation,
                                  distributed=False)
        model = load_masked_lm(model_name, runtime)
        return cls(spec, tokenizer, model, permutations, calibrate, content_free_text, batch_tokens,
                   pad_to_multiple_of, plan, threshold, abstain_label)

    @property
    def labels(self):
        return self.spec.labels

    @property
    def multi_label(self):
        return self.spec.multi_label

    @property
    def max_length(self):
        return self.plan.max_length

    def inputs(self, texts, first=0):
        """The texts checked and stripped: strings, or dicts of the prompt's fields (splits.template_inputs);
        errors name positions counted from `first`."""
        return template_inputs(self.plan.template, texts, first)

    def encode(self, texts):
        """Token ids of every text under every view (view-major), [MASK] at the answer; texts cut to fit."""
        sequences, positions, self.cut_by_view = encode_views(self.tokenizer, self.plan, self.inputs(texts))
        self.truncated = max(self.cut_by_view)
        return mask_answers(sequences, positions, self.mask_token_id)

    def view_probabilities(self, texts, shard=(0, 1), progress=False):
        """For each text, its option probabilities under each view: a list (texts) of lists (views) of lists."""
        sequences = self.encode(texts)
        scores = score_sequences(self.model, sequences, self.mask_token_id, self.pad_token_id, self.plan.option_ids,
                                 self.batch_tokens, self.pad_to_multiple_of, shard=shard, progress=progress)
        if shard[1] > 1:  # each process scored a share: merge them (a process scoring texts of its own does not)
            scores = gather_scores(scores)
        n = len(scores) // len(self.plan.views)
        return [[slot_probabilities(scores[v * n + t], view.option_at_slot) for v, view in enumerate(self.plan.views)]
                for t in range(n)]

    @property
    def content_free_input(self):
        """The content-free text, in every field of a prompt that names columns."""
        template = self.plan.template
        return self.content_free_text if template.text_only else dict.fromkeys(template.fields, self.content_free_text)

    def content_free_probabilities(self):
        """Each view's option probabilities for the content-free text (scored once, then kept)."""
        if self._content_free is None:
            self._content_free = self.view_probabilities([self.content_free_input])[0]
        return self._content_free

    def probabilities(self, texts, shard=(0, 1), progress=False):
        """Each text's probability for each label: averaged over the rotations, calibrated first if asked.
        Multi-label, each label's P(yes), calibrated by its own question's content-free answer if asked."""
        content_free = self.content_free_probabilities() if self.calibrate else None
        per_text = self.view_probabilities(texts, shard, progress)
        if self.multi_label:  # view l is label l's question: [P(yes), P(no)]
            if content_free is None:
                return [[p[0] for p in views] for views in per_text]
            return [[calibrate(p, q)[0] for p, q in zip(views, content_free)] for views in per_text]
        return [combine_views(views, content_free) for views in per_text]

    def result(self, probs):
        """{"label", "probabilities"}, or multi-label {"labels", "probabilities"}: scoring.decide with this
        classifier's threshold and abstain label."""
        return decide(self.labels, probs, self.threshold, self.abstain_label, self.multi_label)

    def __call__(self, texts, progress=False):
        """A result per text of a list; one result for a single text (a string, or a dict of the prompt's fields)."""
        single = isinstance(texts, (str, dict))
        results = [self.result(probs) for probs in self.probabilities(texts, progress=progress)]  # encode checks
        return results[0] if single else results

    def stream(self, texts, chunk_size=CHUNK_ROWS, progress=False):
        """Yield the result of each text of any iterable (a list, a generator over a file), in order, as __call__
        gives it: `chunk_size` texts are read, scored by length within the chunk, and yielded before the next are
        read, so memory holds one chunk whatever the iterable's length. `truncated` counts the texts cut so far."""
        if isinstance(texts, (str, dict)):
            raise TypeError("stream takes an iterable of texts; for one text, call the classifier on it (a dict of "
                            "the prompt's fields is one text too)")
        if type(chunk_size) is not int or chunk_size < 1:
            raise ValueError(f"chunk_size {chunk_size!r} must be a positive integer")
        iter(texts)  # a TypeError now, not at the first result, for something that is no iterable
        return self._stream(texts, chunk_size, progress)

    def _stream(self, texts, chunk_size, progress):
        from tqdm import tqdm

        truncated = 0
        with tqdm(desc="classifying", unit=" texts", disable=not progress) as bar:
            for first, chunk in batches_of(texts, chunk_size):
                scored = self.probabilities(self.inputs(chunk, first))
                truncated += self.truncated
                self.truncated = truncated
                yield from (self.result(probs) for probs in scored)
                bar.update(len(chunk))
