"""Which runtime runs a model fastest on this CPU: torch, ONNX Runtime and OpenVINO, each in fp32, bf16 and int8.

Part `cifar`: the akamaster CIFAR ResNet-`--depth` (pretrained, $CLEANAI_MODELS). Part `text`: the
TextClassifier folder given by `--text-model` (MiniLM fine-tuned on CLINC150), timed through
TextClassifierRunner (tokenising included): batch 1 on the query "What is the pin number for my account?", larger
batches on the first test queries.
Variants: the candidates of `cleanai.benchmark.runtime_candidates` (torch fp32 eager and `torch.compile`, ONNX
Runtime fp32 and int8, OpenVINO fp32, bf16 where the CPU has AVX512-BF16/AMX-BF16) with OpenVINO int8 by every route,
CleanAI's QDQ graph (`openvino_method="qdq"`) and NNCF (`"nncf"`, with asymmetric and with symmetric activations),
in place of the one `"auto"` would take, all calibrated on the same `--calib-batches` shuffled validation batches
(`QuantConfig.auto()`; the text part quantizes ONNX Runtime dynamically, as benchmarks/quantization.py does, and
statically as a row of its own, and OpenVINO statically).
Accuracy: once per variant on a seeded, class-balanced `--images` / `--text-images` subset of the test
split (the whole split when 0); parity: SQNR and top-1 agreement of each variant's logits against the
torch model's on the first test batch. Latency: p50 of `--runs` calls at batch 1 (`--runs-64` at batch
64) per cell, all variants of a cell timed by `compare_runners` in `--repeats` interleaved rounds, the
speed-up the median of per-round ratios against ONNX Runtime fp32; "!" marks a cell the harness flagged.
`auto`: in each cell `choose_among` (the choosing step of `choose_runtime` / `--runtime auto`) times the same
variants again in its own rounds and picks the fastest that passes parity; the table below the cells says how far
that pick is, in the cells' independent timing, behind the fastest passing variant there, against the noise auto
measured (the issue's goal: never more than that noise).
Raw rows: benchmarks/results/runtimes/<--run>/rows.json.
Usage: python benchmarks/runtimes.py [--part cifar|text|all] [--images 1000] [--threads 1 2] [--batches 1 64]
       [--runs 30] [--runs-64 5] [--repeats 3] [--text-model DIR] [--run NAME]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from cleanai.benchmark import (
    BOOK_QUERY,
    BenchmarkConfig,
    Runner,
    TextClassifierRunner,
    benchmark,
    choose_among,
    runtime_candidates,
)
from cleanai.data import TextDataset, load_dataset, raw_text_collate, subset, text_collate
from cleanai.models import TextClassifier, create_model
from cleanai.quantization import QuantConfig, quantize
from cleanai.quantization.check import make_probe, measure

import _report  # benchmarks/_report.py: scripts run from this folder
from _report import table

BASELINE = "onnxruntime fp32"
# OpenVINO int8 by each route, whatever auto would take: CleanAI's QDQ graph, NNCF with asymmetric activations (its
# MIXED preset) and with symmetric ones (PERFORMANCE)
ROUTES = {"openvino int8 qdq": {"openvino_method": "qdq"},
          "openvino int8 nncf": {"openvino_method": "nncf", "activation_symmetric": False},
          "openvino int8 nncf symmetric": {"openvino_method": "nncf", "activation_symmetric": True}}


def variants(model: nn.Module, calib: list[Any], example: Any, quant: QuantConfig, work: Path
             ) -> tuple[dict[str, Runner], dict[str, str]]:
    """The runtime candidates of `model`, OpenVINO int8 by each route (QDQ graph, NNCF) in place of the one
    `openvino_method="auto"` takes, and the candidates skipped with why."""
    runners, skipped = runtime_candidates(model, calib, example, quant, work)
    runners.pop("openvino int8", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each row shows its SQNR against fp32
        for name, fields in ROUTES.items():
            runners[name] = quantize(model, QuantConfig.auto(backend="openvino", **fields), calib=calib,
                                     example_inputs=example)
            runners[name].name = name
    return runners, skipped


def measure_part(runners: dict[str, Runner], model: nn.Module, probe_inputs: Any, test: DataLoader,
                 timing: dict[int, DataLoader], quant: QuantConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy, size and parity of every variant, the interleaved latency cells (`timing`: batch size -> the data
    its calls take), then in each cell `choose_among` (the choosing step of `runtime="auto"`) on its own timing."""
    probe = make_probe(model, [probe_inputs], True, "the first test batch", "runtimes")
    rows, parity = {}, {}
    for name, runner in runners.items():
        check = parity[name] = measure(getattr(runner, "inner", runner), probe, name)
        config = BenchmarkConfig(batch_size=1, warmup=0, runs=1, throughput_runs=0, threads=max(args.threads),
                                 progress=False)
        rows[name] = {**benchmark(runner, test, name=name, config=config).model_dump(mode="json"),
                      "parity_sqnr_db": check.sqnr_db, "parity_top1": check.top1_agreement}
        print(f"  {name}: accuracy {rows[name]['accuracy']:.4f}, {rows[name]['precision']}", flush=True)
    cells = _report.latency_cells(runners, timing, args, BASELINE)
    auto = {key: choose_among(runners, parity, source, config=config, quant=quant, repeats=args.repeats).to_dict()
            for key, source, config in _report.timing_cells(timing, args)}
    return {"rows": rows, "cells": cells, "auto": auto}


