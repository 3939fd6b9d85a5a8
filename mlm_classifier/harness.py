"""lm-evaluation-harness backend `mlm_head`: a masked LM's MLM head answers a task's one-token requests at [MASK].

Each distinct context is scored once with ` [unused0] [MASK]` appended (`...Answer:` and the slot are the paper's
prompt); what an MLM head cannot answer faithfully is an InputError naming the task. `python -m mlm_classifier.harness`
is `lm-eval run` with `mlm_head` registered (lm-eval 0.4 has no entry point for that). Usage: docs/harness.md.
"""

import logging
import os
import sys

import torch

from .anchor import ANCHOR
from .cli import check_positive, run_command
from .errors import InputError
from .models import Runtime, check_model_source, load_masked_lm, load_tokenizer, max_positions, register_anchor
from .scoring import last_index, length_sorted_batches, padding_bound, score_sequences

NEEDS_LM_EVAL = ("mlm_classifier.harness needs lm-evaluation-harness: pip install 'lm-eval>=0.4.13,<0.5' "
                 "(or, from a clone, pip install '.[lm-eval]')")
try:
    from lm_eval.api.model import LM
except ImportError:
    if __name__ == "__main__":
        sys.exit(f"error: {NEEDS_LM_EVAL}")
    raise ImportError(NEEDS_LM_EVAL) from None

MODEL_NAME = "mlm_head"
FLAG = "--model_args pretrained"  # how errors name the model the harness was given
ANSWER_SLOT = f" {ANCHOR} {{mask}}"  # appended to every context; {mask} is the tokenizer's mask token
TASKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lm_eval_tasks")  # the shipped harness tasks
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "flash_attention_2", "eager")


def with_answer_slot(context, mask_token):
    """The context, then ` [unused0] <mask>`: no space after an empty context or white space, and no second
    anchor after one."""
    space = "" if not context or context[-1].isspace() else " "
    return context + space + (mask_token if context.rstrip().endswith(ANCHOR)
                              else ANSWER_SLOT.lstrip().format(mask=mask_token))


def answer_ids(tokenizer, continuation):
    """The vocabulary ids whose probabilities, summed at [MASK], score `continuation`: an ASCII letter or digit
    (` A`, `A`) by its one-token spellings `A` and ` A`, as eval.py scores letters; anything else must be one token."""
    word = continuation.strip()
    if len(word) == 1 and word.isascii() and word.isalnum():
        ids = sorted({ids[0] for ids in (tokenizer(spelling, add_special_tokens=False)["input_ids"]
                                         for spelling in (word, " " + word)) if len(ids) == 1})
        if ids:
            return tuple(ids)
    ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(f"the continuation {continuation!r} is {len(ids)} tokens "
                         f"{tokenizer.convert_ids_to_tokens(ids)}, and the MLM head fills one [MASK] with one token, "
                         f"so {MODEL_NAME} cannot score it faithfully: it answers one-token (or one-letter) "
                         "continuations only")
    return (ids[0],)


