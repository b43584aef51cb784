"""`choose_runtime`: build the deployable variants of a model, check each against fp32, time them, keep the fastest.

Which runtime wins depends on the CPU, the batch size and the model (DESIGN.md: OpenVINO ran a QDQ
int8 file 2.9x faster than ONNX Runtime at batch 64 on a Xeon with AMX, ONNX Runtime led at batch 1),
so it is measured on the machine at hand, never assumed:

    choice = choose_runtime(model, test_loader, calib=train_loader, config=BenchmarkConfig(batch_size=64, threads=2))
    choice.runner          # the fastest candidate whose outputs passed the parity check
    print(choice.table())  # every candidate: parity, latency, run-to-run noise, and why it was (not) chosen

Candidates: torch eager fp32 and `torch.compile` (inductor), ONNX Runtime fp32 and int8, OpenVINO fp32,
bf16 (only on a CPU with AVX512-BF16 or AMX-BF16) and int8; one that cannot be built or run (no OpenVINO,
an operator a runtime lacks, quantization refused, a model inductor cannot compile) is listed with the
reason and the others remain. Each is checked against the
fp32 model on the first `quant.check_batches` batches of `data` (output SQNR and top-1 agreement,
the thresholds of `quant`); all are timed by `compare_runners` in interleaved rounds at the batch
size and threads of `config`. The choice is the passing candidate with the lowest median latency; a
candidate failing parity is never chosen.
"""

from __future__ import annotations

import itertools
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from cleanai._batches import split_batch
from cleanai.benchmark.compare import compare_runners
from cleanai.benchmark.performance import BenchmarkConfig, Measurement
from cleanai.errors import CleanAIError
from cleanai.quantization import QuantCheck, QuantConfig, quantize
from cleanai.quantization.check import make_probe, measure
from cleanai.runtime import OpenVinoRunner, OrtRunner, Runner, TorchRunner


class RuntimeChoiceError(CleanAIError, RuntimeError):
    """No candidate runtime could be built, or none kept its outputs close enough to fp32's."""


@dataclass
class RuntimeChoice:
    """What `choose_runtime` measured: every candidate's row and parity check, and the chosen runner."""

    runner: Runner
    rows: list[Measurement]
    parity: dict[str, QuantCheck]
    passed: dict[str, bool]
    skipped: dict[str, str] = field(default_factory=dict)  # candidate -> why it was not built

    @property
    def chosen(self) -> Measurement:
        return next(r for r in self.rows if r.name == self.runner.name)

    def noise(self, row: Measurement) -> float:
        """The run-to-run noise a gap between `row` and the chosen row must exceed: the larger of their spreads."""
        return max(row.latency_spread or 0.0, self.chosen.latency_spread or 0.0)

    def verdict(self, row: Measurement) -> str:
        """Why `row` was or was not chosen, in a few words."""
        if row.name == self.runner.name:
            return "chosen (fastest that passes parity)"
        if not self.passed[row.name]:
            return "fails parity"
        gap = row.latency_ms_p50 / self.chosen.latency_ms_p50 - 1
        return (f"+{gap:.0%} slower, within the {self.noise(row):.0%} noise" if gap <= self.noise(row)
                else f"+{gap:.0%} slower")

    def table(self) -> str:
        """Plain-text table of every candidate (and every skipped one, with its reason)."""
        lines = [f"{'candidate':<22} {'precision':<9} {'parity':<24} {'acc %':>7} {'p50 ms':>9} {'noise':>6}  verdict"]
        for r in self.rows:
            check = self.parity[r.name]
            agreement = "-" if check.top1_agreement is None else f"{check.top1_agreement:.1%}"
            parity = f"{check.sqnr_db:.1f} dB, top-1 {agreement}"
            lines.append(f"{r.name:<22} {r.precision or '-':<9} {parity:<24} {100 * r.accuracy:>7.2f} "
                         f"{r.latency_ms_p50:>9.3f} {r.latency_spread or 0:>6.1%}  {self.verdict(r)}")
        lines += [f"{name:<22} not built: {reason}" for name, reason in self.skipped.items()]
        first = self.rows[0]
        lines.append(f"batch {first.batch_size}, {first.threads} thread(s), medians of {first.rounds} interleaved "
                     f"round(s); {first.cpu} ({first.cpu_features})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.runner.name,
                "candidates": [{"name": r.name, "backend": r.backend, "precision": r.precision,
                                "parity": self.parity[r.name].to_dict(), "passes_parity": self.passed[r.name],
                                "accuracy": r.accuracy, "latency_ms_p50": r.latency_ms_p50,
                                "latency_spread": r.latency_spread, "verdict": self.verdict(r)} for r in self.rows],
                "skipped": self.skipped}


def _build(builders: dict[str, Callable[[], Runner]]) -> tuple[dict[str, Runner], dict[str, str]]:
    """Run each builder; a CleanAIError (runtime missing, operator lacking, quantization refused) skips that one."""
    built, skipped = {}, {}
    for name, make in builders.items():
        try:
            runner = make()
        except CleanAIError as exc:
            skipped[name] = str(exc).splitlines()[0]
            continue
        runner.name = name
        built[name] = runner
    return built, skipped