def cell_label(key: str) -> str:
    """A cell's key as its readers see it: "t2 b64" -> "threads 2, batch 64"."""
    return key.replace("t", "threads ").replace(" b", ", batch ")


def render_auto(cells: dict[str, Any], auto: dict[str, Any]) -> str:
    """Per cell: what `auto`'s choosing step picked on its own timing, and how far its pick is, in the table's
    independent timing, behind the fastest variant that passes parity, against the run-to-run noise auto measured."""
    body = []
    for key, choice in auto.items():
        spread = {c["name"]: c["latency_spread"] or 0.0 for c in choice["candidates"]}
        passing = [c["name"] for c in choice["candidates"] if c["passes_parity"]]
        best = min(passing, key=lambda n: cells[key][n]["latency_ms_p50"])
        chosen = choice["chosen"]
        gap = cells[key][chosen]["latency_ms_p50"] / cells[key][best]["latency_ms_p50"] - 1
        noise = max(spread[chosen], spread[best])
        body.append([cell_label(key), chosen, best, f"{gap:+.1%}", f"{noise:.1%}", "yes" if gap <= noise else "**NO**",
                     ", ".join(c["name"] for c in choice["candidates"] if not c["passes_parity"]) or "none"])
    return table(["cell", "auto chose", "fastest in the table", "its gap there", "noise auto measured",
                  "within noise", "failing parity (never chosen)"], body)


