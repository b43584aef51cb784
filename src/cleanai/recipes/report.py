"""`cleanai report`: a run folder read back as one `Document`, rendered to report.pdf and report.html.

Only files the steps wrote are read (run.json, each step's folder); a step not finished is listed as
missing and its section says so, so an interrupted run still gets its report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from cleanai.benchmark import Measurement, environment, load_rows
from cleanai.errors import MissingFileError
from cleanai.recipes.runner import RUN_FILE, read_status
from cleanai.reporting import (
    Code,
    Document,
    Figure,
    Paragraph,
    Section,
    Table,
    curves_png,
    render_html,
    render_pdf,
    widths_png,
)

_DONE = ("done", "cached")
_CURVES = ("train_loss", "val_loss", "val_accuracy")
_MAX_LAYERS = 40  # widths chart: the layers that changed most, at most this many


def _read(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def _steps(run: Path, status: dict[str, Any]) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Each finished step folder once, with the variants that use it."""
    seen: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for variant, entries in status["variants"].items():
        for entry in entries:
            if entry["status"] in _DONE:
                seen.setdefault(entry["folder"], (entry, []))[1].append(variant)
    yield from seen.values()


def _missing(status: dict[str, Any]) -> list[str]:
    out = [f"{variant}: {e['id']} ({e['type']}, {e['status']})" for variant, entries in status["variants"].items()
           for e in entries if e["status"] not in _DONE]
    bench = status.get("benchmark")
    if bench is not None and bench["status"] not in _DONE:
        out.append(f"all variants: {bench['id']} (benchmark, {bench['status']})")
    return out


def _summary(run: Path, status: dict[str, Any], missing: list[str], notes: str | None) -> Section:
    state = "complete" if not missing else f"incomplete: {len(missing)} step(s) missing"
    section = Section("Run summary", [Paragraph(" ".join(notes.split()))] if notes else [])
    section.blocks.append(Paragraph(
        f"Recipe {status['recipe']!r} ({status['recipe_file']}), run folder {run.resolve()}; started "
        f"{status['started']}, finished {status['finished'] or '-'}; {state}."))
    rows = [[variant, e["id"], e["type"], e["status"], e.get("key", "-"),
             f"{e['seconds']:.1f}" if "seconds" in e else "-"]
            for variant, entries in status["variants"].items() for e in entries]
    bench = status.get("benchmark")
    if bench is not None:
        rows.append(["all", bench["id"], "benchmark", bench["status"], bench.get("key", "-"),
                     f"{bench['seconds']:.1f}" if "seconds" in bench else "-"])
    section.blocks.append(Table(["variant", "step", "type", "status", "key", "seconds"], rows,
                                "cached: skipped on this run, its key (hash of config and inputs) unchanged"))
    if missing:
        section.blocks.append(Paragraph("Missing steps: " + "; ".join(missing) + ". Run `cleanai run` again with "
                                        "the same recipe and --out to resume; finished steps are skipped."))
    errors = [f"{e['id']}: {e['error']}" for entries in status["variants"].values() for e in entries if "error" in e]
    if bench is not None and "error" in bench:
        errors.append(f"{bench['id']}: {bench['error']}")
    if errors:
        section.blocks.append(Code("\n".join(errors)))
    return section


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _variants(run: Path, status: dict[str, Any]) -> tuple[Section, list[Measurement]]:
    section = Section("Variants")
    bench = status.get("benchmark")
    if bench is None or bench["status"] not in _DONE:
        reason = "the recipe has no benchmark step" if bench is None else f"the benchmark step is {bench['status']}"
        section.blocks.append(Paragraph(f"No measurements: {reason}."))
        return section, []
    folder = run / bench["folder"]
    rows = load_rows(folder / "results.json")
    base = rows[0]
    table = []
    for r in rows:
        speed = r.speedup if r.speedup is not None else base.latency_ms_p50 / r.latency_ms_p50
        table.append([r.name + (" *" if r.timing_warning else ""), f"{100 * r.accuracy:.2f}", f"{r.size_mb:.3f}",
                      f"{r.latency_ms_mean:.3f} ± {r.latency_ms_std:.3f}", f"{r.latency_ms_p99:.3f}",
                      "-" if r.params is None else f"{r.params:,}", "-" if r.macs is None else f"{r.macs:,}",
                      _ratio(speed), _ratio(base.size_mb / r.size_mb if r.size_mb else None)])
    caption = (f"Test split ({base.eval_samples} samples{'' if base.eval_whole_split else ', not the whole split'}); "
               f"latency per call at batch {base.batch_size}, {base.threads} thread(s), median of {base.rounds} "
               f"interleaved round(s); speed-up = baseline p50 / p50 (median of per-round ratios), size ratio = "
               f"baseline size / size; baseline: {base.name}." +
               (" * timing flagged unreliable (see results.json: timing_warning)." if any(r.timing_warning for r in rows)
                else ""))
    section.blocks.append(Table(["variant", "accuracy %", "size MB", "latency ms mean ± std", "p99 ms", "params",
                                 "MACs", "speed-up", "size ratio"], table, caption))
    if (folder / "metrics.png").is_file():
        section.blocks.append(Figure((folder / "metrics.png").read_bytes(),
                                     "Accuracy vs latency p50; bubble area proportional to the artifact's size."))
    return section, rows


