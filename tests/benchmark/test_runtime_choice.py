"""runtime="auto": every runtime candidate checked against fp32 and timed; the fastest that passes is chosen."""

from __future__ import annotations

import gc

import pytest
import torch

from cleanai.benchmark import BenchmarkConfig, RuntimeChoiceError, choose_among, choose_runtime
from cleanai.data import load_dataset
from cleanai.models import create_model
from cleanai.quantization import QuantConfig
from cleanai.quantization.check import make_probe, measure
from cleanai.runtime import OrtRunner, TorchRunner, openvino_runner
from cleanai.training import TrainConfig, Trainer

TIMING = BenchmarkConfig(batch_size=16, runs=5, warmup=1, throughput_runs=0, threads=1, progress=False)


@pytest.fixture(scope="module")
def digits_cnn():
    """SmallCNN trained 2 epochs on scikit-learn's digits, and its loaders."""
    torch.manual_seed(0)
    loaders = load_dataset("digits").loaders(batch_size=32, eval_batch_size=128)
    model = create_model("small_cnn")
    Trainer(model, config=TrainConfig(epochs=2, lr=3e-3, progress=False, seed=0)).fit(loaders.train)
    return model.eval(), loaders


@pytest.fixture(scope="module")
def choice(digits_cnn):
    model, loaders = digits_cnn
    return choose_runtime(model, loaders.test, loaders.train, config=TIMING, quant=QuantConfig.auto(calibration_batches=4),
                          repeats=3)


def test_auto_builds_every_runtime_and_picks_the_fastest_that_passes_parity(choice):
    bf16 = ["openvino bf16"] if any(f in openvino_runner.cpu_flags() for f in openvino_runner.BF16_FLAGS) else []
    names = [r.name for r in choice.rows]
    assert names == ["torch fp32", "torch compile", "onnxruntime fp32", "onnxruntime int8", "openvino fp32", *bf16,
                     "openvino int8"]
    assert all(choice.passed.values())
    fastest = min(choice.rows, key=lambda r: r.latency_ms_p50)
    assert choice.chosen is fastest and choice.runner.name == fastest.name
    assert {r.precision for r in choice.rows if r.backend == "openvino"} == {"f32", "int8", *(["bf16"] if bf16 else [])}
    assert all(r.batch_size == 16 and r.threads == 1 and r.rounds == 3 for r in choice.rows)
    assert all(r.latency_spread is not None and r.latency_spread >= 0 for r in choice.rows)
    table = choice.table()
    assert "chosen (fastest that passes parity)" in table and "openvino int8" in table
    assert choice.to_dict()["chosen"] == choice.runner.name


def test_bf16_is_a_candidate_only_where_the_cpu_has_it(choice):
    has_bf16 = any(f in openvino_runner.cpu_flags() for f in openvino_runner.BF16_FLAGS)
    assert ("openvino bf16" in choice.skipped) != has_bf16
    if not has_bf16:
        assert "avx512_bf16 or amx_bf16" in choice.skipped["openvino bf16"]


def test_a_candidate_failing_parity_is_never_chosen(digits_cnn):
    model, loaders = digits_cnn
    strict = QuantConfig.auto(calibration_batches=4, min_sqnr_db=80.0)  # int8 cannot reach 80 dB; fp32 graphs can
    found = choose_runtime(model, loaders.test, loaders.train, config=TIMING, quant=strict, repeats=1)
    assert not found.passed["onnxruntime int8"] and not found.passed["openvino int8"]
    assert found.passed[found.runner.name] and "int8" not in found.runner.name
    assert "fails parity" in found.table()


def test_without_openvino_the_other_runtimes_are_still_chosen_from(digits_cnn, monkeypatch):
    model, loaders = digits_cnn
    monkeypatch.setattr(openvino_runner, "PACKAGE", "openvino_not_installed_here")
    found = choose_runtime(model, loaders.test, loaders.train, config=TIMING,
                           quant=QuantConfig.auto(calibration_batches=4), repeats=1)
    assert [r.backend for r in found.rows] == ["torch", "torch", "onnxruntime", "onnxruntime"]
    assert all("'openvino_not_installed_here' package" in found.skipped[n]
               for n in ("openvino fp32", "openvino int8"))


def test_choose_among_runners_built_elsewhere_keeps_the_fastest_that_passes_and_refuses_when_none_does(digits_cnn):
    """The choosing step alone, as benchmarks/runtimes.py calls it on the variants it built itself."""
    model, loaders = digits_cnn
    inputs = next(iter(loaders.test))[0]
    runners = {"torch fp32": TorchRunner(model), "onnxruntime fp32": OrtRunner.from_model(model, inputs[:2])}
    probe = make_probe(model, [inputs], True, "the first test batch", "test")
    parity = {name: measure(runner, probe, name) for name, runner in runners.items()}
    found = choose_among(runners, parity, loaders.test, config=TIMING, quant=QuantConfig.auto(), repeats=2)
    assert found.runner.name == min(found.rows, key=lambda r: r.latency_ms_p50).name
    onnx_sqnr = parity["onnxruntime fp32"].sqnr_db  # finite: ONNX Runtime sums in another order than torch
    strict = QuantConfig.auto(min_sqnr_db=onnx_sqnr + 1)  # only torch fp32 (inf dB against itself) passes
    found = choose_among(runners, parity, loaders.test, config=TIMING, quant=strict, repeats=2)
    assert found.runner.name == "torch fp32" and found.verdict(found.rows[1]) == "fails parity"
    del runners["torch fp32"]
    with pytest.raises(RuntimeChoiceError, match=r"no candidate runtime kept .*onnxruntime fp32: output SQNR"):
        choose_among(runners, parity, loaders.test, config=TIMING, quant=strict, repeats=1)


def test_a_model_inductor_cannot_compile_is_skipped_with_the_compiler_error(digits_cnn, without_a_cxx_compiler):
    model, loaders = digits_cnn
    found = choose_runtime(model, loaders.test, loaders.train, config=TIMING,
                           quant=QuantConfig.auto(calibration_batches=4), repeats=1)
    assert "torch compile" not in [r.name for r in found.rows] and "torch fp32" in [r.name for r in found.rows]
    assert found.skipped["torch compile"].startswith("runner 'torch compile': torch.compile (inductor) failed: "
                                                     "InvalidCxxCompiler")


def test_a_dataloader_worker_still_works_after_openvino_runners_are_gone(digits_cnn):
    """Regression: OpenVINO's CPU plugin swaps the main thread's signal stack; plugins torn down out of order left a
    freed one behind and the next SIGCHLD (a DataLoader worker stopping) killed the process with SIGSEGV."""
    model, loaders = digits_cnn
    choose_runtime(model, loaders.test, loaders.train, config=TIMING, quant=QuantConfig.auto(calibration_batches=4),
                   repeats=1)
    gc.collect()  # every runner and compiled model of the choice is gone
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(6.0)), batch_size=3, num_workers=1)
    assert [batch.tolist() for (batch,) in loader] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    del loader
    gc.collect()  # the worker is stopped and reaped here: the SIGCHLD arrives now
