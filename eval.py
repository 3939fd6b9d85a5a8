"""Multiple choice through a masked language model's MLM head, zero- or few-shot: MMLU and MMLU-Pro.

The prompt ends with `Answer: [unused0] [MASK]`; each letter scores the summed probability of its spellings `A`
and ` A` there, as the published eval.py does, batched. Usage and method: docs/eval.md.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Literal

from transformers.hf_argparser import HfArg

from mlm_classifier import mmlu
from mlm_classifier.cli import ScoringSettings, check_positive, make_parser, parse, run_command
from mlm_classifier.data import (check_output_path, check_same_settings, check_spares_inputs, recorded_settings,
                                 write_atomic)
from mlm_classifier.errors import InputError
from mlm_classifier.models import (Runtime, check_model_source, end_distributed, load_masked_lm,
                                   load_tokenizer, max_positions)
from mlm_classifier.scoring import LETTERS, letter_token_ids, score_sequences


@dataclass
class EvalSettings:
    """eval.py's flags, with ScoringSettings'."""
    model: str = HfArg(default="answerdotai/ModernBERT-Large-Instruct", help="hub name or local folder")
    task: Literal["mmlu", "mmlu_pro"] = HfArg(default="mmlu", help="the benchmark")
    data_dir: str | None = HfArg(default=None, help="local data: MMLU's original CSV folder, or a folder with "
                                 "MMLU-Pro's <split>.jsonl (unset: the hub's cais/mmlu or TIGER-Lab/MMLU-Pro)")
    split: Literal["test", "validation", "dev"] = HfArg(default="test", help="which questions")
    subjects: str = HfArg(default="", help="comma-separated subjects (MMLU) or categories (MMLU-Pro); empty: all")
    limit: int | None = HfArg(default=None, help="score only the first N questions of each subject (MMLU-Pro: "
                                                 "category), as lm-evaluation-harness's --limit")
    sample: int | None = HfArg(default=None, help="score a seeded random sample of N questions drawn across every "
                                                  "subject (kept in their order)")
    seed: int = HfArg(default=0, help="the seed of --sample")
    num_fewshot: int = HfArg(default=0, help="solved examples before each question: the first k of its subject's dev "
                             "split (MMLU) or category's validation split (MMLU-Pro); fewer where the prompt would not "
                             "fit")
    permutations: int = HfArg(default=1, help="score each question under this many cyclic rotations of its choices "
                              "and average each choice's probability (a question with fewer choices uses all of its "
                              "rotations)")
    output_dir: str | None = HfArg(default=None, help="where the files go (unset: results/<task>_<split>_<model "
                                   "name>, then what changes the result: _5shot, _perm4, the subjects, _limit200 or "
                                   "_sample500-seed0)")
    compile: bool = HfArg(default=False, help="torch.compile the encoder (slow first pass)")

    def __post_init__(self):
        check_positive(limit=self.limit, sample=self.sample, permutations=self.permutations)
        if self.limit and self.sample:
            raise InputError("give --limit (the first N of each subject) or --sample (N drawn across subjects), not "
                             "both")
        if self.num_fewshot < 0:
            raise InputError(f"--num_fewshot {self.num_fewshot} must be 0 (zero-shot) or more")
        if self.num_fewshot and self.split == mmlu.FEWSHOT_SPLIT[self.task]:
            raise InputError(f"--num_fewshot {self.num_fewshot}: the solved examples come from the {self.split} split, "
                             f"which --split {self.split} scores; the examples would be the questions themselves")


def default_output_dir(settings):
    """results/<task>_<split>_<model name>, then each setting that changes the result (_5shot, _perm4, ...)."""
    name = f"{settings['task']}_{settings['split']}_{os.path.basename(settings['model'].rstrip('/'))}"
    name += f"_{settings['num_fewshot']}shot" * bool(settings["num_fewshot"])
    name += f"_perm{settings['permutations']}" * (settings["permutations"] > 1)
    if settings["subjects"] != "all":
        subjects = settings["subjects"]
        digest = hashlib.sha1(",".join(subjects).encode()).hexdigest()[:8]
        name += "_" + ("-".join(subjects) if len(subjects) <= 2 else f"{len(subjects)}subjects-{digest}")
    name += f"_limit{settings['limit']}" * bool(settings["limit"])
    name += f"_sample{settings['sample']}-seed{settings['seed']}" * bool(settings["sample"])
    return os.path.join("results", name)


def build_parser():
    return make_parser(__doc__, EvalSettings, ScoringSettings)


def main(argv=None):
    args, scoring = parse(build_parser(), argv)
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()]
    # What defines the result, recorded in results.json: a run never replaces results made otherwise.
    settings = {"task": args.task, "split": args.split, "model": args.model, "data": args.data_dir or "hub",
                "subjects": sorted(set(subjects)) or "all", "limit": args.limit, "sample": args.sample,
                "seed": args.seed if args.sample else None, "num_fewshot": args.num_fewshot,
                "permutations": args.permutations}

    # 1. Where the results go, checked before anything is read: never over an input, nor over other results.
    output_dir = args.output_dir or default_output_dir(settings)
    check_output_path(output_dir, "--output_dir", folder=True)
    results_path = os.path.join(output_dir, "results.json")
    if os.path.isfile(results_path):
        check_same_settings(recorded_settings(results_path), settings, f"--output_dir {output_dir}: its results were "
                            "made", "Give another --output_dir, or delete that folder to replace them")
    outputs = [("--output_dir", os.path.join(output_dir, name)) for name in ("results.json", "predictions.jsonl")]
    check_spares_inputs(outputs, [("--data_dir", args.data_dir), ("--model", args.model)])
    check_model_source(args.model)
    runtime = Runtime.resolve(scoring)

    # 2. Questions and their solved examples, validated before anything heavy is loaded; then their token ids.
    questions = mmlu.load_questions(args.task, args.data_dir, args.split, subjects, args.limit, args.sample, args.seed)
    examples = (mmlu.load_fewshot_examples(args.task, args.data_dir, [q["subject"] for q in questions],
                                           args.num_fewshot) if args.num_fewshot else None)
    tokenizer = load_tokenizer(args.model, fast=False)
    option_ids = letter_token_ids(tokenizer, LETTERS[:max(len(q["choices"]) for q in questions)])
    start = time.perf_counter()
    sequences, views, shots = mmlu.encode_questions(tokenizer, questions, max_positions(args.model, tokenizer),
                                                    args.permutations, examples)
    tokenize_seconds = time.perf_counter() - start

    # 3. The model, then the scores: each process takes its share of the length-sorted batches.
    model = load_masked_lm(args.model, runtime)
    if args.compile:  # the encoder only: the head runs at [MASK] alone (scoring.head_logits)
        model.base_model.compile(dynamic=True)
    start = time.perf_counter()
    scores = score_sequences(model, sequences, tokenizer.mask_token_id, tokenizer.pad_token_id, option_ids,
                             runtime.batch_tokens, runtime.pad_to_multiple_of, runtime.shard, runtime.progress)
    seconds = tokenize_seconds + time.perf_counter() - start

    # 4. Predictions and metrics, written by one process.
    if runtime.rank == 0:
        results, records = mmlu.results_and_records(questions, scores, views, args.task,
                                                    shots if args.num_fewshot else None)
        results.update(task=args.task, split=args.split, model=args.model, settings=settings,
                       **mmlu.prompt_stats(sequences, shots, args.num_fewshot), permutations=args.permutations,
                       **runtime.description, seconds=round(seconds, 3),
                       questions_per_second=round(len(questions) / seconds, 2))
        os.makedirs(output_dir, exist_ok=True)
        write_atomic(results_path, json.dumps(results, indent=2) + "\n")
        write_atomic(os.path.join(output_dir, "predictions.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
        print(mmlu.format_table(results))
        print(f"{len(questions)} questions in {seconds:.1f} s ({results['questions_per_second']:.1f}/s) on "
              f"{runtime.device}, {results['dtype']}, {runtime.attn_implementation}; wrote {output_dir}/")
    end_distributed()


if __name__ == "__main__":
    run_command(main)
