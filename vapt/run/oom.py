"""Out-of-memory on CPU or GPU as one line: the sizes that ran out and what to lower.

PyTorch reports an allocation the CPU cannot satisfy as `RuntimeError: DefaultCPUAllocator: can't
allocate memory: you tried to allocate N bytes`, and one the GPU cannot satisfy as
`torch.OutOfMemoryError: CUDA out of memory. Tried to allocate X GiB ...` (a RuntimeError subclass).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vapt.errors import VaptError

OUT_OF_MEMORY = "out_of_memory"  # a run record's failure kind (retried when the command runs again)
_MARKERS = ("can't allocate memory", "out of memory", "cannot allocate memory")


class OutOfMemory(VaptError):
    """A run ran out of CPU or GPU memory; the message names the sizes and what to lower."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is PyTorch's out-of-memory error (CUDA's OutOfMemoryError or the CPU allocator's)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _MARKERS)


def requested(err: BaseException) -> str:
    """The allocation that failed, as PyTorch reported it (`40.0 GiB`), or '' when it gave none."""
    text = str(err)
    found = re.search(r"allocate (\d+) bytes", text)
    if found:
        return f"{int(found.group(1)) / 2**30:.3g} GiB"
    found = re.search(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]i?B)", text)
    return found.group(1) if found else ""


def tokens_per_image(model: Any, num_tokens: int) -> str:
    """`N tokens per image (P prefix + T prompts + Q patches)` of a prompted ViT, '' for other models."""
    try:
        prefix = int(model.num_prefix_tokens)
        patches = int(model.backbone.patch_embed.num_patches)
    except (AttributeError, TypeError):
        return ""
    return (f"{prefix + num_tokens + patches} tokens per image ({prefix} prefix + {num_tokens} prompts + "
            f"{patches} patches)")


def out_of_memory_message(err: BaseException, batch_size: int, num_tokens: int | None,
                          image_size: int | None, model: Any = None, where: str = "") -> str:
    """One line: where memory ran out, the allocation, the run's sizes, and the options that lower them."""
    sizes = [f"batch size {batch_size}"]
    if image_size:
        sizes.append(f"{image_size} px images")
    if model is not None:
        tokens = tokens_per_image(model, num_tokens or 0)
        if tokens:
            sizes.append(tokens)
    elif num_tokens:
        sizes.append(f"{num_tokens} prompts per block")
    lower = ["--batch-size"] + (["--num-tokens"] if num_tokens else [])
    wanted = requested(err)
    alloc = f" (an allocation of {wanted} failed)" if wanted else ""
    gpu = isinstance(err, torch.OutOfMemoryError) or "cuda" in str(err).lower()
    return (f"out of {'GPU' if gpu else 'CPU'} memory{' ' + where if where else ''}{alloc} "
            f"with {', '.join(sizes)}; lower {' or '.join(lower)}")


__all__ = ["OUT_OF_MEMORY", "OutOfMemory", "is_out_of_memory", "out_of_memory_message", "requested",
           "tokens_per_image"]
