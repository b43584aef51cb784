"""What CPU this is: its name and the feature flags Linux reports (read once from /proc/cpuinfo); torch's thread
count, set for a block and given back after it."""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from pathlib import Path

import torch


@functools.cache
def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    """The CPU's model name (the machine type where /proc/cpuinfo does not say)."""
    name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return name or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags as Linux reports them (empty where /proc/cpuinfo does not exist)."""
    return frozenset(next((line.split(":", 1)[1].split() for line in _cpuinfo()
                           if line.startswith(("flags", "Features"))), []))


def is_arm() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64")


def channel_multiple(int8: bool) -> int:
    """The channel count ONNX Runtime's CPU kernels work in on this machine, so a pruned layer that keeps a multiple
    of it wastes no padded lanes: on x86 the int8 GEMM packs output channels in 16s, and fp32 convolutions run in
    NCHWc blocks of 16 with AVX-512, else 8 (AVX2). Other CPUs: 8, not measured. See benchmarks/channel_multiple.py."""
    if platform.machine().lower() in ("x86_64", "amd64") and (int8 or "avx512f" in cpu_flags()):
        return 16
    return 8


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on `n` torch threads (None: leave the count as it is), then restore the caller's count, also
    when the block sets its own or raises."""
    caller = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(caller)
