"""PerformanceBenchmark: every number in a Measurement row is what it claims to be."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cleanai.benchmark import (
    BenchmarkConfig,
    BenchmarkError,
    Measurement,
    OrtRunner,
    PerformanceBenchmark,
    TextClassifierRunner,
    TorchRunner,
    benchmark,
)
from cleanai.benchmark.performance import WALL_CPU_FACTOR, timing_warning
from cleanai.data import text_collate
from cleanai.errors import DataError, UnknownNameError

FAST = BenchmarkConfig(warmup=2, runs=15, throughput_batch_size=8, throughput_runs=2, progress=False)


class RecordingRunner(TorchRunner):
    """A real TorchRunner that also records each call's batch size and torch's thread count, and its inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, name="recording")
        self.calls: list[tuple[int, int]] = []
        self.inputs: list = []

    def __call__(self, inputs):
        self.calls.append((len(inputs), torch.get_num_threads()))
        self.inputs.append(inputs)
        return super().__call__(inputs)


def _accuracy(model: nn.Module, data: TensorDataset) -> float:
    x, y = data.tensors
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def test_torch_and_ort_benchmarks_report_the_true_accuracy(cnn, cnn_onnx, cnn_loader, cnn_data):
    want = _accuracy(cnn, cnn_data)
    rows = [benchmark(r, cnn_loader, config=FAST) for r in (TorchRunner(cnn, name="t"), OrtRunner(cnn_onnx, name="o"))]
    assert [r.accuracy for r in rows] == [pytest.approx(want)] * 2
    assert [r.metrics for r in rows] == [{"accuracy": pytest.approx(want)}] * 2
    assert [(r.name, r.backend, r.provider) for r in rows] == [("t", "torch", None),
                                                              ("o", "onnxruntime", "CPUExecutionProvider")]
    assert all(r.eval_samples == 40 and r.eval_whole_split for r in rows)


def test_latency_statistics_are_consistent(cnn, cnn_loader):
    row = PerformanceBenchmark(cnn, cnn_loader, config=FAST).run()
    assert row.latency_runs == 15
    assert 0 < row.latency_ms_p50 <= row.latency_ms_p90 <= row.latency_ms_p99
    assert row.latency_ms_mean > 0 and row.latency_ms_std >= 0
    assert row.throughput is not None and row.throughput > 0
    assert (row.batch_size, row.throughput_batch_size) == (1, 8)


class ScriptedClockRunner(TorchRunner):
    """A real TorchRunner on a clock that only it advances: a call at `batch_size` 1 takes the next of `latencies`
    (cyclically), any larger call `batch_ms`; so every timing statistic has an exact expected value."""

    def __init__(self, model: nn.Module, latencies: list[float], batch_ms: float) -> None:
        super().__init__(model, name="scripted")
        self.latencies, self.batch_ms, self.now, self.calls = latencies, batch_ms, 0, 0

    def clock(self) -> int:
        return self.now

    def __call__(self, inputs):
        if len(inputs) == 1:
            self.now += int(self.latencies[self.calls % len(self.latencies)] * 1e6)
            self.calls += 1
        else:
            self.now += int(self.batch_ms * 1e6)
        return super().__call__(inputs)


def test_latency_percentiles_mean_and_throughput_follow_their_definitions(cnn, cnn_loader, monkeypatch):
    """p50 is the median of the timed calls (not the minimum); throughput is samples per second (not batches)."""
    latencies = [1.0, 1.0, 5.0, 9.0, 9.0]  # any 15 consecutive calls: six of 1 ms, three of 5 ms, six of 9 ms
    runner = ScriptedClockRunner(cnn, latencies, batch_ms=4.0)
    monkeypatch.setattr(time, "perf_counter_ns", runner.clock)
    config = BenchmarkConfig(warmup=3, runs=15, throughput_batch_size=8, throughput_runs=5, progress=False)
    row = benchmark(runner, cnn_loader, config=config)
    timed = np.array(latencies * 3)
    assert row.latency_ms_p50 == np.median(timed) == 5.0 != timed.min()
    assert (row.latency_ms_p90, row.latency_ms_p99) == (np.percentile(timed, 90), np.percentile(timed, 99))
    assert row.latency_ms_mean == pytest.approx(timed.mean())
    assert row.latency_ms_std == pytest.approx(timed.std(ddof=1))
    assert row.throughput == pytest.approx(8 * 5 / (5 * 4.0e-3))  # 2000 samples/s: 8 samples per 4 ms call


