"""MLMClassifier, the notebook API: a folder written by train.py, or any masked LM zero-shot over any labels.
`plan_scoring` checks a ClassifierSpec (spec.py) against the tokenizer; `encode_views` fills and cuts its prompts."""

import numbers
from collections import namedtuple
from collections.abc import Mapping
from dataclasses import dataclass

from .data import say
from .errors import InputError
from .models import Runtime, check_max_length, load_masked_lm, load_tokenizer, require_mask_token
from .multilabel import ANSWERS, question_template
from .prompts import answer_token_ids, check_fixed_length, encode_prompts, mask_answers, options_block, parse_prompt
from .scoring import (LETTERS, calibrate, combine_views, decide, letter_token_ids, letters_that_fit, rotations,
                      score_sequences, slot_probabilities)
from .spec import load_spec
from .splits import frame_rows, template_inputs
from .stream import CHUNK_ROWS, batches_of

CONTENT_FREE_TEXT = "N/A"  # Zhao et al. (2021)'s first content-free input


# One prompt a text is scored under: its template, {label: its answer} in display order, the label each slot scores
View = namedtuple("View", "template label_map option_at_slot")


@dataclass
class ScoringPlan:
    """How a spec is scored with one tokenizer; `answer_ids` are each view's answer tokens (what training teaches)."""
    views: list
    option_ids: list
    max_length: int | None
    answer_ids: list

    @property
    def template(self):  # multi-label, the first label's question: all take the same fields
        return self.views[0].template


