"""A runner whose timing is known in advance, shared by the benchmark tests."""

from __future__ import annotations

import time

import pytest
from torch import nn

from cleanai.runtime import TorchRunner


class WaitingRunner(TorchRunner):
    """A real TorchRunner that, before each call, either sleeps or computes for `ms` of CPU time."""

    def __init__(self, model: nn.Module, ms: float, busy: bool, name: str | None = None) -> None:
        super().__init__(model, name=name or ("busy" if busy else "sleeping"))
        self.ns, self.busy = int(ms * 1e6), busy

    def __call__(self, inputs):
        if self.busy:
            end = time.process_time_ns() + self.ns
            while time.process_time_ns() < end:
                pass
        else:
            time.sleep(self.ns / 1e9)
        return super().__call__(inputs)


@pytest.fixture()
def waiting_runner() -> type[WaitingRunner]:
    """Builds runners that sleep (wall time >> CPU time, deterministically) or compute before each call."""
    return WaitingRunner