def test_cpu_latency_counts_computing_and_not_waiting(cnn, cnn_loader, waiting_runner):
    config = BenchmarkConfig(warmup=1, runs=10, throughput_runs=0, threads=1, progress=False)
    sleeping = benchmark(waiting_runner(cnn, 20, busy=False), cnn_loader, config=config)
    busy = benchmark(waiting_runner(cnn, 20, busy=True), cnn_loader, config=config)
    assert sleeping.latency_ms_p50 >= 20 and sleeping.latency_cpu_ms_p50 < 10
    assert 20 <= busy.latency_cpu_ms_p50 <= busy.latency_ms_p50 * 1.05


def test_a_row_whose_calls_mostly_waited_says_its_timing_is_unreliable(cnn, cnn_loader, waiting_runner):
    config = BenchmarkConfig(warmup=1, runs=10, throughput_runs=2, threads=1, progress=False)
    row = benchmark(waiting_runner(cnn, 20, busy=False), cnn_loader, config=config)
    assert row.timing_warning is not None
    ratio = float(row.timing_warning.split("wall time was ")[1].split("x")[0])
    assert ratio > WALL_CPU_FACTOR  # 20 ms asleep per call against well under 10 ms of CPU
    assert row.load_average == pytest.approx(os.getloadavg()[0], abs=5)


@pytest.mark.parametrize(("wall_ms", "cpu_ms", "threads", "load", "reason"), [
    (10, 10, 1, 0.0, None),  # computed all along on an idle machine
    (10, 20, 2, 1.9, None),  # the load is this process's own two threads (CPU = 2x wall)
    (10, 20, 2, 2.3, None),  # two threads busy (CPU = 2x wall), 0.3 cores of other load: within the slack
    (30, 10, 1, 0.0, "wall time was 3.0x the process CPU time per call"),
    (10, 10, 2, 3.0, "2 thread(s) but only 0.0 of 2 cores idle (1-min load average 3.00, of which about 1.0 this"),
    (10, 10, 1, 4.0, "1 thread(s) but only 0.0 of 2 cores idle"),
])
def test_timing_warning_names_waiting_and_too_few_idle_cores(wall_ms, cpu_ms, threads, load, reason):
    warning = timing_warning(np.full(5, wall_ms * 1e6), np.full(5, cpu_ms * 1e6), threads, 2, load)
    assert warning is None if reason is None else reason in warning


def test_timed_inputs_are_the_first_batch_resliced_to_each_batch_size(cnn):
    data = DataLoader(TensorDataset(torch.randn(10, 3, 8, 8), torch.zeros(10, dtype=torch.long)), batch_size=4)
    runner = RecordingRunner(cnn)
    config = BenchmarkConfig(batch_size=3, warmup=1, runs=5, throughput_batch_size=9, throughput_runs=2,
                             progress=False)
    PerformanceBenchmark(runner, data, config=config).run()
    sizes = [n for n, _ in runner.calls]
    # accuracy pass (4, 4, 2), check + warm-up + 5 timed at 3, check + 2 timed at 9 (the first batch repeated)
    assert sizes == [4, 4, 2] + [3] * 7 + [9] * 3


def test_a_batch_one_text_latency_times_one_query_without_its_batch_padding(tokenizer, tiny_bert, texts):
    short, long = min(texts, key=len), max(texts, key=len)
    data = [(t, 0) for t in [short, texts[0], texts[1], long]]  # one batch, padded to the long last row
    runner = RecordingRunner(tiny_bert)
    config = BenchmarkConfig(batch_size=1, warmup=1, runs=2, throughput_batch_size=3, throughput_runs=1,
                             progress=False)
    PerformanceBenchmark(runner, DataLoader(data, batch_size=4, collate_fn=text_collate(tokenizer)),
                         config=config).run()
    alone = tokenizer([short], return_tensors="pt")
    batch_one = [c for c in runner.inputs if len(c["input_ids"]) == 1]
    assert batch_one and all(torch.equal(c["input_ids"], alone["input_ids"])
                             and torch.equal(c["attention_mask"], alone["attention_mask"]) for c in batch_one)
    three = tokenizer([short, texts[0], texts[1]], padding=True, return_tensors="pt")  # padded to their longest
    throughput = [c for c in runner.inputs if len(c["input_ids"]) == 3]
    assert throughput and all(torch.equal(c["input_ids"], three["input_ids"]) for c in throughput)