def _pruning(run: Path, steps: list[tuple[dict[str, Any], list[str]]]) -> Section:
    section = Section("Pruning: channels per layer")
    for entry, variants in steps:
        if entry["type"] != "prune":
            continue
        report = _read(run / entry["folder"], "prune_report.json")
        changed = sorted((layer for layer in report["layers"] if layer["after"] != layer["before"]),
                         key=lambda layer: layer["after"] / max(layer["before"], 1))[:_MAX_LAYERS]
        changed.sort(key=lambda layer: [x["name"] for x in report["layers"]].index(layer["name"]))
        title = f"{', '.join(variants)}: {report['criterion']}"
        text = (f"{title}: params {report['params_before']:,} -> {report['params_after']:,} "
                f"({report['params_ratio']:.1%}), MACs {report['macs_before']:,} -> {report['macs_after']:,} "
                f"({report['macs_ratio']:.1%}); {len(changed)} layer(s) changed width.")
        section.blocks.append(Paragraph(text))
        if changed:
            section.blocks.append(Figure(widths_png([(x["name"], x["before"], x["after"]) for x in changed], title),
                                         f"Width of each pruned layer before and after ({title})."))
    if not section.blocks:
        section.blocks.append(Paragraph("No finished prune step."))
    return section


def _histories(run: Path, entry: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    folder = run / entry["folder"]
    if (folder / "history.json").is_file():
        yield entry["id"], _read(folder, "history.json")
    if (folder / "prune_history.json").is_file():
        for step in _read(folder, "prune_history.json")["steps"]:
            if step.get("finetune_history"):
                yield f"{entry['id']} step {step['step']} fine-tuning", step["finetune_history"]


def _curves(run: Path, steps: list[tuple[dict[str, Any], list[str]]]) -> Section:
    section = Section("Training and fine-tuning curves")
    for entry, variants in steps:
        for label, history in _histories(run, entry):
            series = {key: [r[key] for r in history["records"] if key in r] for key in _CURVES}
            series = {k: v for k, v in series.items() if v}
            if series:
                title = f"{label} ({', '.join(variants)})"
                section.blocks.append(Figure(curves_png(series, title), f"Per-epoch losses and validation accuracy: "
                                                                        f"{title}."))
    if not section.blocks:
        section.blocks.append(Paragraph("No finished training, fine-tuning or distillation step."))
    return section


def _tuning(run: Path, steps: list[tuple[dict[str, Any], list[str]]]) -> Section:
    section = Section("Hyperparameter search")
    for entry, variants in steps:
        if entry["type"] != "tune":
            continue
        folder = run / entry["folder"]
        best = _read(folder, "best.json")
        trial = best["best"][0]
        section.blocks.append(Paragraph(
            f"{entry['id']} ({', '.join(variants)}): best trial {trial['number']}, "
            f"{', '.join(best['metrics']) or 'value'} {', '.join(f'{v:.4g}' for v in trial['values'])}; "
            f"its parameters trained the step's model: " + ", ".join(f"{k}={v}" for k, v in trial["params"].items())))
        section.blocks.append(Code((folder / "summary.txt").read_text(encoding="utf-8").strip()))
        for png in sorted((folder / "plots").glob("*.png")):
            section.blocks.append(Figure(png.read_bytes(), f"{entry['id']}: {png.stem.replace('_', ' ')}."))
    if not section.blocks:
        section.blocks.append(Paragraph("No finished tune step."))
    return section


def _quantization(run: Path, steps: list[tuple[dict[str, Any], list[str]]]) -> Section:
    section = Section("Quantization check")
    rows = []
    for entry, variants in steps:
        if entry["type"] == "quantize":
            check = _read(run / entry["folder"], "quant_check.json") or {}
            config = _read(run / entry["folder"], "quant_config.json")
            agreement = check.get("top1_agreement")
            rows.append([", ".join(variants), f"{config['mode']} {config['backend']}",
                         "-" if "sqnr_db" not in check else f"{check['sqnr_db']:.1f}",
                         "-" if agreement is None else f"{100 * agreement:.1f}", str(check.get("samples", "-")),
                         str(check.get("held_out", "-"))])
    if rows:
        section.blocks.append(Table(["variants", "quantization", "output SQNR dB", "top-1 agreement %", "samples",
                                     "held out from calibration"], rows,
                                    "The int8 artifact's logits against fp32's (cleanai.quantization.check)."))
    else:
        section.blocks.append(Paragraph("No finished quantize step."))
    return section


def _environment(rows: list[Measurement]) -> Section:
    if rows:
        r = rows[0]
        env = {"cpu": r.cpu, "cpu_count": r.cpu_count, "cpu_features": r.cpu_features, "versions": r.versions}
        note = f"Where the benchmark ran ({r.timestamp}); threads {r.threads}, provider of ONNX rows: " + ", ".join(
            sorted({x.provider for x in rows if x.provider})) + "."
    else:
        env, note = environment(), "No benchmark finished: the machine the report was written on."
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return Section("Environment", [Paragraph(note), Table(["item", "value"], [
        ["CPU", str(env["cpu"])], ["usable cores", str(env["cpu_count"])],
        ["instruction sets", env["cpu_features"] or "-"], ["versions", versions]])])


def build_report(run_dir: str | os.PathLike[str], title: str | None = None) -> Document:
    """The report of a run folder as a `Document` (summary, config, variants, pruning, curves, tuning,
    quantization, environment)."""
    run = Path(run_dir)
    if not (run / RUN_FILE).is_file():
        raise MissingFileError(f"{str(run)!r} holds no {RUN_FILE}: give a folder `cleanai run` wrote")
    status = read_status(run)
    recipe = json.loads((run / "recipe.json").read_text(encoding="utf-8"))
    title = title or (recipe.get("report") or {}).get("title") or f"CleanAI run: {status['recipe']}"
    missing = _missing(status)
    steps = list(_steps(run, status))
    variants, rows = _variants(run, status)
    sections = [_summary(run, status, missing, (recipe.get("report") or {}).get("notes")),
                Section("Configuration", [Code(yaml.safe_dump(recipe, sort_keys=False).strip())]),
                variants, _pruning(run, steps), _curves(run, steps), _tuning(run, steps), _quantization(run, steps),
                _environment(rows)]
    return Document(title, f"{status['recipe_file']} -> {run}", sections)


def write_report(run_dir: str | os.PathLike[str], formats: Sequence[str] = ("pdf", "html"),
                 title: str | None = None) -> list[Path]:
    """Write report.pdf and/or report.html into the run folder; return their paths."""
    document = build_report(run_dir, title)
    render = {"pdf": render_pdf, "html": render_html}
    return [render[kind](document, Path(run_dir) / f"report.{kind}") for kind in formats]
