"""PerformanceBenchmark: accuracy, size, latency, throughput, params and MACs of one runner, measured one way.

Method (DESIGN.md "Benchmark method"): threads are fixed and recorded; accuracy covers the whole
split unless `max_eval_batches` says otherwise (the row then says so); latency is `runs` timed calls
with `time.perf_counter_ns` after `warmup` untimed ones, with the garbage collector paused; size is
the bytes of the saved artifact divided by 1e6 (decimal megabytes).

Each timed call also records the CPU time the process spent (`time.process_time_ns`). With one
thread that is the call's latency minus the time other processes took the core away (not their
pressure on shared caches and memory): on a shared machine it is the steadier number to compare
single-thread variants by (wall time stays the one a user waits for). With more threads it adds up
every thread's work, spinning included, so it is not a latency.

Timing sanity: a row whose timed calls spent much longer on the clock than on the CPU (the process
waited: preempted or blocked), or that used more threads than the machine had idle cores (by the 1-min
load average, this process's own share taken out), carries the reason in `timing_warning`; `compare`
prints it beside the number and flags every speed-up computed from such a row.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cleanai._batches import batch_len, is_tensor_tuple, split_batch
from cleanai._finite import check_finite
from cleanai._platform import cpu_flags, cpu_name, torch_threads
from cleanai.errors import DataError, InputError
from cleanai.metrics import get_metric
from cleanai.runtime import OrtRunner, Runner, artifact_bytes, as_runner, checked_logits, evaluate


class BenchmarkConfig(BaseModel):
    """How to measure: batch sizes, warm-up and timed runs, threads, and how much of the split to evaluate."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = 1
    throughput_batch_size: int = 64
    warmup: int = 10
    runs: int = 100
    throughput_runs: int = 10
    threads: int | None = None
    max_eval_batches: int | None = None
    seed: int = 0
    progress: bool = True

    @field_validator("batch_size", "throughput_batch_size", "runs")
    @classmethod
    def _positive(cls, value: int, info: Any) -> int:
        if value < 1:
            raise InputError(f"{info.field_name} must be an integer >= 1, got {value}")
        return value

    @field_validator("warmup", "throughput_runs")
    @classmethod
    def _non_negative(cls, value: int, info: Any) -> int:
        if value < 0:
            raise InputError(f"{info.field_name} must be an integer >= 0, got {value}")
        return value

    @field_validator("threads", "max_eval_batches")
    @classmethod
    def _positive_or_none(cls, value: int | None, info: Any) -> int | None:
        if value is not None and value < 1:
            raise InputError(f"{info.field_name} must be None or an integer >= 1, got {value}")
        return value