def runtime_candidates(model: nn.Module, calib: Iterable[Any], example_inputs: Any, quant: QuantConfig,
                       workdir: str | Path) -> tuple[dict[str, Runner], dict[str, str]]:
    """Every runtime x precision variant of `model` this machine can run, by name, and those skipped with why.

    int8 variants come from `quantize` (so each is checked against fp32 there too) with `quant`'s
    settings (ONNX Runtime in `quant.mode`, static or dynamic; OpenVINO static); the fp32 graph is the
    one the ONNX Runtime quantizer exported.
    """
    workdir = Path(workdir)
    ort_dir = workdir / "onnxruntime"

    def quantized(backend: str) -> Runner:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the parity check below measures what these warnings would say
            config = quant.model_copy(update={"backend": backend, **({"mode": "static"} if backend == "openvino"
                                                                      or quant.mode not in ("static", "dynamic") else {})})
            return quantize(model, QuantConfig.model_validate(config.model_dump()), calib=calib,
                            example_inputs=example_inputs, workdir=ort_dir if backend == "onnxruntime" else None)

    ort_int8 = _build({"onnxruntime int8": lambda: quantized("onnxruntime")})  # exports ort_dir/fp32.onnx

    def fp32_graph() -> bytes:
        fp32 = ort_dir / "fp32.onnx"
        return fp32.read_bytes() if fp32.is_file() else OrtRunner.from_model(model, example_inputs).onnx_model() \
            .SerializeToString()

    built, skipped = _build({
        "torch fp32": lambda: TorchRunner(model),
        "torch compile": lambda: TorchRunner(model, compile=True),  # compiled on its first call (the parity check)
        "onnxruntime fp32": lambda: OrtRunner(fp32_graph()),
        "openvino fp32": lambda: OpenVinoRunner(fp32_graph()),
        "openvino bf16": lambda: OpenVinoRunner(fp32_graph(), precision="bf16"),  # refused without the CPU flags
        "openvino int8": lambda: quantized("openvino"),
    })
    built.update(ort_int8[0])
    skipped.update(ort_int8[1])
    order = ["torch fp32", "torch compile", "onnxruntime fp32", "onnxruntime int8", "openvino fp32", "openvino bf16",
             "openvino int8"]
    return {n: built[n] for n in order if n in built}, {n: skipped[n] for n in order if n in skipped}


def choose_runtime(model: nn.Module, data: DataLoader, calib: Iterable[Any], *, config: BenchmarkConfig | None = None,
                   quant: QuantConfig | None = None, example_inputs: Any = None, repeats: int = 3,
                   show: bool = False) -> RuntimeChoice:
    """Build every candidate runtime for `model`, check each against fp32 on `data`, time them interleaved at
    `config`'s batch size and threads, and return the fastest that passes with the table of all."""
    quant = quant or QuantConfig.auto()
    check_inputs = [split_batch(b)[0] for b in itertools.islice(iter(data), quant.check_batches)]
    if not check_inputs:
        raise RuntimeChoiceError("choose_runtime needs data: the loader yielded no batches")
    example = example_inputs if example_inputs is not None else check_inputs[0]
    probe = make_probe(model, check_inputs, True, f"{len(check_inputs)} batch(es) of the benchmark data",
                       "choose_runtime")
    with tempfile.TemporaryDirectory(prefix="cleanai-auto-") as tmp:
        runners, skipped = runtime_candidates(model, calib, example, quant, tmp)
    parity = {}
    for name, runner in list(runners.items()):
        try:
            parity[name] = measure(runner, probe, "choose_runtime", f"the {name} candidate")
        except CleanAIError as exc:  # it fails on inputs fp32 runs on: listed with the reason, never timed
            cause = exc.__cause__ if isinstance(exc.__cause__, CleanAIError) else exc  # e.g. a CompileError
            skipped[name] = str(cause).splitlines()[0]
            del runners[name]
    return choose_among(runners, parity, data, config=config, quant=quant, skipped=skipped, repeats=repeats, show=show)


def choose_among(runners: dict[str, Runner], parity: dict[str, QuantCheck], data: DataLoader, *,
                 config: BenchmarkConfig | None = None, quant: QuantConfig | None = None,
                 skipped: dict[str, str] | None = None, repeats: int = 3, show: bool = False) -> RuntimeChoice:
    """The choosing step of `choose_runtime` on runners already built and checked (`parity`: name -> their check
    against fp32): time them interleaved at `config`'s batch size and threads, keep the fastest that passes
    `quant`'s parity thresholds. A benchmark that builds the candidates itself calls this to choose as `auto` does.
    Each runner takes its key as its name: the name of its row and of the choice."""
    quant = quant or QuantConfig.auto()
    config = config or BenchmarkConfig(progress=False)
    skipped = dict(skipped or {})
    for name, runner in runners.items():
        runner.name = name
    passed = {name: not parity[name].failures(quant) for name in runners}
    if not any(passed.values()):
        raise RuntimeChoiceError("no candidate runtime kept its outputs close to fp32's: "
                                 + "; ".join(f"{n}: {', '.join(parity[n].failures(quant))}" for n in runners)
                                 + (f"; not built: {skipped}" if skipped else ""))
    rows = compare_runners(runners, data, config, repeats=repeats, show=show)
    best = min((r for r in rows if passed[r.name]), key=lambda r: r.latency_ms_p50)
    return RuntimeChoice(runner=runners[best.name], rows=rows, parity={n: parity[n] for n in runners}, passed=passed,
                         skipped=skipped)