def render_part(result: dict[str, Any], args: dict[str, Any]) -> str:
    rows, cells = result["rows"], result["cells"]
    base = rows[BASELINE]

    def cell(name: str, key: str) -> str:
        row = cells[key][name]
        return f"{row['latency_ms_p50']:.2f} ({row['speedup']:.2f}x){' !' if row['timing_warning'] else ''}"

    body = [[name, r["precision"] or "-", f"{100 * r['accuracy']:.2f}", f"{100 * (r['accuracy'] - base['accuracy']):+.2f}",
             f"{r['parity_sqnr_db']:.1f}", f"{r['size_mb']:.2f}", *(cell(name, key) for key in cells)]
            for name, r in rows.items()]
    out = [table(["variant", "OpenVINO executes", "acc %", "Δacc pp", "SQNR dB", "size MB",
                  *(f"ms {cell_label(key)}" for key in cells)], body)]
    samples = base["eval_samples"]
    out += ["", f"Accuracy on {samples:,} test samples{'' if base['eval_whole_split'] else ' (a seeded subset)'}; "
            f"ms = p50, median of {args['repeats']} interleaved rounds; (x) = median per-round speed-up over "
            f"{BASELINE}; \"!\" = timing flagged by the harness (machine loaded or threads above idle cores)."]
    if "auto" in result:
        out += ["", "`auto` (`choose_among`, the choosing step of `choose_runtime`, over the variants above, timed "
                "again per cell in its own interleaved rounds):", "", render_auto(cells, result["auto"])]
    if result.get("skipped"):
        out += ["", "Not built here: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items())]
    qdq, nncf, symmetric = ROUTES
    pairs = [(qdq, nncf, "QDQ graph vs NNCF: QDQ"),
             (symmetric, nncf, "NNCF symmetric vs asymmetric activations: symmetric")]
    for a, b, what in pairs:
        if a in rows and b in rows:  # (runs before the symmetric route have no such row)
            faster = [key for key in cells if cells[key][a]["latency_ms_p50"] <= cells[key][b]["latency_ms_p50"]]
            out += ["", f"OpenVINO int8, {what} faster in {len(faster)} of {len(cells)} cells; accuracy "
                    f"{100 * rows[a]['accuracy']:.2f} vs {100 * rows[b]['accuracy']:.2f} %."]
    return "\n".join(out)


def render(record: dict[str, Any]) -> str:
    """The tables of one run, from its record (what this script prints and BENCHMARKS.md shows)."""
    out = [_report.heading(record)]
    for part in ("cifar", "text"):
        if part in record:
            out += ["", f"{part}: {record[part]['source']}", "", render_part(record[part], record["args"])]
    return "\n".join(out)


def run_cifar(args: argparse.Namespace) -> dict[str, Any]:
    model = create_model(f"resnet{args.depth}", pretrained="akamaster").eval()
    splits = load_dataset("cifar10")
    calib = list(itertools.islice(DataLoader(splits.val, batch_size=args.calib_batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(0)), args.calib_batches))
    test = DataLoader(subset(splits.test, args.images or None), batch_size=250)
    quant = QuantConfig.auto()
    print(f"\n## CIFAR ResNet-{args.depth} (akamaster); int8 = {quant.describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="runtimes-") as work:
        runners, skipped = variants(model, calib, calib[0][0][:2], quant, Path(work))
        first = next(iter(test))[0]
        timing = DataLoader(test.dataset, batch_size=max(args.batches))
        result = measure_part(runners, model, first, test, dict.fromkeys(args.batches, timing), quant, args)
    return {"source": f"akamaster ResNet-{args.depth}; int8 = {quant.describe()} calibrated on {args.calib_batches} x "
                      f"{args.calib_batch_size} validation images", **result, "skipped": skipped}


def run_text(args: argparse.Namespace) -> dict[str, Any]:
    if args.text_model is None:
        raise SystemExit("--part text needs --text-model DIR (a TextClassifier.save_pretrained folder)")
    splits = load_dataset("clinc150")
    model = TextClassifier.from_pretrained(args.text_model).eval()
    collate = text_collate(model.tokenizer)
    calib = list(itertools.islice(DataLoader(splits.val, batch_size=args.calib_batch_size, shuffle=True,
                                             collate_fn=collate, generator=torch.Generator().manual_seed(0)),
                                  args.calib_batches))
    example = collate([(BOOK_QUERY, 0)])[0]
    quant = QuantConfig.auto(is_static=False)
    print(f"\n## {args.text_model} on CLINC150; ORT int8 = {quant.describe()}, OpenVINO int8 static", flush=True)
    with tempfile.TemporaryDirectory(prefix="runtimes-") as work:
        built, skipped = variants(model, calib, example, quant, Path(work))
        inner = {}
        for name, runner in built.items():
            inner[name] = runner
            if name == "onnxruntime int8":  # static beside dynamic: the QDQ graph OpenVINO's qdq route reads too
                inner["onnxruntime int8 static"] = quantize(model, QuantConfig.auto(), calib=calib,
                                                            example_inputs=example)
        runners = {name: TextClassifierRunner(model.tokenizer, r, max_length=64, name=name) for name, r in inner.items()}
        test = DataLoader(subset(splits.test, args.text_images or None), batch_size=64, collate_fn=raw_text_collate)
        query = DataLoader(TextDataset([BOOK_QUERY], [0]), batch_size=1, collate_fn=raw_text_collate)
        first = collate([(t, 0) for t in next(iter(test))[0]])[0]
        queries = DataLoader(test.dataset, batch_size=max(args.batches), collate_fn=raw_text_collate)
        result = measure_part(runners, model, first, test, {b: query if b == 1 else queries for b in args.batches},
                              quant, args)
    return {"source": f"{args.text_model}; ORT int8 = {quant.describe()}", **result, "skipped": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["cifar", "text", "all"], default="cifar")
    parser.add_argument("--depth", type=int, default=56, choices=[20, 32, 44, 56, 110])
    parser.add_argument("--images", type=int, default=1000, help="CIFAR test images for accuracy (0: all 10,000)")
    parser.add_argument("--text-model", type=Path, default=None, help="a TextClassifier.save_pretrained folder")
    parser.add_argument("--text-images", type=int, default=0, help="CLINC150 test queries (0: all 5,500)")
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--calib-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="batch sizes timed")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=30, help="timed batch-1 calls per cell and round")
    parser.add_argument("--runs-64", type=int, default=5, help="timed calls per cell and round at larger batches")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per cell (median quoted)")
    parser.add_argument("--run", default=None, help="name of the results folder (default: <part>_resnet<depth>)")
    args = parser.parse_args()
    record = _report.run_parts(args, {"cifar": run_cifar, "text": run_text}, ("onnxruntime", "openvino", "nncf"))
    print(render(record))


if __name__ == "__main__":
    main()