def test_threads_are_set_recorded_and_restored(cnn, cnn_onnx, cnn_loader):
    torch.set_num_threads(2)  # the root conftest resets threads before every test
    runner = RecordingRunner(cnn)
    row = benchmark(runner, cnn_loader, config=FAST.model_copy(update={"threads": 1}))
    assert row.threads == 1
    assert {threads for _, threads in runner.calls} == {1}  # every call really ran on one thread
    assert torch.get_num_threads() == 2
    ort = OrtRunner(cnn_onnx)
    assert benchmark(ort, cnn_loader, config=FAST.model_copy(update={"threads": 1})).threads == 1
    assert ort._session.get_session_options().intra_op_num_threads == 1
    assert benchmark(cnn, cnn_loader, config=FAST).threads == 2  # default: torch's current setting


def test_size_is_the_saved_artifact_in_decimal_megabytes(cnn, cnn_onnx, cnn_loader, tmp_path):
    for runner in (TorchRunner(cnn), OrtRunner(cnn_onnx)):
        row = benchmark(runner, cnn_loader, config=FAST)
        assert row.size_mb == runner.save(tmp_path).stat().st_size / 1e6


def test_params_and_macs_are_per_sample(cnn, cnn_loader):
    row = benchmark(cnn, cnn_loader, config=FAST)
    assert row.params == sum(p.numel() for p in cnn.parameters())
    assert row.macs == TorchRunner(cnn).macs(torch.randn(1, 3, 8, 8))