class MLMHeadLM(LM):
    """`--model_args`: `pretrained` (a hub name or folder; from Python, a loaded masked LM with its `tokenizer`),
    `tokenizer`, and device, dtype, attn_implementation, batch_tokens and pad_to_multiple_of as eval.py takes them;
    `progress`. The harness's `batch_size` and `max_batch_size` are unused: batches are bounded by tokens."""

    def __init__(self, pretrained="answerdotai/ModernBERT-Large-Instruct", tokenizer=None, device=None, dtype="auto",
                 attn_implementation="auto", batch_tokens=None, pad_to_multiple_of=None, progress=True,
                 batch_size=None, max_batch_size=None, **unknown):
        super().__init__()
        if unknown:
            raise InputError(f"--model_args: the {MODEL_NAME} backend has no argument {', '.join(sorted(unknown))}; "
                             "it takes pretrained, tokenizer, device, dtype, attn_implementation, batch_tokens, "
                             "pad_to_multiple_of and progress")
        if dtype not in DTYPES:
            raise InputError(f"--model_args dtype={dtype}: use one of {', '.join(DTYPES)}")
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise InputError(f"--model_args attn_implementation={attn_implementation}: "
                             f"use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
        for name, value in (("batch_tokens", batch_tokens), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InputError(f"--model_args {name}={value}: must be a positive whole number")
        check_positive(batch_tokens=batch_tokens, pad_to_multiple_of=pad_to_multiple_of)
        self.progress = progress not in (False, "False", "false", 0)
        if isinstance(pretrained, str):
            check_model_source(pretrained, flag="--model_args pretrained")
            if isinstance(tokenizer, str):
                check_model_source(tokenizer, flag="--model_args tokenizer", weights=False)
            self.model_name, config = pretrained, None
            runtime = Runtime.resolve(device=device or "auto", dtype=dtype, attn_implementation=attn_implementation,
                                      batch_tokens=batch_tokens, pad_to_multiple_of=pad_to_multiple_of,
                                      distributed=False)
            self.tokenizer = self._tokenizer(tokenizer if tokenizer is not None else pretrained,
                                             "--model_args tokenizer" if tokenizer is not None else FLAG)
            self.model = load_masked_lm(pretrained, runtime, FLAG)
        else:  # a loaded model, from Python
            if tokenizer is None:
                raise InputError(f"{MODEL_NAME}: a loaded model needs its tokenizer (tokenizer=...)")
            self.model, config = pretrained.eval(), pretrained.config
            self.model_name = getattr(config, "name_or_path", type(pretrained).__name__)
            runtime = Runtime.resolve(device=str(next(pretrained.parameters()).device), batch_tokens=batch_tokens,
                                      pad_to_multiple_of=pad_to_multiple_of, distributed=False)
            self.tokenizer = self._tokenizer(tokenizer, "tokenizer")
        self.max_positions = max_positions(self.model_name, self.tokenizer, config)
        self._device = runtime.device
        self.batch_tokens, self.pad_to_multiple_of = runtime.batch_tokens, runtime.pad_to_multiple_of
        self.mask_token_id = self.tokenizer.mask_token_id
        self.pad_token_id = self.tokenizer.pad_token_id
        self.last_prompts = []  # the texts the last loglikelihood call scored, one per distinct context

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        """The harness's way in: its own settings (batch_size, device) under the model arguments, which win."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**{**extra, **arg_dict})

    def _tokenizer(self, tokenizer, flag):
        """By name (loaded with [unused0] as one token), or a loaded one, checked the same way."""
        if isinstance(tokenizer, str):
            return load_tokenizer(tokenizer, fast=False, flag=flag)
        register_anchor(tokenizer, getattr(tokenizer, "name_or_path", "") or "the tokenizer", flag)
        return tokenizer

    @property
    def tokenizer_name(self):
        return self.model_name.replace("/", "__")

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        raise InputError(f"--apply_chat_template: {MODEL_NAME} has no chat template; a masked LM reads the task's "
                         "prompt as it is, ending in the answer slot")

    def loglikelihood(self, requests, disable_tqdm=False):
        """(log P(continuation), is_greedy: the likeliest token at [MASK] is one of the continuation's) per request,
        from one batched scoring of the distinct contexts."""
        prompt_index, option_index, plan, first_request = {}, {}, [], {}
        for request in requests:
            context, continuation = request.args[0], request.args[1]
            try:
                ids = answer_ids(self.tokenizer, continuation)
            except InputError as e:
                raise InputError(f"task {request.task_name}: {e}") from None
            p = prompt_index.setdefault(with_answer_slot(context, self.tokenizer.mask_token), len(prompt_index))
            plan.append((p, option_index.setdefault(ids, len(option_index))))
            first_request.setdefault(p, request)
        self.last_prompts, options = list(prompt_index), list(option_index)
        sequences = self.tokenizer(self.last_prompts, verbose=False)["input_ids"] if requests else []
        for p, ids in enumerate(sequences):
            where = f"task {first_request[p].task_name}: doc {first_request[p].doc_id}"
            if self.mask_token_id not in ids:
                raise InputError(f"{where}: the tokenizer does not write {self.tokenizer.mask_token} as one token in "
                                 "the prompt, so there is no [MASK] to read the answer at")
            if self.max_positions and len(ids) > self.max_positions:
                raise InputError(f"{where}: the prompt is {len(ids)} tokens, more than the model's "
                                 f"{self.max_positions} positions (fewer few-shot examples would fit)")
        scores, greedy = self.score_prompts(sequences, options, progress=self.progress and not disable_tqdm)
        if greedy is None:
            logging.getLogger(__name__).warning(
                "%s: the likeliest token at [MASK] is not visible for %s; is_greedy says whether the continuation is "
                "the likeliest of its context's choices", MODEL_NAME, type(self.model).__name__)
            best = {}
            for p, o in plan:
                best[p] = max(best.get(p, float("-inf")), scores[p][o])
        results = []
        for request, (p, o) in zip(requests, plan):
            is_greedy = greedy[p] in options[o] if greedy is not None else scores[p][o] >= best[p]
            result = (scores[p][o], bool(is_greedy))
            self.cache_hook.add_partial("loglikelihood", request.args, result)
            results.append(result)
        return results

    def score_prompts(self, sequences, options, progress=False):
        """({sequence: [log P per option]}, {sequence: likeliest id at its [MASK]} or None), in one score_sequences
        call. The likeliest ids come from a hook on the vocabulary projection, called once per batch in the order of
        length_sorted_batches (at the [MASK] rows, or at every position); None where there is no such module."""
        projection = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        captured = []
        handle = (projection.register_forward_hook(lambda module, args, output: captured.append(output.argmax(-1)))
                  if isinstance(projection, torch.nn.Module) else None)
        try:
            scores = score_sequences(self.model, sequences, self.mask_token_id, self.pad_token_id, options,
                                     self.batch_tokens, self.pad_to_multiple_of, progress=progress)
        finally:
            if handle is not None:
                handle.remove()
        bound = padding_bound(self.model)  # as score_sequences batches them
        batches = length_sorted_batches([len(ids) for ids in sequences], self.batch_tokens,
                                        min(self.pad_to_multiple_of, bound + 1) if bound else self.pad_to_multiple_of,
                                        bound)
        if handle is None or len(captured) != len(batches):
            return scores, None
        greedy = {}
        for batch, ids in zip(batches, captured):
            ids = ids.cpu()
            if ids.dim() == 2 and len(ids) == len(batch):  # logits at every position: each row at its last [MASK]
                ids = ids[range(len(batch)), [last_index(sequences[i], self.mask_token_id) for i in batch]]
            if ids.dim() != 1 or len(ids) != len(batch):
                return scores, None
            greedy.update(zip(batch, ids.tolist()))
        return scores, greedy

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise _unfaithful(requests, "loglikelihood_rolling (the likelihood of a whole text, for perplexity)",
                          "scores one token at [MASK]")

    def generate_until(self, requests, disable_tqdm=False):
        raise _unfaithful(requests, "generate_until (free generation)", "fills one [MASK] with one token")


def _unfaithful(requests, request_type, what_it_does):
    return InputError(f"task {requests[0].task_name if requests else '?'}: {request_type} cannot be answered "
                      f"faithfully by an MLM head, which {what_it_does}; the {MODEL_NAME} backend answers "
                      "multiple-choice and one-token loglikelihood tasks")


# Registered on import. The harness indexes its own models only while its registry is empty: they are indexed first
# (lazy placeholders: nothing heavy loads), or registering ours would hide them.
import lm_eval.models  # noqa: E402, F401
from lm_eval.api.registry import model_registry  # noqa: E402

if MODEL_NAME not in model_registry:
    model_registry.register(MODEL_NAME, target="mlm_classifier.harness:MLMHeadLM")


def cli_args(argv):
    argv = list(argv)
    if not argv or argv == ["run"] or any(a in ("-h", "--help") for a in argv):
        return argv
    given = {a.split("=")[0] for a in argv if a.startswith("-")}
    command = argv[0] if argv[0] in ("run", "ls", "validate") else "run"
    if command == "run" and not given & {"--config", "-C"}:
        if not given & {"--model", "-M"}:
            argv += ["--model", MODEL_NAME]
        if "--device" not in given:  # the harness's own default is cuda:0, even where there is no GPU
            argv += ["--device", "auto"]
    if "--include_path" not in given:
        argv += ["--include_path", TASKS]
    return argv


def main(argv=None):
    from lm_eval.__main__ import cli_evaluate

    def evaluate():
        try:
            cli_evaluate()
        except AssertionError as e:  # the harness's few-shot sampler, asked for more examples than a split holds
            if "fewshot samples requested exceeds" not in str(e):
                raise
            raise InputError(f"--num_fewshot: {str(e).removeprefix('Error: ')} in a task's few-shot split (MMLU's "
                             "dev split holds 5 questions per subject); ask for at most that many") from None
        except ValueError as e:  # the harness's own word for a task name it does not know
            if isinstance(e, InputError) or not str(e).startswith("Tasks not found"):
                raise
            raise InputError(f"{e}; `python -m mlm_classifier.harness ls tasks` lists the tasks, with the shipped "
                             "mmlu_mask and mmlu_mask_<subject>") from None

    sys.argv = [sys.argv[0], *cli_args(sys.argv[1:] if argv is None else argv)]
    run_command(evaluate)


if __name__ == "__main__":
    from mlm_classifier.harness import main as harness_main  # the registered module, not this __main__ copy

    harness_main()
