"""The report of a run folder, as a reader sees it: PDF pages rendered by poppler, the HTML page by Chromium."""

from __future__ import annotations

import subprocess

import pytest

from cleanai.cli import main
from cleanai.errors import MissingFileError
from cleanai.recipes import build_report, write_report

SECTIONS = ("Run summary", "Configuration", "Variants", "Pruning: channels per layer",
            "Training and fine-tuning curves", "Hyperparameter search", "Quantization check", "Environment")


def test_the_report_holds_every_section_and_one_figure_per_result(demo_run):
    document = build_report(demo_run)
    assert [s.title for s in document.sections] == list(SECTIONS)
    captions = [f.caption for f in document.figures()]
    assert sum(c.startswith("Accuracy vs latency") for c in captions) == 1
    assert sum(c.startswith("Width of each pruned layer") for c in captions) == 2  # one per criterion
    assert sum(c.startswith("Per-epoch losses") for c in captions) == 3  # train, and each variant's distillation
    variants = document.sections[2].blocks[0]
    assert variants.header[:5] == ["variant", "accuracy %", "size MB", "latency ms mean ± std", "p99 ms"]
    assert len(variants.rows) == 7 and variants.rows[0][-2:] == ["1.00x", "1.00x"]
    quant = document.sections[6].blocks[0]
    assert len(quant.rows) == 2 and all(float(row[2]) > 0 for row in quant.rows)  # SQNR in dB for each variant


def test_every_pdf_page_has_content_with_the_table_and_every_figure(demo_run, pdf_pages, ink):
    (pdf,) = write_report(demo_run, formats=["pdf"])
    assert all(ink(page) > 0.005 for page in pdf_pages(pdf))
    images = subprocess.run(["pdfimages", "-list", str(pdf)], check=True, capture_output=True, text=True).stdout
    kinds = [line.split()[2] for line in images.strip().splitlines()[2:]]
    assert kinds.count("image") == len(build_report(demo_run).figures())
    text = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    text = " ".join(text.split())  # table cells wrap inside their columns
    for expected in (*SECTIONS, "coverage quantize", "baseline (train)", "instruction sets"):
        assert expected in text


def test_the_html_report_shows_the_table_and_every_figure_in_chromium(demo_run, html_page, ink):
    (html,) = write_report(demo_run, formats=["html"])
    shot, dom = html_page(html)
    assert ink(shot) > 0.02
    assert f'data-images-decoded="{len(build_report(demo_run).figures())}"' in dom
    assert "coverage quantize" in dom and "<th>speed-up</th>" in dom


def test_a_report_over_an_unfinished_run_lists_the_missing_steps(demo_run, tmp_path, capsys):
    import json
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(demo_run, partial)
    status = json.loads((partial / "run.json").read_text())
    status["variants"]["coverage"][2]["status"] = "failed"
    status["variants"]["coverage"][2]["error"] = "TrainingError: loss became NaN"
    for entry in status["variants"]["coverage"][3:]:
        entry["status"] = "pending"
    status["benchmark"]["status"], status["finished"] = "pending", None
    (partial / "run.json").write_text(json.dumps(status))
    assert main(["report", str(partial)]) == 0
    document = build_report(partial)
    summary = " ".join(getattr(b, "text", "") for b in document.sections[0].blocks)
    assert "incomplete: 4 step(s) missing" in summary
    assert "coverage: distill (distill, failed); coverage: export (export, pending)" in summary
    assert "loss became NaN" in summary
    assert document.sections[2].blocks[0].text == "No measurements: the benchmark step is pending."
    assert (partial / "report.pdf").is_file() and (partial / "report.html").is_file()


def test_report_names_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(MissingFileError, match="holds no run.json"):
        build_report(tmp_path)
