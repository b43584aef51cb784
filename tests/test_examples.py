"""Every script in examples/ runs as a user would run it (its own arguments, tiny settings) and does what it says."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from cleanai.pruning import load_pruned

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_every_example_is_tested_here():
    tested = {"prune_cnn.py", "quantize_export.py", "hyperband_search.py", "distill_text_classifier.py",
              "recipe_and_report.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_prune_cnn(tmp_path, monkeypatch, capsys):
    out = tmp_path / "pruned"
    run_example("prune_cnn.py", "--criterion", "wanda", "--epochs", "2", "--runs", "3", "--out", str(out),
                monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert "original" in printed and "wanda 30%" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base"]["name"] == "small_cnn"
    pruned = load_pruned(out)
    assert sum(p.numel() for p in pruned.parameters()) < 0.8 * 24_058  # small_cnn has 24,058 parameters


def test_quantize_export(tmp_path, monkeypatch, capsys):
    out = tmp_path / "int8"
    run_example("quantize_export.py", "--epochs", "2", "--runs", "3", "--out", str(out), monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert "fp32 (torch)" in printed and "fp32 (ORT)" in printed and "int8 (ORT)" in printed
    onnx = sorted(p.name for p in out.glob("*.onnx"))
    assert "model.onnx" in onnx and len(onnx) == 2
    assert (out / "model.onnx").stat().st_size > 2 * min((out / n).stat().st_size for n in onnx)


def test_hyperband_search(tmp_path, monkeypatch, capsys):
    out = tmp_path / "search"
    run_example("hyperband_search.py", "--trials", "4", "--epochs", "3", "--out", str(out), monkeypatch=monkeypatch)
    assert "best: {" in capsys.readouterr().out
    best = json.loads((out / "best.json").read_text())
    assert set(best["best"][0]["params"]) == {"lr", "optimizer", "width"}
    assert (out / "study.db").is_file() and len((out / "trials.csv").read_text().strip().splitlines()) == 1 + 4


def test_distill_text_classifier(monkeypatch, capsys):
    run_example("distill_text_classifier.py", "--epochs", "1", "--layers", "2", "--samples", "600", "--runs", "3",
                monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert "student after distillation: val accuracy" in printed
    assert "teacher (2 layers)" in printed and "student (1 layers)" in printed


def test_recipe_and_report(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    run_example("recipe_and_report.py", "--epochs", "2", "--criteria", "magnitude", "--runs", "3", "--out", str(out),
                monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert "magnitude quantize" in printed
    assert f"Report: {out / 'report.pdf'}" in printed and (out / "report.html").is_file()
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
