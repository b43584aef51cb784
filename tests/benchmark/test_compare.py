"""compare / save_rows / load_rows / plot_metrics: ratios are right, files round-trip, the plot is a PNG."""

from __future__ import annotations

import itertools

import pytest
from PIL import Image

from cleanai.benchmark import (
    BenchmarkConfig,
    BenchmarkError,
    Measurement,
    compare,
    compare_runners,
    load_rows,
    plot_metrics,
    save_rows,
)
from cleanai.errors import ConfigError, UnknownNameError


def _row(name: str, accuracy: float, size_mb: float, p50: float, **extra) -> Measurement:
    fields = dict(
        name=name, accuracy=accuracy, metrics={"accuracy": accuracy}, size_mb=size_mb,
        latency_ms_mean=p50 * 1.1, latency_ms_std=p50 / 10, latency_ms_p50=p50, latency_ms_p90=p50 * 1.2,
        latency_ms_p99=p50 * 1.5, latency_runs=100, throughput=1000 / p50, params=270_000, macs=40_800_000,
        batch_size=1, throughput_batch_size=64, threads=2, backend="torch", provider=None, eval_samples=10_000,
        eval_whole_split=True, versions={"python": "3.11.7", "torch": "2.13.0+cpu"}, cpu="AMD EPYC", cpu_count=2,
        timestamp="2026-01-01T00:00:00+00:00",
    )
    return Measurement(**{**fields, **extra})


@pytest.fixture()
def rows() -> list[Measurement]:
    return [
        _row("resnet20", 0.9160, 1.08, 4.0),
        _row("pruned-50%", 0.9050, 0.27, 2.0, metrics={"accuracy": 0.905, "macro_f1": 0.9041}, params=None),
        _row("onnx-int8", 0.9100, 0.36, 1.6, backend="onnxruntime", provider="CPUExecutionProvider",
             throughput=None, macs=None, eval_samples=2000, eval_whole_split=False, versions={"onnxruntime": "1.31.1"}),
    ]


def _line(table: str, name: str) -> list[str]:
    line = next(ln for ln in table.splitlines() if ln.startswith(f"│ {name} "))
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_compare_shows_ratios_against_the_first_row(rows, capsys):
    table = compare(rows)
    assert "CleanAI benchmark (baseline: resnet20)" in table
    assert _line(table, "resnet20")[1:10] == ["91.60", "+0.00", "1.080", "1.00x", "4.000", "0.400", "-", "1.00x",
                                              "250.0"]
    pruned = _line(table, "pruned-50%")
    assert (pruned[2], pruned[4], pruned[8], pruned[10]) == ("-1.10", "4.00x", "2.00x", "-")
    assert "SLOWER" not in table
    assert _line(table, "onnx-int8 (acc on 2000 samples)")[-2:] == ["onnxruntime (CPUExecutionProvider)", "2"]
    assert "pruned-50%" in capsys.readouterr().out  # also printed


def test_compare_shows_the_columns_asked_for_within_the_width_asked_for(rows, capsys):
    table = compare(rows, columns=["variant", "acc %", "p50 ms", "speed-up"], width=70)
    assert _line(table, "resnet20") == ["resnet20", "91.60", "4.000", "1.00x"]
    assert "MACs" not in table and max(len(line) for line in table.splitlines()) <= 70
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 70
    with pytest.raises(UnknownNameError, match=r"\['latency'\] are not compare columns; choose from: variant, acc %"):
        compare(rows, columns=["variant", "latency"], show=False)


def test_compare_shows_cpu_time_per_call_where_measured(rows):
    rows[1] = rows[1].model_copy(update={"latency_cpu_ms_p50": 1.25})
    table = compare(rows, show=False)
    assert _line(table, "pruned-50%")[7] == "1.250"
    assert _line(table, "resnet20")[7] == "-"


def test_compare_takes_a_baseline_by_name_or_index(rows):
    by_name = compare(rows, baseline="pruned-50%", show=False)
    assert _line(by_name, "resnet20")[8] == "0.50x SLOWER"  # the unpruned model is half as fast, and flagged
    assert "SLOWER than the baseline 'pruned-50%': resnet20" in by_name
    assert by_name == compare(rows, baseline=1, show=False)
    with pytest.raises(ValueError, match="baseline 'nope' is not a row name; names: resnet20, pruned-50%, onnx-int8"):
        compare(rows, baseline="nope", show=False)
    with pytest.raises(ValueError, match="no rows given"):
        compare([], show=False)


def test_compare_warns_when_rows_were_measured_differently(rows):
    assert "not like for like" not in compare(rows, show=False)
    rows[1] = rows[1].model_copy(update={"threads": 1})
    assert "not like for like" in compare(rows, show=False)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_rows_round_trip_through_files(rows, tmp_path, suffix):
    rows[2] = rows[2].model_copy(update={"timing_warning": "wall time was 3.0x, \"quoted\"; 2 thread(s)", "rounds": 3,
                                         "speedup": 2.4, "speedup_cpu": 2.5, "speedup_baseline": "resnet20",
                                         "load_average": 3.25})
    path = save_rows(rows, tmp_path / f"sub/rows{suffix}")
    assert load_rows(path) == rows
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written atomically, no temp file left
    save_rows([r.model_dump() for r in rows[:1]], path)  # dicts are accepted and the file is replaced
    assert load_rows(path) == rows[:1]


