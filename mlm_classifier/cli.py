"""The command line's shared parts: bad input as one `error:` line, flags that take both spellings, shared checks.

Every script runs its main() through `run_command`, so an InputError raised anywhere (a file, row, label or
flag at fault) ends as `error: <what and where>` with exit status 1, never a traceback.
"""

import argparse
import os
import sys


class InputError(ValueError):
    """Bad user input (a file, row, label or flag). The scripts print it as one line and exit 1."""


INTERRUPTED = {"message": "interrupted: nothing written"}  # what Ctrl-C leaves behind; a script updates it as it goes


def on_interrupt(message):
    """What run_command prints if Ctrl-C comes from now on, e.g. where the checkpoints are and how to resume."""
    INTERRUPTED["message"] = message


def run_command(main):
    """Run a script's main(): bad input ends as one line, `error: ...`, and exit status 1, never a traceback; Ctrl-C
    (or SIGTERM) ends as one line saying what was kept, and exit status 130. Outputs are written atomically, so an
    interruption never leaves half a file."""
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` and schedulers end a run like Ctrl-C
    try:
        main()
    except InputError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        if "tqdm" in sys.modules:  # end the progress bars' lines, so that the message is a line of its own
            for bar in list(getattr(sys.modules["tqdm"].tqdm, "_instances", ())):
                bar.close()
        if int(os.environ.get("RANK", "0")) == 0:
            print(INTERRUPTED["message"], file=sys.stderr, flush=True)
        sys.exit(130)


def error_reason(error):
    """The first line of an exception's message (or its type's name): what a one-line error can quote."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def say(*parts):
    """Print from the first process only, so that torchrun does not repeat every line."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(*parts, flush=True)


class HelpFormatter(argparse.HelpFormatter):
    """--help shows each flag's default once: appended unless the help already says it, left out when None/off."""

    def _get_help_string(self, action):
        help = action.help or ""
        # `is`, not `in`: 0 == False, and a default of 0 (--warmup_ratio) must show
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if "default" in help.lower() or unset or not action.option_strings:
            return help
        return f"{help} (default: %(default)s)".lstrip()


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag ends like any other bad input: one `error:` line and exit status 1."""

    def error(self, message):
        sys.exit(f"error: {message} (see --help)")


def make_parser(doc):
    """A parser with the script's first docstring paragraph, our help formatter and no abbreviations."""
    return ArgumentParser(description=doc.split("\n\n")[0], formatter_class=HelpFormatter, allow_abbrev=False)


def add_flag(parser, name, **kwargs):
    """Register `--name` under both spellings, underscores and hyphens: the published scripts mixed them."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*spellings, dest=name, **kwargs)


def add_scoring_flags(parser):
    """The flags of scoring with a loaded model, as eval.py and classify.py both take them."""
    add_flag(parser, "batch_tokens", type=int, default=None,
             help="padded tokens per batch (default: 65536 on a GPU, 8192 on the CPU)")
    add_flag(parser, "pad_to_multiple_of", type=int, default=None,
             help="pad batch width to a multiple of this (default: 64 on a GPU, 8 on the CPU)")
    add_flag(parser, "dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
             help="auto: bfloat16 on a GPU, float32 on the CPU")
    add_flag(parser, "attn_implementation", default="auto", choices=["auto", "sdpa", "flash_attention_2", "eager"],
             help="auto: flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa")
    add_flag(parser, "device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    add_flag(parser, "no_progress", action="store_true", help="no progress bar")


def check_positive(**flags):
    """An InputError naming the first flag (given by its dest name) whose value is set but not above zero."""
    for name, value in flags.items():
        if value is not None and value <= 0:
            raise InputError(f"--{name} {value} must be a positive number")


def row_and_line(row, line=None):
    """How errors name a record: `row N`, counted from 0 as `row` in predictions.jsonl, and `(line L)`, the file's
    1-based line where the record starts, when the file has lines and that line is known."""
    return f"row {row}" if line is None else f"row {row} (line {line})"


def check_spares_inputs(outputs, inputs):
    """An InputError, before any work, when a file about to be written is one of the run's inputs, under any spelling
    (`./x.csv`, an absolute path, a link), or a file that already exists inside an input folder (a model folder's
    own predictions.jsonl, say). `outputs` and `inputs` are (flag, path) pairs; a path may be None."""
    for out_flag, out in outputs:
        target = os.path.realpath(out)
        for in_flag, path in inputs:
            if path is None or not os.path.exists(path):
                continue
            source = os.path.realpath(path)
            if target == source or (os.path.isdir(source) and os.path.isfile(target)
                                    and target.startswith(source + os.sep)):
                what = "is" if target == source else f"would replace {target}, a file of"
                raise InputError(f"{out_flag} {out}: {what} {in_flag} {path}, which this run reads; "
                                 "nothing is written over an input: give another path")


def short(value, width=40):
    """A setting's repr for an error line, cut to `width` characters (a prompt is long)."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "...'"


def differences(recorded, wanted, show=lambda key, value: short(value)):
    """`key 'old' (now 'new'); ...` for each setting that differs between a recorded result and this run: how a
    script names what stops it from replacing or resuming a result made otherwise. `show(key, value)` writes a
    value (default: its repr, cut)."""
    if not isinstance(recorded, dict):
        return "its settings were not recorded"
    changed = [k for k in sorted(set(recorded) | set(wanted)) if recorded.get(k) != wanted.get(k)]
    return "; ".join(f"{k} {show(k, recorded.get(k))} (now {show(k, wanted.get(k))})" for k in changed)


def check_output_path(path, flag, folder=False):
    """An InputError, before any work, when `path` cannot be written: it is a folder (or, with `folder`, a file),
    a folder above it is a file, or the nearest existing folder above it is not writable."""
    path = os.path.abspath(path)
    if os.path.exists(path) and os.path.isdir(path) != folder:
        raise InputError(f"{flag} {path}: is a {'file' if folder else 'folder'}; "
                         f"give a {'folder' if folder else 'file name'}")
    parent = path if folder else os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"{flag} {path}: {parent} is a file, so nothing can be written under it")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{flag} {path}: {parent} is not writable")
