"""Memory measures of the benchmark: peak resident memory, and what a forward pass keeps for backward."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from vapt.errors import ConfigError


def saved_for_backward_mb(model: torch.nn.Module, step: Callable[[], None]) -> float:
    """MiB of the distinct storages that `step`'s forward pass saves for backward (parameters, buffers excluded)."""
    own = {t.untyped_storage().data_ptr() for t in itertools.chain(model.parameters(), model.buffers())}
    sizes: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            sizes[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(sizes.values()) / 2**20


class CpuPeakMemory:
    """Rise of this process's peak resident memory (MiB) since construction (Linux /proc)."""

    STATUS = Path("/proc/self/status")

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current resident size
        except OSError:
            pass
        self.start = self._read("VmRSS")

    def _read(self, field: str) -> int:
        match = re.search(rf"^{field}:\s+(\d+) kB", self.STATUS.read_text(), re.MULTILINE)
        if match is None:
            raise ConfigError(f"cannot measure CPU memory: no {field} in {self.STATUS}")
        return int(match.group(1))

    def rise_mb(self) -> float:
        """Peak resident memory minus the resident memory at construction, in MiB."""
        return max(self._read("VmHWM") - self.start, 0) / 1024
