"""Devices, dtypes, models and tokenizers, and torchrun. A model a user names is checked before anything heavy
loads; a hub or folder that cannot serve it is one InputError."""

import gc
import os
from dataclasses import dataclass

import torch

from .anchor import ANCHOR, vocabulary_anchor_id
from .data import error_reason, say
from .errors import InputError


def attention_for(attn_implementation, device, dtype):
    """`auto` is flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa."""
    if attn_implementation != "auto":
        return attn_implementation
    import importlib.util

    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


@dataclass
class Runtime:
    """Where and how a model scores, and this process's share under torchrun (`rank` of `world`; `shard` is both)."""
    device: torch.device
    dtype: torch.dtype
    attn_implementation: str
    batch_tokens: int
    pad_to_multiple_of: int
    rank: int = 0
    world: int = 1
    progress: bool = True
    shard: tuple = (0, 1)
    description: dict = None  # what a result records of where it was made

    @classmethod
    def resolve(cls, settings=None, distributed=True, **values):
        """The runtime of ScoringSettings (or keyword values named as its fields); under torchrun a process group
        starts. Widths a multiple of 64 on a GPU (odd ones are slow there), 8 on the CPU (padding is pure waste)."""
        given = {**(vars(settings) if settings is not None else {}), **values}
        device, local_rank = given.get("device", "auto"), int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        else:
            try:
                device = torch.device(device)
            except RuntimeError:
                raise InputError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise InputError(f"--device {device}: torch sees no GPU here; use --device cpu (or auto)")
            if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
                raise InputError(f"--device {device}: there are only {torch.cuda.device_count()} GPU(s)")
        on_gpu, dtype = device.type == "cuda", given.get("dtype", "auto")
        dtype = (torch.bfloat16 if on_gpu else torch.float32) if dtype == "auto" else getattr(torch, dtype)
        world = int(os.environ.get("WORLD_SIZE", "1")) if distributed else 1
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if on_gpu else "gloo")
        rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
        if given.get("no_progress"):  # transformers' own bars (loading weights) go too, not only ours
            from transformers.utils import logging

            logging.disable_progress_bar()
        attention = attention_for(given.get("attn_implementation", "auto"), device, dtype)
        description = {"dtype": str(dtype).removeprefix("torch."), "device": str(device),
                       "attn_implementation": attention, "processes": world}
        return cls(device, dtype, attention, given.get("batch_tokens") or (65536 if on_gpu else 8192),
                   given.get("pad_to_multiple_of") or (64 if on_gpu else 8), rank, world,
                   rank == 0 and not given.get("no_progress"), (rank, world), description)


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spm.model",
                   "sentencepiece.bpe.model")


def looks_local(name):
    """Whether a --model value means a folder rather than a hub id (`org/name`): it exists, or is written as a path."""
    return (os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1
            or (os.sep != "/" and os.sep in name))


def check_model_source(name, flag="--model", weights=True):
    """An InputError, before anything loads, for a local model folder that is missing or lacks a config, a tokenizer
    or (with `weights`) weights. Hub ids are checked when they load (load_pretrained)."""
    if not looks_local(name):
        return
    if not os.path.isdir(name):
        raise InputError(f"{flag} {name}: no such folder (a hub model is named as org/name)")
    files = set(os.listdir(name))
    missing = [what for what, needed in (("config.json", ("config.json",)), ("tokenizer files", TOKENIZER_FILES),
                                         ("weights", WEIGHT_FILES if weights else ("config.json",)))
               if not files & set(needed)]
    if missing:
        raise InputError(f"{flag} {name}: the folder has no {', no '.join(missing)}; give a folder that "
                         "save_pretrained wrote for both the model and its tokenizer")


