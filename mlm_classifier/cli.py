"""The command line: flags are the fields of settings dataclasses; bad input ends as one `error:` line."""

import os
import signal
import sys
from dataclasses import dataclass
from typing import Literal

from transformers.hf_argparser import HfArg, HfArgumentParser

from .errors import InputError

INTERRUPTED = {"message": "interrupted: nothing written"}  # what Ctrl-C leaves behind; a script updates it as it goes


def on_interrupt(message):
    """What run_command prints if Ctrl-C comes from now on, e.g. where the checkpoints are and how to resume."""
    INTERRUPTED["message"] = message


def run_command(main):
    """Run a script's main(): bad input ends as `error: ...` and exit status 1, never a traceback; Ctrl-C (or
    SIGTERM) as one line saying what was kept, and exit status 130."""
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


class ArgumentParser(HfArgumentParser):
    """A bad flag ends as any bad input does, with one `error:` line and exit status 1."""

    def error(self, message):
        sys.exit(f"error: {message} (see --help)")


def make_parser(doc, *settings):
    """The parser of a script's settings dataclasses, described by the first paragraph of its docstring."""
    return ArgumentParser(settings, description=doc.split("\n\n")[0], allow_abbrev=False)


def parse(parser, argv=None):
    """The settings dataclasses from `argv` (default sys.argv), each checked by its __post_init__."""
    *settings, rest = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True, look_for_args_file=False)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return settings


def check_positive(**flags):
    """An InputError naming the first flag whose value is set but not above zero."""
    for name, value in flags.items():
        if value is not None and value <= 0:
            raise InputError(f"--{name} {value} must be a positive number")


@dataclass
class ScoringSettings:
    """How a loaded model scores: the flags eval.py and classify.py share."""
    batch_tokens: int | None = HfArg(default=None, help="padded tokens per batch (unset: 65536 on a GPU, 8192 on "
                                                        "the CPU)")
    pad_to_multiple_of: int | None = HfArg(default=None, help="pad batch width to a multiple of this (unset: 64 on a "
                                                              "GPU, 8 on the CPU)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = HfArg(
        default="auto", help="auto: bfloat16 on a GPU, float32 on the CPU")
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = HfArg(
        default="auto", help="auto: flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa")
    device: str = HfArg(default="auto", help="auto, cpu, cuda, cuda:1, ...")
    no_progress: bool = HfArg(default=False, help="no progress bars")

    def __post_init__(self):
        check_positive(batch_tokens=self.batch_tokens, pad_to_multiple_of=self.pad_to_multiple_of)
