"""The CPU facts CleanAI reads: the channel multiple ONNX Runtime's kernels work in."""

from __future__ import annotations

import pytest

from cleanai import _platform


@pytest.mark.parametrize(("machine", "flags", "int8", "fp32"), [
    ("x86_64", {"avx2", "fma"}, 16, 8),               # int8 GEMM packs 16 columns; NCHWc blocks of 8 on AVX2
    ("x86_64", {"avx2", "avx512f", "avx512bw"}, 16, 16),  # NCHWc blocks of 16 with AVX-512
    ("aarch64", {"asimd"}, 8, 8),
])
def test_channel_multiple_follows_the_cpu_and_the_precision(monkeypatch, machine, flags, int8, fp32):
    monkeypatch.setattr(_platform.platform, "machine", lambda: machine)
    monkeypatch.setattr(_platform, "cpu_flags", lambda: frozenset(flags))
    assert (_platform.channel_multiple(int8=True), _platform.channel_multiple(int8=False)) == (int8, fp32)