def plan_scoring(spec, tokenizer, permutations=1, config=None):
    """The prompts a text is scored under (`permutations` rotations of the labels, or multi-label a yes/no question
    per label), checked against the tokenizer before any weights load: single, distinct answer tokens, letters that
    fit (zero-shot) and room for text within max_length (the folder's, else the model's)."""
    require_mask_token(tokenizer, spec.model)
    if spec.multi_label:
        if permutations > 1:
            raise InputError("--permutations: a multi-label question always offers yes and no in one order, so there "
                             "is nothing to rotate; --calibrate corrects each label's bias towards yes or no")
        keys = [name.strip().casefold() for name in spec.question_names]
        for k, name in enumerate(spec.question_names):  # one question would get contradictory answers
            if keys[k] in keys[:k]:
                first = keys.index(keys[k])
                raise InputError(f"{spec.prompt_source}: labels {spec.labels[first]!r} and {spec.labels[k]!r} both ask "
                                 f"about {name!r}; each label needs a question of its own")
        views = [View(parse_prompt(question_template(spec.prompt, name), spec.prompt_source), ANSWERS, [0, 1])
                 for name in spec.question_names]
    elif permutations > 1 and not spec.zero_shot and "{options}" not in spec.prompt:
        raise InputError("--permutations: this folder's prompt has no {options} block, so every rotation of the "
                         "labels gives the same prompt")
    else:
        template, orders = parse_prompt(spec.prompt, spec.prompt_source), rotations(len(spec.labels), permutations)
        if spec.zero_shot:
            views = [View(template, {spec.labels[i]: LETTERS[j] for j, i in enumerate(o)}, o) for o in orders]
        else:  # a trained folder keeps each label's own token: a rotation only reorders {options}
            views = [View(template, {spec.labels[i]: spec.verbalizers[i] for i in o}, sorted(o)) for o in orders]
    max_length = check_max_length(spec.model, tokenizer, spec.max_length, config)
    n = len(views[0].label_map)  # the options each prompt offers
    if spec.zero_shot:
        fit = letters_that_fit(tokenizer)
        if n > fit:
            raise InputError(f"--labels: {n} labels, but this tokenizer writes only {fit} letters "
                             f"({LETTERS[0]}-{LETTERS[max(fit - 1, 0)]}) as single tokens, so at most {fit} labels fit")
    answer_ids = []
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
    """Token ids of every text under every view (view-major), their answer positions, and the texts each view cut.
    `answers[v][t]` fills text t's answer under view v (training's gold); else any, as it is masked."""
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
    """An InputError for a threshold not in (0, 1], or an abstain label that is empty, comes without a threshold,
    reads as a label or comes with multi-label. `prefix` is `--` for the command line's flags."""
    if threshold is not None and (not isinstance(threshold, numbers.Real) or isinstance(threshold, bool)
                                  or not 0 < threshold <= 1):  # NaN too
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
    """A masked LM that labels texts (strings, or dicts of a prompt's fields) with its MLM head. `permutations`
    averages over rotations of the label order; `calibrate` divides by the probabilities of `content_free_text`;
    below `threshold` a text gets `abstain_label`. Multi-label, `labels` are those whose P(yes) reaches `threshold`.
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
        self.labels, self.multi_label, self.max_length = spec.labels, spec.multi_label, self.plan.max_length
        runtime = Runtime.resolve(device=str(next(model.parameters()).device), batch_tokens=batch_tokens,
                                  pad_to_multiple_of=pad_to_multiple_of, distributed=False)
        self.batch_tokens, self.pad_to_multiple_of = runtime.batch_tokens, runtime.pad_to_multiple_of
        self.mask_token_id, self.pad_token_id = tokenizer.mask_token_id, tokenizer.pad_token_id
        self.truncated = 0  # texts cut to fit max_length in the last call (stream: so far)
        self.cut_by_view = [0] * len(self.plan.views)
        self._content_free = None

    @classmethod
    def from_pretrained(cls, model_name, labels=None, prompt=None, max_length=None, permutations=1, calibrate=False,
                        content_free_text=CONTENT_FREE_TEXT, device="auto", dtype="auto", attn_implementation="auto",
                        batch_tokens=None, pad_to_multiple_of=None, threshold=None, abstain_label=None,
                        multi_label=None):
        """A trained folder, or any masked LM zero-shot over `labels`; all is checked before the weights load."""
        spec = load_spec(model_name, labels, prompt, max_length, multi_label=multi_label)
        tokenizer = load_tokenizer(model_name)
        plan = plan_scoring(spec, tokenizer, permutations)
        check_abstention(threshold, abstain_label, spec.labels, multi_label=spec.multi_label)
        runtime = Runtime.resolve(device=device, dtype=dtype, attn_implementation=attn_implementation,
                                  distributed=False)
        model = load_masked_lm(model_name, runtime)
        return cls(spec, tokenizer, model, permutations, calibrate, content_free_text, batch_tokens,
                   pad_to_multiple_of, plan, threshold, abstain_label)

    def encode(self, texts):
        """Token ids of every text under every view (view-major), [MASK] at the answer; texts cut to fit."""
        sequences, positions, self.cut_by_view = encode_views(self.tokenizer, self.plan,
                                                              template_inputs(self.plan.template, texts, 0))
        self.truncated = max(self.cut_by_view)
        return mask_answers(sequences, positions, self.mask_token_id)

    def view_probabilities(self, texts, shard=(0, 1), progress=False):
        """For each text, its option probabilities under each view."""
        scores = score_sequences(self.model, self.encode(texts), self.mask_token_id, self.pad_token_id,
                                 self.plan.option_ids, self.batch_tokens, self.pad_to_multiple_of, shard=shard,
                                 progress=progress)
        n = len(scores) // len(self.plan.views)
        return [[slot_probabilities(scores[v * n + t], view.option_at_slot) for v, view in enumerate(self.plan.views)]
                for t in range(n)]

    def content_free_probabilities(self):
        """Each view's option probabilities for the content-free text, in every field (scored once, then kept)."""
        if self._content_free is None:
            template, text = self.plan.template, self.content_free_text
            content_free = text if template.text_only else dict.fromkeys(template.fields, text)
            self._content_free = self.view_probabilities([content_free])[0]
        return self._content_free

    def probabilities(self, texts, shard=(0, 1), progress=False):
        """Each text's probability for each label (multi-label, its P(yes)), calibrated if asked."""
        content_free = self.content_free_probabilities() if self.calibrate else None
        per_text = self.view_probabilities(texts, shard, progress)
        if self.multi_label:  # view l is label l's question: [P(yes), P(no)]
            if content_free is None:
                return [[p[0] for p in views] for views in per_text]
            return [[calibrate(p, q)[0] for p, q in zip(views, content_free)] for views in per_text]
        return [combine_views(views, content_free) for views in per_text]

    def result(self, probs):
        """{"label", "probabilities"}, or multi-label {"labels", "probabilities"} (scoring.decide)."""
        return decide(self.labels, probs, self.threshold, self.abstain_label, self.multi_label)

    def __call__(self, texts, progress=False):
        """A result per text of a list; one result for a single text (a string, or a dict of the prompt's fields)."""
        single = isinstance(texts, (str, Mapping))
        results = [self.result(probs) for probs in self.probabilities(texts, progress=progress)]  # encode checks
        return results[0] if single else results

    def stream(self, texts, chunk_size=CHUNK_ROWS, progress=False):
        """Yield each text's result, a chunk of `chunk_size` texts read, scored and yielded at a time."""
        if isinstance(texts, (str, Mapping)):  # never its keys, taken for texts
            raise TypeError("stream takes an iterable of texts; for one text, call the classifier on it (a dict of "
                            "the prompt's fields is one text too)")
        if type(chunk_size) is not int or chunk_size < 1:
            raise ValueError(f"chunk_size {chunk_size!r} must be a positive integer")
        texts = frame_rows(self.plan.template, texts)  # a DataFrame's rows, not its column names
        iter(texts)  # a TypeError now, not at the first result, for something that is no iterable
        return self._stream(texts, chunk_size, progress)

    def _stream(self, texts, chunk_size, progress):
        from tqdm import tqdm

        truncated = 0
        with tqdm(desc="classifying", unit=" texts", disable=not progress) as bar:
            for first, chunk in batches_of(texts, chunk_size):
                scored = self.probabilities(template_inputs(self.plan.template, chunk, first))
                truncated += self.truncated
                self.truncated = truncated
                yield from (self.result(probs) for probs in scored)
                bar.update(len(chunk))