def test_macro_f1_agrees_with_scikit_learn():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 5, generator=g)
    y = torch.randint(0, 4, (60,), generator=g)
    model = nn.Linear(5, 5)  # may predict class 4, which never occurs in y
    row = benchmark(model, DataLoader(TensorDataset(x, y), batch_size=16), config=FAST, metrics=("macro_f1",))
    with torch.no_grad():
        pred = model(x).argmax(-1)
    assert row.metrics["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert row.metrics["accuracy"] == row.accuracy == pytest.approx((pred == y).float().mean().item())


def test_a_row_measured_on_a_sample_says_so(cnn, cnn_loader):
    sample = benchmark(cnn, cnn_loader, config=FAST.model_copy(update={"max_eval_batches": 2}))
    assert (sample.eval_samples, sample.eval_whole_split) == (32, False)
    whole = benchmark(cnn, cnn_loader, config=FAST.model_copy(update={"max_eval_batches": 3}))
    assert (whole.eval_samples, whole.eval_whole_split) == (40, True)


def test_a_dataset_is_batched_for_the_caller(cnn, cnn_data):
    assert benchmark(cnn, cnn_data, config=FAST).eval_samples == 40


def test_text_runner_benchmark_reads_strings(tokenizer, tiny_bert, texts):
    labels = list(range(len(texts)))
    data = [(t, label % 3) for t, label in zip(texts, labels)]  # a list of samples is a Dataset
    runner = TextClassifierRunner(tokenizer, TorchRunner(tiny_bert, name="tiny-bert"))
    row = benchmark(runner, DataLoader(data, batch_size=3), config=FAST)
    pred = runner(texts).argmax(-1)
    assert row.accuracy == pytest.approx((pred == torch.tensor(labels) % 3).float().mean().item())
    assert row.name == "tiny-bert" and row.eval_samples == 7
    assert row.macs == runner.macs(texts[:1])


def test_empty_data_is_a_clear_error(cnn):
    empty = DataLoader(TensorDataset(torch.empty(0, 3, 8, 8), torch.empty(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(DataError, match="yielded no batches"):
        benchmark(cnn, empty, config=FAST)


def test_a_runner_returning_the_wrong_batch_size_is_a_clear_error(cnn_loader):
    class FirstRowOnly(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:1, :4]

    with pytest.raises(BenchmarkError, match=r"returned \(1, 4\) for a batch of 16; expected logits \(16, classes\)"):
        benchmark(FirstRowOnly(), cnn_loader, config=FAST)


def test_malformed_batches_are_clear_errors(cnn):
    with pytest.raises(DataError, match=r"\(inputs, targets\) pair"):
        benchmark(cnn, DataLoader(torch.randn(8, 3, 8, 8), batch_size=4), config=FAST)
    mismatched = [(torch.randn(4, 3, 8, 8), torch.zeros(3, dtype=torch.long))]
    with pytest.raises(DataError, match="batch 0 has 4 inputs but 3 targets"):
        benchmark(cnn, DataLoader(mismatched, batch_size=None), config=FAST)


def test_unknown_metric_lists_the_valid_ones(cnn, cnn_loader):
    with pytest.raises(UnknownNameError, match=r"unknown metric 'top5'.*accuracy, macro_f1"):
        PerformanceBenchmark(cnn, cnn_loader, metrics=("top5",))


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("runs", 0, ">= 1"), ("batch_size", -2, ">= 1"), ("warmup", -1, ">= 0"), ("threads", 0, "None or an integer >= 1"),
])
def test_config_errors_name_the_field_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ValidationError, match=rf"{field} must be .*{allowed}, got {value}"):
        BenchmarkConfig(**{field: value})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        BenchmarkConfig(repeats=3)


def test_rows_record_the_instruction_sets_that_decide_kernel_speed(cnn, cnn_loader):
    from cleanai._platform import cpu_flags
    from cleanai.benchmark.performance import SPEED_FLAGS

    row = benchmark(cnn, cnn_loader, config=FAST)
    features = row.cpu_features.split()
    assert features == [f for f in SPEED_FLAGS if f in cpu_flags()]
    assert ("avx2" in features) == ("avx2" in cpu_flags())


def test_non_finite_weights_are_benchmarked_with_a_warning_naming_them(cnn, cnn_onnx, cnn_loader, tmp_path):
    import copy

    import onnx
    from onnx import numpy_helper

    from cleanai._finite import NonFiniteWarning

    broken = copy.deepcopy(cnn)
    with torch.no_grad():
        broken[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.warns(NonFiniteWarning, match=r"the weights of 'broken' hold NaN or inf: 0\.weight \(1 of 216 values nan\)"):
        benchmark(TorchRunner(broken, name="broken"), cnn_loader, config=FAST)
    graph = onnx.load(str(cnn_onnx))
    weight = next(t for t in graph.graph.initializer if len(t.dims) == 4)
    array = numpy_helper.to_array(weight).copy()
    array[0, 0, 0, :2] = np.inf
    weight.CopyFrom(numpy_helper.from_array(array, weight.name))
    onnx.save(graph, str(tmp_path / "broken.onnx"))
    with pytest.warns(NonFiniteWarning, match=rf"{weight.name} \(2 of 216 values inf\)"):
        benchmark(OrtRunner(tmp_path / "broken.onnx", name="broken onnx"), cnn_loader, config=FAST)


def test_a_one_value_infinite_fill_constant_is_not_reported_as_a_broken_weight(cnn_onnx, cnn_loader, tmp_path):
    """An attention mask's -inf fill value (a one-value initializer in exported transformers) is not a weight."""
    import warnings

    import onnx
    from onnx import numpy_helper

    from cleanai._finite import NonFiniteWarning

    graph = onnx.load(str(cnn_onnx))
    graph.graph.initializer.append(numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), "mask_fill_value"))
    onnx.save(graph, str(tmp_path / "masked.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        row = benchmark(OrtRunner(tmp_path / "masked.onnx", name="masked"), cnn_loader, config=FAST)
    assert row.accuracy is not None


def test_time_alone_gives_the_timing_fields_of_a_row_on_the_first_batch(cnn, cnn_loader):
    runner = RecordingRunner(cnn)
    config = BenchmarkConfig(batch_size=2, warmup=1, runs=3, throughput_batch_size=5, throughput_runs=1, threads=1,
                             progress=False)
    timing = PerformanceBenchmark(runner, cnn_loader, config=config).time()
    assert [n for n, _ in runner.calls] == [2] * 5 + [5] * 2  # no accuracy pass: check, warm-up, 3 timed; check, 1
    assert set(timing) <= set(Measurement.model_fields) and timing["latency_runs"] == 3
    assert timing["throughput"] > 0 and timing["latency_cpu_ms_p50"] > 0


def test_a_model_with_two_inputs_is_measured_on_tuple_batches():
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image, self.features = nn.Conv2d(1, 3, 3, padding=1), nn.Linear(4, 3)

        def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
            return self.image(image).mean((2, 3)) + self.features(features)

    torch.manual_seed(0)
    batches = [((torch.randn(8, 1, 8, 8), torch.randn(8, 4)), torch.randint(0, 3, (8,))) for _ in range(3)]
    model = TwoInputs().eval()
    row = benchmark(model, DataLoader(batches, batch_size=None), config=FAST)
    with torch.no_grad():
        right = sum(int((model(*x).argmax(1) == y).sum()) for x, y in batches)
    assert row.eval_samples == 24 and row.accuracy == right / 24  # 8 samples a batch, not 2 "inputs"
    assert row.macs == 8 * 8 * 3 * 9 + 4 * 3 and row.quant_sqnr_db is None
