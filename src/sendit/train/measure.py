"""Honest measurement: wall time, peak memory, parameter counts, sizes on disk, hardware."""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from sendit.train.device import cpu_has_amx


def count_parameters(model: nn.Module) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / max(total, 1)}


def size_mb(paths: list[Path]) -> float:
    return sum(Path(p).stat().st_size for p in paths) / 2**20


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def resident_mb(device: torch.device) -> float:
    """The memory in use now, after giving back what earlier work freed: CUDA's allocated bytes; on CPU the RSS
    after a garbage collection and glibc's `malloc_trim(0)`, which returns freed heap pages to the system. Taken
    before a training loads its model, it is the baseline that the training's peak is measured from: without the
    trim, memory an earlier training freed but the allocator kept would count as this one's."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated() / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS as it is
        pass
    return _rss_kb("VmRSS") / 1024


class PeakMemory:
    """Peak memory of a block: CUDA max allocated on GPU; on CPU the process's peak RSS (VmHWM), reset at entry
    through /proc/self/clear_refs so each block gets its own peak. Both counters are one per process, so a block
    opened inside another (an epoch of `fit` inside a tune trial) hands the peak it resets to the blocks around
    it. `delta_mb` is the peak over the memory in use when the block started (the loaded model)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.peak_mb = self.start_mb = 0.0

    def __enter__(self) -> PeakMemory:
        _raise_peaks(_OPEN, self._peak_since_reset())
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = torch.cuda.memory_allocated() / 2**20
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            except OSError:
                pass
            self.start_mb = _rss_kb("VmRSS") / 1024
        self.peak_mb = self.start_mb
        _OPEN.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _OPEN.remove(self)
        _raise_peaks([*_OPEN, self], self._peak_since_reset())

    def _peak_since_reset(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        return _rss_kb("VmHWM") / 1024

    @property
    def delta_mb(self) -> float:
        return max(self.peak_mb - self.start_mb, 0.0)


_OPEN: list[PeakMemory] = []  # the blocks open now, outermost first


def _raise_peaks(blocks: list[PeakMemory], peak_mb: float) -> None:
    for block in blocks:
        block.peak_mb = max(block.peak_mb, peak_mb)


class Timer:
    def __init__(self, device: torch.device | None = None):
        self.cuda = device is not None and device.type == "cuda"
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        if self.cuda:
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0


def hardware(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "device": device.type,
        "amx_bf16": cpu_has_amx(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