def load_pretrained(loader, name, flag="--model", **kwargs):
    """`loader.from_pretrained(name, **kwargs)`, with a hub or folder that cannot serve it as one InputError."""
    from safetensors import SafetensorError

    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:  # SafetensorError: a weights file cut short or not one
        reason = error_reason(e)
        if looks_local(name):
            raise InputError(f"{flag} {name}: cannot be loaded ({reason})") from None
        raise InputError(f"{flag} {name}: not a local folder, and the model hub cannot serve it ({reason}); "
                         "give a local folder, or run where the hub is reachable") from None


def load_masked_lm(model_name, runtime, flag="--model"):
    """The model in eval mode, in the runtime's dtype (else transformers 5 keeps the checkpoint's) and attention."""
    from transformers import AutoModelForMaskedLM

    model = load_pretrained(AutoModelForMaskedLM, model_name, flag, dtype=runtime.dtype,
                            attn_implementation=runtime.attn_implementation)
    return model.to(runtime.device).eval()


def require_mask_token(tokenizer, model_name, flag="--model"):
    """The tokenizer's [MASK] id, or an InputError: the whole method reads the MLM head at [MASK]."""
    if tokenizer.mask_token_id is None:
        raise InputError(f"{flag} {model_name}: the tokenizer has no mask token; this method needs a masked LM")
    return tokenizer.mask_token_id


def register_anchor(tokenizer, model_name, flag="--model"):
    """Check the tokenizer writes the answer slot, `[unused0] [MASK]`: it has a mask token, and [unused0] as one token,
    the vocabulary's own; returns its id. BERT's pre-tokenizer splits it into `[`, `unused`, `##0`, `]`: it is then
    registered as a special, unnormalized added token with the same id, so there is no new embedding and lowercasing
    cannot touch it."""
    from tokenizers import AddedToken

    require_mask_token(tokenizer, model_name, flag)
    anchor_id = vocabulary_anchor_id(tokenizer, f"{flag} {model_name}")
    probe = f"Answer: {ANCHOR} {tokenizer.mask_token}"
    if anchor_id in tokenizer(probe, add_special_tokens=False)["input_ids"]:
        return anchor_id
    tokenizer.add_tokens([AddedToken(ANCHOR, special=True, normalized=False)], special_tokens=True)
    if anchor_id not in tokenizer(probe, add_special_tokens=False)["input_ids"]:
        raise InputError(f"{flag} {model_name}: the tokenizer splits {ANCHOR} into pieces, even registered as a "
                         f"special token (id {anchor_id}); the answer slot needs it as one token")
    say(f"note: {model_name}: the tokenizer split {ANCHOR} into pieces although its vocabulary has it "
        f"(id {anchor_id}); registered it as one special token with that id (no new embedding)")
    return anchor_id


def load_tokenizer(model_name, fast=True, flag="--model"):
    """The model's tokenizer, with a mask token and [unused0] as one token; fast unless `fast=False`."""
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, model_name, flag)
    if fast and not tokenizer.is_fast:
        raise InputError(f"{flag} {model_name}: a fast tokenizer is needed (token offsets locate the text)")
    register_anchor(tokenizer, model_name, flag)
    return tokenizer


def max_positions(model_name, tokenizer, config=None):
    """The most tokens one prompt may have: the model's positions or the tokenizer's limit (None if neither says)."""
    from transformers import AutoConfig

    config = config or load_pretrained(AutoConfig, model_name)
    limits = [getattr(config, "max_position_embeddings", None),
              tokenizer.model_max_length if tokenizer.model_max_length < 1e9 else None]  # 1e30 means "unset"
    limits = [n for n in limits if n]
    return min(limits) if limits else None


def check_max_length(model_name, tokenizer, max_length, config=None):
    """`max_length` when given, else max_positions; one beyond the model's positions is an InputError."""
    positions = max_positions(model_name, tokenizer, config)
    if max_length and positions and max_length > positions:
        raise InputError(f"--max_length {max_length} is more than the {positions} positions of --model {model_name}")
    return max_length or positions


def end_distributed():
    """Under torchrun, free what still holds the process group (train.py's DDP wrapper), wait for every process,
    then close the group: left to the interpreter's exit, gloo can hang or abort."""
    if torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

