"""A training run's output folder: what it must not overwrite, which checkpoint-<step>/ is complete (a crash can
leave the newest half-written), the loss across a resume."""

import json
import os
import shutil

from .data import check_spares_inputs, say
from .errors import InputError
from .models import TOKENIZER_FILES, WEIGHT_FILES
from .spec import SETTINGS_FILE

CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
# What train.py writes into its output folder besides checkpoint-<step>/ folders.
WRITTEN_FILES = (*WEIGHT_FILES, *TOKENIZER_FILES, "config.json", "special_tokens_map.json", "label_map.json",
                 "prompt.txt", "metrics.json", SETTINGS_FILE, "README.md", "predictions.jsonl", "trainer_state.json",
                 "training_args.bin")


def check_inputs_are_spared(output_dir, inputs):
    """An InputError when training into `output_dir` would write over an input, `inputs` being (flag, path) pairs:
    the model folder itself, or an input file among those written there, under any spelling of the path."""
    for flag, path in inputs:
        if path and os.path.isdir(path) and os.path.realpath(path) == os.path.realpath(output_dir):
            raise InputError(f"--output_dir {output_dir}: is {flag} {path}, which training would write over; give "
                             "another folder")
    check_spares_inputs([("--output_dir", os.path.join(output_dir, name)) for name in WRITTEN_FILES],
                        [(flag, path) for flag, path in inputs if path and not os.path.isdir(path)])


def earlier_run(output_dir, resuming, overwrite):
    """What an earlier run left in `output_dir` (train.py's files, checkpoint-<step>/ folders): an InputError unless
    this run resumes it, or `overwrite` replaces it; then the names to remove (remove_earlier_run) before training,
    so that no old file stays beside the new model. Other files are left alone."""
    found = sorted(name for name in (os.listdir(output_dir) if os.path.isdir(output_dir) and not resuming else ())
                   if name in WRITTEN_FILES or checkpoint_step(name) is not None)
    if found and not overwrite:
        raise InputError(f"--output_dir {output_dir}: holds an earlier run's {', '.join(found[:3])}"
                         f"{' and more' * (len(found) > 3)}; add --overwrite_output_dir to replace that run, "
                         "--resume_from_checkpoint last to carry it on, or give another folder")
    return found


def remove_earlier_run(output_dir, found):
    for name in found:
        path = os.path.join(output_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if found:
        say(f"note: --overwrite_output_dir: removed the earlier run's {', '.join(found)} from {output_dir}")


def checkpoint_step(path):
    """The step of a `checkpoint-<step>` folder, or None for any other name."""
    prefix, _, step = os.path.basename(os.path.normpath(path)).rpartition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() else None


def missing_from_checkpoint(path):
    """What a checkpoint folder lacks to resume from (a crash can leave files out, or trainer_state.json cut)."""
    files = set(os.listdir(path))
    missing = [name for name in CHECKPOINT_FILES if name not in files]
    if not files & set(WEIGHT_FILES):
        missing.append("the model weights")
    if "trainer_state.json" in files and checkpoint_global_step(path) is None:
        missing.append("a readable trainer_state.json")
    return missing


def resolve_checkpoint(resume_from_checkpoint, output_dir):
    """The checkpoint folder to resume from: a complete one given by path, or with `last` the newest complete
    `checkpoint-<step>` under `output_dir` (a half-written newer one is skipped, and said so)."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "last":
        if not os.path.isdir(output_dir):
            raise InputError(f"--resume_from_checkpoint last: --output_dir {output_dir} does not exist yet")
        steps = sorted(((checkpoint_step(name), name) for name in os.listdir(output_dir) if checkpoint_step(name)
                        is not None and os.path.isdir(os.path.join(output_dir, name))), reverse=True)
        for _, name in steps:
            path = os.path.join(output_dir, name)
            missing = missing_from_checkpoint(path)
            if not missing:
                return path
            say(f"note: skipping {path}: it lacks {', '.join(missing)} (half-written?)")
        raise InputError(f"--resume_from_checkpoint last: no complete checkpoint-<step> folder under {output_dir}")
    if not os.path.isdir(resume_from_checkpoint):
        raise InputError(f"--resume_from_checkpoint {resume_from_checkpoint}: no such folder")
    missing = missing_from_checkpoint(resume_from_checkpoint)
    if missing:
        raise InputError(f"--resume_from_checkpoint {resume_from_checkpoint}: it lacks {', '.join(missing)}, "
                         "so it was not finished; give an earlier checkpoint, or `last`")
    return resume_from_checkpoint


def checkpoint_global_step(path):
    """The global step a checkpoint was saved at (0 without one; None when its trainer_state.json cannot be read)."""
    if path is None:
        return 0
    try:
        with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
            step = json.load(f).get("global_step")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return step if type(step) is int else None


def loss_since_resume(trainer_loss, resumed_step, global_step, transformers_version):
    """Trainer's train_loss as the mean over the steps since the resume: before transformers 5.19, Trainer divided
    that sum by every step of the run, the resumed ones included."""
    from packaging.version import Version

    if resumed_step and global_step > resumed_step and Version(transformers_version) < Version("5.19"):
        return trainer_loss * global_step / (global_step - resumed_step)
    return trainer_loss


def whole_run_loss(log_history, resumed_step, since_resume, global_step):
    """The mean training loss over the whole run, also after a resume: the logged losses up to the resumed step,
    weighted by the steps each covers, joined with `since_resume`, the mean over the steps since."""
    if not resumed_step:
        return since_resume
    total, covered = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) <= resumed_step:
            total += entry["loss"] * (entry["step"] - covered)
            covered = entry["step"]
    if not covered:
        return since_resume
    return (total + since_resume * (global_step - resumed_step)) / (covered + global_step - resumed_step)


def remove_checkpoints(output_dir, keep=()):
    """Remove the checkpoint-<step>/ folders (optimizer state) under `output_dir` but those in `keep`; their names."""
    kept = {os.path.realpath(path) for path in keep if path}
    names = sorted(name for name in os.listdir(output_dir)
                   if checkpoint_step(name) is not None and os.path.isdir(os.path.join(output_dir, name))
                   and os.path.realpath(os.path.join(output_dir, name)) not in kept)
    for name in names:
        shutil.rmtree(os.path.join(output_dir, name))
    return names