def test_unsupported_suffixes_are_refused(rows, tmp_path):
    with pytest.raises(ValueError, match="suffix '.xlsx' not supported; use .json or .csv"):
        save_rows(rows, tmp_path / "rows.xlsx")
    with pytest.raises(FileNotFoundError, match="rows.json"):
        load_rows(tmp_path / "rows.json")


def test_plot_writes_a_png(rows, tmp_path):
    path = plot_metrics(rows, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and min(image.size) > 200
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_an_unreliable_timing_is_shown_beside_its_number_and_flags_its_speedups(rows):
    reason = "wall time was 3.0x the process CPU time per call"
    rows[1] = rows[1].model_copy(update={"timing_warning": reason})
    table = compare(rows, show=False)
    assert _line(table, "pruned-50%")[5] == "2.000 !"
    assert _line(table, "pruned-50%")[8] == "2.00x (unreliable)"
    assert _line(table, "onnx-int8 (acc on 2000 samples)")[8] == "2.50x"  # both of its rows were sound
    assert f"! timing unreliable for 'pruned-50%': {reason}" in " ".join(table.split())
    by_pruned = compare(rows, baseline="pruned-50%", show=False)  # an unreliable baseline taints every ratio
    assert _line(by_pruned, "onnx-int8 (acc on 2000 samples)")[8] == "1.25x (unreliable)"


def test_a_speedup_measured_round_by_round_is_shown_against_its_own_baseline(rows):
    rows[1] = rows[1].model_copy(update={"speedup": 1.8, "speedup_baseline": "resnet20", "rounds": 5})
    table = compare(rows, show=False)
    assert _line(table, "pruned-50%")[8] == "1.80x"  # the median of per-round ratios, not 4.0 / 2.0
    assert "medians of 1/5 interleaved rounds" in " ".join(table.split())
    assert _line(compare(rows, baseline="onnx-int8", show=False), "pruned-50%")[8] == "0.80x SLOWER"  # 1.6 / 2.0


def test_compare_runners_interleaves_rounds_and_takes_ratios_round_by_round(cnn, cnn_loader, waiting_runner):
    log: list[str] = []

    class Logged(waiting_runner):
        def __call__(self, inputs):
            log.append(self.name)
            return super().__call__(inputs)

    fast, slow = Logged(cnn, 0, busy=True, name="fast"), Logged(cnn, 5, busy=False, name="slow")
    config = BenchmarkConfig(warmup=1, runs=4, throughput_runs=0, threads=1, progress=False)
    rows = compare_runners([fast, slow], cnn_loader, config, repeats=3, show=False)
    segments = [(name, len(list(calls))) for name, calls in itertools.groupby(log)]
    assert [name for name, _ in segments] == ["fast", "slow", "fast", "slow"]  # fast, slow | slow, fast | fast, slow
    per_round = 1 + config.warmup + config.runs  # output check + warm-up + timed calls
    assert segments[2][1] == segments[3][1] * 2 == 2 * per_round
    assert [r.rounds for r in rows] == [3, 3] and [r.speedup_baseline for r in rows] == ["fast", "fast"]
    assert rows[0].speedup == 1.0 and rows[1].speedup < 0.5  # 5 ms asleep per call, in every round
    assert rows[1].timing_warning.startswith("in 3 of 3 rounds, e.g. wall time was")
    assert rows[0].accuracy == rows[1].accuracy and rows[1].eval_whole_split  # accuracy once each, in round 1


def test_compare_runners_refuses_what_it_cannot_compare(cnn, cnn_loader):
    config = BenchmarkConfig(warmup=0, runs=1, throughput_runs=0, progress=False)
    with pytest.raises(BenchmarkError, match="repeats must be an integer >= 1, got 0"):
        compare_runners([cnn], cnn_loader, config, repeats=0)
    with pytest.raises(BenchmarkError, match=r"runner names must differ.*\['Sequential', 'Sequential'\]"):
        compare_runners([cnn, cnn], cnn_loader, config)
    with pytest.raises(UnknownNameError, match="baseline 'b' is not a runner name; names: a"):
        compare_runners({"a": cnn}, cnn_loader, config, baseline="b")
    with pytest.raises(ConfigError, match="baseline index 2 is out of range for 1 runners"):
        compare_runners({"a": cnn}, cnn_loader, config, baseline=2)
    rows = compare_runners({"a": cnn, "b": cnn}, cnn_loader, config, repeats=1, baseline="b", show=False)
    assert [(r.name, r.rounds, r.speedup_baseline) for r in rows] == [("a", 1, "b"), ("b", 1, "b")]
