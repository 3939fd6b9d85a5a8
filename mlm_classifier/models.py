"""Devices, dtypes, models and tokenizers, and torchrun: what loads and where it runs.

Everything a user names (a hub model, a local folder) is checked before anything heavy loads, and a hub or
folder that cannot serve it is one InputError. `load_tokenizer` makes [unused0] one token.
"""

import gc
import os

import torch

from .cli import InputError, error_reason
from .anchor import register_anchor


def resolve_device(device, local_rank=0):
    """`auto` picks the process's GPU when there is one, else the CPU; a GPU asked for but absent is an InputError."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: torch sees no GPU here; use --device cpu (or auto)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: there are only {torch.cuda.device_count()} GPU(s)")
    return resolved


def resolve_dtype(dtype, device):
    """`auto` is bfloat16 on a GPU and float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def resolve_attn_implementation(attn_implementation, device, dtype):
    """`auto` is flash_attention_2 when flash-attn is importable on a GPU in 16-bit, else sdpa."""
    if attn_implementation != "auto":
        return attn_implementation
    import importlib.util

    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    return "sdpa"


def batch_defaults(device, batch_tokens=None, pad_to_multiple_of=None):
    """(padded tokens per scoring batch, width multiple): 65,536 and 64 on a GPU, 8,192 and 8 on the CPU; a value
    given wins. Training batches take the same width multiple.

    Odd widths are several times slower on GPUs; on the CPU, padding is pure waste.
    """
    on_gpu = device.type == "cuda"
    return batch_tokens or (65536 if on_gpu else 8192), pad_to_multiple_of or (64 if on_gpu else 8)


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spm.model",
                   "sentencepiece.bpe.model")


def looks_local(name):
    """Whether a --model value means a folder rather than a hub id (`org/name`): it exists, or is written as a path."""
    return (os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1
            or (os.sep != "/" and os.sep in name))


def check_model_source(name, flag="--model", weights=True):
    """An InputError, before anything loads, for a local model folder that is missing or lacks a config,
    a tokenizer or (with `weights`) weights. Hub ids are checked when they load (see load_pretrained)."""
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
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        reason = error_reason(e)
        if looks_local(name):
            raise InputError(f"{flag} {name}: cannot be loaded ({reason})") from None
        raise InputError(f"{flag} {name}: not a local folder, and the model hub cannot serve it ({reason}); "
                         "give a local folder, or run where the hub is reachable") from None


def load_masked_lm(model_name, dtype, attn_implementation, device):
    """The model in eval mode; the dtype is passed explicitly, since transformers 5 otherwise keeps the checkpoint's."""
    from transformers import AutoModelForMaskedLM

    model = load_pretrained(AutoModelForMaskedLM, model_name, dtype=dtype, attn_implementation=attn_implementation)
    return model.to(device).eval()


def require_mask_token(tokenizer, model_name):
    """The tokenizer's [MASK] id, or an InputError: the whole method reads the MLM head at [MASK]."""
    if tokenizer.mask_token_id is None:
        raise InputError(f"--model {model_name}: the tokenizer has no mask token; this method needs a masked LM")
    return tokenizer.mask_token_id


def load_tokenizer(model_name, fast=True):
    """The model's tokenizer, with a mask token and [unused0] as one token (`register_anchor`); a fast one unless
    `fast=False` (its offsets locate a text to cut)."""
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, model_name)
    if fast and not tokenizer.is_fast:
        raise InputError(f"--model {model_name}: a fast tokenizer is needed (token offsets locate the text)")
    require_mask_token(tokenizer, model_name)
    register_anchor(tokenizer, model_name)
    return tokenizer


def max_positions(model_name, tokenizer, config=None):
    """The most tokens one prompt may have: the model's positions (from `config`, else `model_name`'s config), or
    the tokenizer's limit when smaller."""
    from transformers import AutoConfig

    config = config or load_pretrained(AutoConfig, model_name)
    limits = [getattr(config, "max_position_embeddings", None),
              tokenizer.model_max_length if tokenizer.model_max_length < 1e9 else None]  # 1e30 means "unset"
    limits = [n for n in limits if n]
    return min(limits) if limits else None


def check_max_length(model_name, tokenizer, max_length, config=None):
    """The most tokens one prompt may have: `max_length` when given, else the model's positions (max_positions;
    None when neither says). A `max_length` beyond the model's positions is an InputError."""
    positions = max_positions(model_name, tokenizer, config)
    if max_length and positions and max_length > positions:
        raise InputError(f"--max_length {max_length} is more than the {positions} positions of --model {model_name}")
    return max_length or positions


def hide_progress_bars():
    """--no_progress: transformers' own bars (loading weights) go too, not only ours."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def init_distributed(device):
    """(rank, world_size): under torchrun, start a process group (nccl on GPUs, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return int(os.environ.get("RANK", "0")), world


def end_distributed():
    """Under torchrun, leave together and tidily: free what still holds the process group (train.py's DDP
    wrapper), wait for every process, then close the group. Left to the interpreter's exit, or closed while
    another process is still talking, gloo can hang or abort ("terminate called without an active exception")."""
    if torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def gather_scores(scores):
    """Under torchrun, merge every process's {index: scores} so that each process holds them all."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return scores
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, scores)
    return {i: s for part in gathered for i, s in part.items()}


def current_shard():
    """(rank, world size) of this process under torchrun, (0, 1) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
