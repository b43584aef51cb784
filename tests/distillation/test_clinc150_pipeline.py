"""benchmarks/clinc150.py --quick end to end on the real CLINC150 data and the offline MiniLM (small subsets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_pipeline_trains_caches_measures_and_writes_every_variant(shared_data_dir, tmp_path) -> None:
    env = {**os.environ, "CLEANAI_CACHE": str(tmp_path / "cache"), "CLEANAI_DATA": str(shared_data_dir),
           "PYTHONPATH": str(REPO / "src")}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "clinc150.py", "--quick", "--augment", "1", "--out", str(out)],
                          cwd=REPO / "benchmarks", env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "quick" / "rows.json").read_text())
    assert record["script"] == "clinc150.py" and "--quick" in record["command"] and record["machine"]
    rows = record["rows"]
    assert [r["name"] for r in rows] == ["teacher", "student", "distilled", "distilled + torch int8",
                                        "distilled + ORT fp32", "distilled + ORT int8", "distilled + vocab + ORT int8"]
    for row in rows:
        assert row["eval_samples"] == 64 and not row["eval_whole_split"] and row["threads"] == 1
        assert {"in_scope_accuracy", "oos_recall", "accuracy_oos_class", "oos_threshold"} <= set(row["metrics"])
        assert row["latency_runs"] == 10 and row["size_mb"] > 0
        assert row["rounds"] == 3 and row["speedup"] > 0  # timed in interleaved rounds, against the teacher
    sizes = {r["name"]: r["size_mb"] for r in rows}
    assert sizes["distilled + vocab + ORT int8"] < sizes["distilled + ORT int8"] < sizes["distilled"]
    vocab = record["vocabulary"]  # the vocabulary chosen on the validation split, with every size tried
    tried = [t["keep_first"] for t in vocab["tried"]]
    assert tried == sorted(tried) and vocab["keep_first"] == tried[-1] and "Vocabulary pruning kept" in done.stdout
    assert (out / "quick" / "clinc150.png").stat().st_size > 0
    assert "| teacher |" in done.stdout and "Goals (issue 10)" in done.stdout
    assert "oos as a class only (the book's protocol)" in done.stdout and "interleaved rounds' p50 ratios" in done.stdout
    assert "transfer set: " in done.stdout and record["args"]["augment"] == 1  # KD also on unlabelled variants
    trained = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "clinc150").iterdir()
                     if (p / "model" / "config.json").is_file())
    assert trained == ["distilled", "student", "teacher"]  # content-addressed models a rerun reuses
    assert list((tmp_path / "cache" / "clinc150" / "teacher-logits").glob("teacher-*.safetensors"))
