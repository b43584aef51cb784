"""The optimize report: the search's sections (budget and choice, Pareto front, every trial) in front of the recipe
report of the chosen pipeline's final run, rendered as report.pdf and report.html in the out folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cleanai.recipes import build_report
from cleanai.reporting import Document, Figure, Paragraph, Section, Table, pareto_png, render_html, render_pdf

if TYPE_CHECKING:
    from cleanai.optimize.search import OptimizeResult


def front_png(result: OptimizeResult) -> bytes:
    """Validation accuracy against batch-1 latency of every finished trial; bubble area ~ artifact size."""
    done = [r for r in result.trials if r["state"] == "complete"]
    largest = max((r["size_mb"] for r in done), default=1.0) or 1.0
    chosen = result.chosen
    return pareto_png([(r["latency_ms"], 100 * r["val_accuracy"], 300 * r["size_mb"] / largest, r["pareto"])
                       for r in done],
                      f"{len(done)} candidates, {len(result.front)} on the Pareto front", xlabel="latency ms (batch 1)",
                      ylabel="validation accuracy %", floor=100 * result.floor,
                      chosen=None if chosen is None or not result.met else (chosen["latency_ms"],
                                                                            100 * chosen["val_accuracy"]))


def _number(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def _choice(result: OptimizeResult) -> Section:
    cfg, base = result.config, result.baseline
    onnx = ("" if base.get("latency_ms_onnx") is None else
            f", {base['latency_ms_onnx']:.3f} ms as fp32 ONNX")
    text = [f"The original model reaches {100 * base['val_accuracy']:.2f} % on the validation split and runs a batch "
            f"of one in {base['latency_ms_torch']:.3f} ms in torch fp32{onnx} on {cfg.threads} thread(s). Budget: at "
            f"most {cfg.max_accuracy_drop:g} point(s) lost, so a candidate needs {100 * result.floor:.2f} % on the "
            f"validation split" + (f", at most {cfg.target_latency_ms:g} ms" if cfg.target_latency_ms else "")
            + (f", at most {cfg.target_size_mb:g} MB" if cfg.target_size_mb else "") + "."]
    if base.get("onnx_error"):
        text.append(f"ONNX Runtime cannot measure this model, so the torch artifact stands in: {base['onnx_error']}")
    rule = {"latency": "the lowest batch-1 latency of its deployed artifact",
            "size": "the smallest deployed artifact",
            "pareto": "the lowest product of latency and size, each relative to the fp32 ONNX model"}[cfg.objective]
    row = result.chosen
    near = result.near_misses
    if near:
        text.append(f"Near misses (at most {cfg.near_miss_margin:g} point(s) under the floor in the search, and ahead "
                    f"of the search's choice on the objective) were rerun with the final fine-tune ({cfg.final_epochs} "
                    "epoch(s), no benchmark), best first, until one met the floor on validation: " + "; ".join(
                        f"#{r['number']} {100 * r['val_accuracy_search']:.2f} % -> {100 * r['val_accuracy']:.2f} % "
                        f"({'meets' if r['meets_budget'] else 'misses'})" for r in near) + ".")
    if row is not None and result.met:
        kept = ", ".join(row["fp32_layers"])
        why = ("a near miss in the search that met the floor after the final fine-tune; ahead of it on the objective "
               "were only near misses that did not" if not row["meets_budget"] else
               f"among the {sum(r['meets_budget'] for r in result.trials)} candidate(s) within budget it has {rule}")
        text.append(f"Chosen: trial #{row['number']}, {row['candidate']}; {why} "
                    f"(search: {row['latency_ms']:.3f} ms, {row['size_mb']:.3f} MB, validation accuracy "
                    f"{100 * row['val_accuracy']:.2f} %)." +
                    (f" Layers kept in fp32 by the accuracy-budget search: {kept}." if kept else ""))
    else:
        text.append(f"No candidate meets the budget: {result.gap}.")
    final = result.final
    if final:
        text.append(f"Final pipeline (rerun from recipe.yaml with {cfg.final_epochs} fine-tuning epoch(s)): "
                    f"validation accuracy {100 * final['val_accuracy']:.2f} % ("
                    f"{'within' if final['meets_budget_on_val'] else 'OUTSIDE'} the budget); test accuracy "
                    f"{100 * final['test_accuracy']:.2f} % against the original's "
                    f"{100 * final['test_accuracy_original']:.2f} %; "
                    f"{final['speedup_vs_torch']:.2f}x faster than torch fp32 at batch 1, {final['size_mb']:.3f} MB "
                    f"against {final['size_mb_original']:.3f} MB. No choice read the test split.")
    return Section("Optimize: budget and choice", [Paragraph(t) for t in text])


def _trial_table(rows: list[dict[str, Any]], caption: str) -> Table:
    body = [[f"#{r['number']}" + (" *" if r.get("pareto") else ""), r["state"], r["candidate"],
             _number(r["val_accuracy"], 2, 100), _number(r["latency_ms"]), _number(r["size_mb"]),
             "yes" if r.get("meets_budget") else "-",
             r.get("fail_reason") or r.get("fallback") or (f"fp32: {', '.join(r['fp32_layers'])}" if r["fp32_layers"]
                                                           else "")]
            for r in rows]
    return Table(["trial", "state", "pipeline", "val acc %", "latency ms", "size MB", "in budget", "note"], body,
                 caption)


def build_document(result: OptimizeResult) -> Document:
    """The report: the search's sections, then (after a final run) the recipe report of that run."""
    front = Section("Pareto front", [
        _trial_table(result.front, "Trials no other trial beats on validation accuracy, latency and size at once."),
        Figure(front_png(result), "Validation accuracy against batch-1 latency of every finished trial; bubble area "
                                  "proportional to the artifact's size; the dashed line is the budget.")])
    trials = Section("Every trial", [_trial_table(result.trials, "* on the Pareto front; pruned: stopped early by "
                                                                 "successive halving of the fine-tuning budget.")])
    sections = [_choice(result), front, trials]
    final = result.out / "final"
    title = f"cleanai optimize: {result.out.name}"
    if result.met and (final / "run.json").is_file():
        run_report = build_report(final)
        return Document(title, f"{result.recipe} -> {final}", [*sections, *run_report.sections])
    return Document(title, str(result.out), sections)


def write_report(result: OptimizeResult) -> list[Path]:
    """Write report.pdf and report.html into the out folder; return their paths."""
    document = build_document(result)
    return [render_pdf(document, result.out / "report.pdf"), render_html(document, result.out / "report.html")]