class Measurement(BaseModel):
    """One row of the results table; rows are JSON, and tables, plots and reports are made from rows.

    Units: latencies in ms per call at `batch_size`; `throughput` in samples/s at
    `throughput_batch_size` (None if not measured); `size_mb` = artifact bytes / 1e6; `macs` per
    sample (counted on the first sample; None if unknown); `eval_whole_split` False means accuracy
    was measured on the first `eval_samples` samples only. `quant_sqnr_db` and `quant_top1_agreement`
    say how close a quantized runner's outputs came to fp32's on inputs its calibration did not see
    (`cleanai.quantization.quantize` checks every artifact; None for runners it did not build).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    accuracy: float
    metrics: dict[str, float]
    size_mb: float
    latency_ms_mean: float
    latency_ms_std: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_runs: int
    latency_cpu_ms_p50: float | None = None  # median process CPU ms per call (see the module docstring)
    load_average: float | None = None  # the machine's 1-min load average right after the timed calls
    timing_warning: str | None = None  # why the latencies may not mean what they say (see `timing_warning`)
    rounds: int = 1  # interleaved rounds the latencies are medians of (`compare_runners`)
    latency_spread: float | None = None  # run-to-run noise: (max - min) / median of the rounds' p50s (rounds > 1)
    speedup: float | None = None  # median over rounds of speedup_baseline's p50 / this row's p50 (wall time)
    speedup_cpu: float | None = None  # the same from process CPU time per call
    speedup_baseline: str | None = None
    throughput: float | None
    params: int | None
    macs: int | None
    batch_size: int
    throughput_batch_size: int
    threads: int
    backend: str
    provider: str | None
    precision: str | None = None  # what the runtime executes, as the runner reports it (OpenVINO: f32, bf16, int8)
    eval_samples: int
    eval_whole_split: bool
    versions: dict[str, str]
    cpu: str
    cpu_count: int
    cpu_features: str | None = None  # space-separated instruction sets that decide int8/fp32 kernel speed (see `environment`)
    quant_sqnr_db: float | None = None  # quantized outputs vs fp32 (dB), from the runner's `quant_check`
    quant_top1_agreement: float | None = None  # share of samples whose top-1 class the quantized runner kept
    timestamp: str


def _resize(inputs: Any, n: int) -> Any:
    """The first `n` samples of a batch; a shorter batch is repeated until it has `n`. Tokenized text loses the
    columns that only pad other rows (what the tokenizer gives for these rows alone), so a batch-1 latency is
    one query's, not one query padded to the longest of its batch."""
    if isinstance(inputs, Mapping):
        out = {k: _resize(v, n) for k, v in inputs.items()}
        mask = out.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            used = mask.bool().any(0)
            out = {k: v[:, used] if isinstance(v, torch.Tensor) and v.shape[:2] == mask.shape else v
                   for k, v in out.items()}
        return out
    if is_tensor_tuple(inputs):
        return type(inputs)(_resize(v, n) for v in inputs)
    reps = -(-n // batch_len(inputs))
    if isinstance(inputs, torch.Tensor):
        return (inputs.repeat(reps, *([1] * (inputs.dim() - 1))) if reps > 1 else inputs)[:n]
    return (list(inputs) * reps)[:n]


def _time_calls(fn: Callable[[Any], Any], inputs: Any, warmup: int, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and process-CPU nanoseconds of each of `runs` calls after `warmup` untimed ones; GC paused meanwhile."""
    for _ in range(warmup):
        fn(inputs)
    wall = np.empty(runs, dtype=np.int64)
    cpu = np.empty(runs, dtype=np.int64)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(runs):
            start_cpu, start = time.process_time_ns(), time.perf_counter_ns()
            fn(inputs)
            wall[i] = time.perf_counter_ns() - start
            cpu[i] = time.process_time_ns() - start_cpu
    finally:
        if gc_was_enabled:
            gc.enable()
    return wall, cpu


# A timed call whose wall time exceeds its process CPU time by this factor mostly waited (summed over the calls).
WALL_CPU_FACTOR = 2.0
# Threads may exceed the idle cores by this much before a row is flagged (load averages are smoothed estimates).
IDLE_CORE_SLACK = 0.5


def timing_warning(wall_ns: np.ndarray, cpu_ns: np.ndarray, threads: int, cores: int,
                   load: float | None) -> str | None:
    """Why timings may mislead, or None: wall time `WALL_CPU_FACTOR`x the CPU time, or `threads` above the idle cores.

    Idle cores = `cores` minus the 1-min `load` average not due to this process (its CPU time over wall time
    during the timed calls, at most `threads`, is taken as its own share).
    """
    wall, cpu = float(np.sum(wall_ns)), max(float(np.sum(cpu_ns)), 1.0)
    reasons = []
    if wall > WALL_CPU_FACTOR * cpu:
        reasons.append(f"wall time was {wall / cpu:.1f}x the process CPU time per call (the process waited: "
                       "preempted by other processes or blocked)")
    if load is not None and wall > 0:
        own = min(cpu / wall, threads)
        idle = cores - max(0.0, load - own)
        if threads > idle + IDLE_CORE_SLACK:
            reasons.append(f"{threads} thread(s) but only {max(idle, 0.0):.1f} of {cores} cores idle (1-min load "
                           f"average {load:.2f}, of which about {own:.1f} this process)")
    return "; ".join(reasons) or None


def _weights(runner: Runner) -> nn.Module | dict[str, Any]:
    """What a runner computes with: a torch module (parameters and buffers) or an ONNX graph's initializers, less
    one-value infinite ones: fill values such as a transformer's attention-mask -inf, not broken weights."""
    inner = getattr(runner, "inner", runner)  # a TextClassifierRunner wraps the runner that holds the weights
    model = getattr(inner, "model", None)
    if isinstance(model, nn.Module):
        return model
    if isinstance(inner, OrtRunner):
        from onnx import numpy_helper

        arrays = {t.name: numpy_helper.to_array(t) for t in inner.onnx_model().graph.initializer}
        return {name: a for name, a in arrays.items() if not (a.size == 1 and np.isinf(a).all())}
    return {}


# CPU flags that decide which fp32/int8 kernels run: the same model name ("AMD EPYC") may or may not have them.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimddp",
               "i8mm", "sve")


def environment() -> dict[str, Any]:
    """The machine a number was measured on: CPU model, its speed-deciding instruction sets, usable cores,
    and library versions."""
    versions = {"python": platform.python_version()}
    for package in ("cleanai", "torch", "onnxruntime", "openvino", "nncf", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    features = " ".join(f for f in SPEED_FLAGS if f in cpu_flags())
    return {"cpu": cpu_name(), "cpu_count": _usable_cores(), "cpu_features": features, "versions": versions}


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


class PerformanceBenchmark:
    """Measures one runner on one data split; `run()` returns a `Measurement` row.

    `data` is a DataLoader (or a Dataset, batched by `throughput_batch_size`) yielding
    `(inputs, targets)`; `runner` may be a bare `nn.Module`, wrapped in a `TorchRunner`.
    """

    def __init__(
        self,
        runner: Runner | nn.Module,
        data: DataLoader | Dataset,
        name: str | None = None,
        config: BenchmarkConfig | None = None,
        metrics: Sequence[str] = ("accuracy",),
    ) -> None:
        self.runner = as_runner(runner)
        self.config = config or BenchmarkConfig()
        self.name = name or self.runner.name
        self.metrics = tuple(dict.fromkeys(("accuracy", *metrics)))
        for m in self.metrics:  # fail now, listing the valid names, not after the accuracy pass
            get_metric(m)
        if isinstance(data, DataLoader):
            self.loader: Iterable[Any] = data
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.loader = DataLoader(data, batch_size=self.config.throughput_batch_size, shuffle=False)
        else:
            raise DataError(f"data must be a DataLoader or a Dataset, got {type(data).__name__}")
        self._first: Any = None  # the first batch's inputs: what every timed call is made of

    def run(self) -> Measurement:
        """Measure everything and return the row; torch's thread count is restored afterwards."""
        cfg = self.config
        threads = cfg.threads or torch.get_num_threads()
        torch.manual_seed(cfg.seed)
        check_finite(_weights(self.runner), f"the weights of {self.name!r}", hint="this row measures a broken model")
        with torch_threads(None):
            self.runner.set_threads(threads)
            evaluation = evaluate(self.runner, self.loader, self.metrics, max_batches=cfg.max_eval_batches,
                                  progress=cfg.progress, name=self.name)
            scores, self._first = evaluation.metrics, evaluation.first_inputs
            timing = self._time(threads)
            size_mb = artifact_bytes(self.runner) / 1e6
            macs = self._macs(_resize(self._first, 1))
            params = self.runner.num_params()
        return Measurement(
            name=self.name,
            accuracy=scores["accuracy"],
            metrics=scores,
            size_mb=size_mb,
            **timing,
            params=params,
            macs=macs,
            batch_size=cfg.batch_size,
            throughput_batch_size=cfg.throughput_batch_size,
            threads=threads,
            backend=self.runner.backend,
            provider=self.runner.provider,
            precision=getattr(self.runner, "precision", None),
            eval_samples=evaluation.samples,
            eval_whole_split=evaluation.whole_split,
            quant_sqnr_db=getattr(getattr(self.runner, "quant_check", None), "sqnr_db", None),
            quant_top1_agreement=getattr(getattr(self.runner, "quant_check", None), "top1_agreement", None),
            **environment(),
            timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

    def time(self) -> dict[str, Any]:
        """Only the timing fields of a row (latencies, throughput, load, warning), on the batch `run` timed.

        What `compare_runners` repeats in its interleaved rounds; before any `run`, the first batch is read.
        """
        cfg = self.config
        threads = cfg.threads or torch.get_num_threads()
        if self._first is None:
            self._first = split_batch(next(iter(self.loader)))[0]
        with torch_threads(None):
            self.runner.set_threads(threads)
            return self._time(threads)

    def _time(self, threads: int) -> dict[str, Any]:
        """Latency at `batch_size` and throughput at `throughput_batch_size` on the first batch, resized."""
        cfg = self.config
        inputs = _resize(self._first, cfg.batch_size)
        checked_logits(self.runner, inputs, self.name)
        wall_ns, cpu_ns = _time_calls(self.runner, inputs, cfg.warmup, cfg.runs)
        lat, lat_cpu = wall_ns / 1e6, cpu_ns / 1e6
        throughput = None
        if cfg.throughput_runs:
            big = _resize(self._first, cfg.throughput_batch_size)
            checked_logits(self.runner, big, self.name)  # one untimed call: checks the output, warms up the shapes
            big_wall, big_cpu = _time_calls(self.runner, big, 0, cfg.throughput_runs)
            throughput = cfg.throughput_batch_size * cfg.throughput_runs / (big_wall.sum() / 1e9)
            wall_ns, cpu_ns = np.concatenate([wall_ns, big_wall]), np.concatenate([cpu_ns, big_cpu])
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {
            "latency_ms_mean": float(lat.mean()),
            "latency_ms_std": float(lat.std(ddof=1)) if len(lat) > 1 else 0.0,
            "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p90": float(np.percentile(lat, 90)),
            "latency_ms_p99": float(np.percentile(lat, 99)),
            "latency_runs": len(lat),
            "latency_cpu_ms_p50": float(np.percentile(lat_cpu, 50)),
            "throughput": throughput,
            "load_average": load,
            "timing_warning": timing_warning(wall_ns, cpu_ns, threads, _usable_cores(), load),
        }

    def _macs(self, sample: Any) -> int | None:
        """MACs per sample (counted on a batch of one); a counter failure is a warning, not a lost benchmark."""
        try:
            return self.runner.macs(sample)
        except Exception as exc:  # noqa: BLE001 - thop can fail on exotic modules; the rest of the row stands
            warnings.warn(f"could not count MACs of {self.name!r}: {type(exc).__name__}: {exc}", stacklevel=2)
            return None


def benchmark(
    runner: Runner | nn.Module,
    data: DataLoader | Dataset,
    *,
    name: str | None = None,
    config: BenchmarkConfig | None = None,
    metrics: Sequence[str] = ("accuracy",),
) -> Measurement:
    """Measure one runner on one split: `PerformanceBenchmark(...).run()` as a plain function."""
    return PerformanceBenchmark(runner, data, name=name, config=config, metrics=metrics).run()
