"""Does int8 in ONNX Runtime make a CIFAR ResNet and a MiniLM intent classifier faster and smaller, at what accuracy?

Part `cifar`: the CIFAR ResNet-`--depth` fine-tuned on the JPEG training split by
benchmarks/cifar_pretrained.py (runs/finetuned/resnet<depth>_cifar10jpeg.safetensors; the akamaster
checkpoint when that file is absent) as ORT fp32 (`OrtRunner.from_model`), ORT static int8 (QDQ,
`QuantConfig.auto()`, calibrated on `--calib-batches` shuffled validation batches), torch fp32 and torch
static int8 (PT2E + X86InductorQuantizer + torch.compile, `QuantConfig.auto(backend="torch")`), at
batch 1 and 64. Goals (issue 4): ORT int8 >= 2.5x faster than ORT fp32 at batch 1, <= 1 point accuracy
drop on the whole test split, >= 3.5x smaller.
Part `text`: all-MiniLM-L6-v2 fine-tuned on CLINC150 (full, 151 labels with "oos"; `--text-weights`, a
TextClassifier.save_pretrained directory, or fine-tuned here and saved under `--out`) as ORT fp32, ORT
dynamic int8, torch fp32 and torch dynamic int8, through TextClassifierRunner (tokenising is timed), at
batch 1 on the query "What is the pin number for my account?". Goals: ORT int8 >= 1.8x faster than ORT
fp32, >= 3.5x smaller, accuracy within 0.5 point.
Latency: p50 of `--runs` calls (`--runs-64` at batch 64) per cell; the variants of a part are timed by
`compare_runners`, `--repeats` interleaved rounds in one process, medians quoted, speed-ups the median of
per-round ratios; a cell the harness found unreliable is marked "!". With one thread the process CPU time
per call is quoted beside the wall time ("cpu"): on a shared machine other processes stretch wall times
(the longer a call, the likelier it is preempted), which CPU time leaves out. Accuracy: once per variant on
the whole test split (or a seeded `--test-subset` / `--text-test-subset`, which the table says). Size: bytes
of the saved artifact. Artifacts go to `--out`; raw rows to benchmarks/results/quantization/<--run>/rows.json.
Usage: python benchmarks/quantization.py [--part cifar|text|all] [--depth 56] [--threads 1 2] [--runs 100]
       [--test-subset N] [--text-weights DIR] [--text-epochs 1] [--text-train-subset N] [--text-test-subset N]
       [--run NAME]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from cleanai.benchmark import (
    BOOK_QUERY,
    BenchmarkConfig,
    OrtRunner,
    Runner,
    TextClassifierRunner,
    TorchRunner,
    benchmark,
)
from cleanai.data import TextDataset, load_dataset, raw_text_collate, subset, text_collate
from cleanai.models import TextClassifier, create_model
from cleanai.quantization import QuantConfig, quantize
from cleanai.training import TrainConfig, Trainer

import _report  # benchmarks/_report.py: scripts run from this folder
from _report import table

ORT_FP32, ORT_INT8 = "ORT fp32", "ORT int8"
GOALS = {"cifar": {"speedup": 2.5, "size": 3.5, "drop": 1.0}, "text": {"speedup": 1.8, "size": 3.5, "drop": 0.5}}


def timed(build: Any) -> tuple[Runner, float]:
    """The runner `build()` returns and the seconds it took (export, calibration, quantization)."""
    start = time.perf_counter()
    return build(), time.perf_counter() - start


def ort_fp32(model: nn.Module, example: Any) -> OrtRunner:
    """The fp32 baseline: `model` exported to ONNX (parity-checked) and run in ONNX Runtime."""
    return OrtRunner.from_model(model, example, name=ORT_FP32, dynamic_sequence=isinstance(example, dict))


def cifar_model(depth: int) -> tuple[nn.Module, str]:
    """The fine-tuned ResNet when benchmarks/cifar_pretrained.py saved one, else the akamaster checkpoint."""
    path = Path(f"runs/finetuned/resnet{depth}_cifar10jpeg.safetensors")
    if path.exists():
        return create_model(f"resnet{depth}", pretrained=path).eval(), str(path)
    return create_model(f"resnet{depth}", pretrained="akamaster").eval(), "akamaster (no fine-tuned file found)"


def cifar_variants(model: nn.Module, calib: list[Any], args: argparse.Namespace) -> dict[str, tuple[Runner, float]]:
    """ORT fp32 / static int8 and torch fp32 / static int8 (PT2E, compiled) of the ResNet, int8 on the same `calib`."""
    work = args.out / f"resnet{args.depth}"
    return {
        ORT_FP32: timed(lambda: ort_fp32(model, calib[0][0][:2])),
        ORT_INT8: timed(lambda: quantize(model, QuantConfig.auto(), calib=calib, workdir=work)),
        "torch fp32": timed(lambda: TorchRunner(model, name="torch fp32")),
        "torch int8": timed(lambda: quantize(model, QuantConfig.auto(backend="torch"), calib=calib)),
    }


def text_model(splits: Any, args: argparse.Namespace) -> tuple[TextClassifier, str]:
    """The classifier of `--text-weights`, or MiniLM fine-tuned here on CLINC150 and saved under `--out`."""
    if args.text_weights is not None:
        return TextClassifier.from_pretrained(args.text_weights).eval(), str(args.text_weights)
    model = create_model("text_classifier", label_names=splits.label_names)
    train = subset(splits.train, args.text_train_subset)
    loader = DataLoader(train, batch_size=32, shuffle=True, collate_fn=text_collate(model.tokenizer),
                        generator=torch.Generator().manual_seed(0))
    steps = args.text_epochs * len(loader)
    config = TrainConfig(epochs=args.text_epochs, optimizer="adamw", lr=args.text_lr,
                         optimizer_kwargs={"weight_decay": 0.01}, scheduler="warmup_cosine",
                         scheduler_kwargs={"warmup_steps": max(1, steps // 16)}, seed=0, progress=False, device="cpu")
    start = time.perf_counter()
    Trainer(model, config=config).fit(loader)
    minutes = (time.perf_counter() - start) / 60
    path = model.save_pretrained(args.out / "minilm-clinc150")
    return model.eval(), (f"all-MiniLM-L6-v2 fine-tuned here: {args.text_epochs} epoch(s) on {len(train):,} training "
                          f"queries, AdamW lr {args.text_lr}, batch 32, in {minutes:.1f} min; saved to {path}")


def text_variants(model: TextClassifier, args: argparse.Namespace) -> dict[str, tuple[Runner, float]]:
    """ORT fp32 / dynamic int8 and torch fp32 / dynamic int8 of the classifier, each tokenising its input."""
    example = text_collate(model.tokenizer)([(BOOK_QUERY, 0)])[0]
    dynamic = QuantConfig.auto(is_static=False)
    builds = {
        ORT_FP32: lambda: ort_fp32(model, example),
        ORT_INT8: lambda: quantize(model, dynamic, example_inputs=example, workdir=args.out / "minilm-int8"),
        "torch fp32": lambda: TorchRunner(model, name="torch fp32"),
        "torch int8": lambda: quantize(model, QuantConfig.auto(is_static=False, backend="torch")),
    }
    return {name: timed(lambda b=build: TextClassifierRunner(model.tokenizer, b(), max_length=64))
            for name, build in builds.items()}


def accuracy_row(name: str, runner: Runner, test: DataLoader, args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy over the whole test loader, artifact size and parameters of one variant."""
    config = BenchmarkConfig(batch_size=1, warmup=0, runs=1, throughput_runs=0, threads=max(args.threads),
                             progress=False)
    return benchmark(runner, test, name=name, config=config).model_dump()


def measure(part: str, variants: dict[str, tuple[Runner, float]], test: DataLoader, timing: DataLoader,
            batches: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy, size and the interleaved latency cells of every variant of one part."""
    rows = {name: {**accuracy_row(name, runner, test, args), "build_seconds": seconds}
            for name, (runner, seconds) in variants.items()}
    print(f"accuracy done ({part})", flush=True)
    cells = _report.latency_cells({name: runner for name, (runner, _) in variants.items()},
                                  dict.fromkeys(batches, timing), args, ORT_FP32)
    return {"rows": rows, "cells": cells}


def render_part(part: str, result: dict[str, Any], args: dict[str, Any]) -> str:
    """The variant table and the goal table of one part."""
    rows, cells = result["rows"], result["cells"]
    # Wall time for every cell; CPU time beside it with one thread, where it is the latency free of other processes.
    columns = [(cell, cpu) for cell in cells for cpu in (False, *([True] * cell.startswith("t1 ")))]

    def ms(name: str, cell: str, cpu: bool) -> str:
        row = cells[cell][name]
        return f"{row['latency_cpu_ms_p50' if cpu else 'latency_ms_p50']:.3f}" + (" !" if row["timing_warning"] else "")

    base = rows[ORT_FP32]
    out = [table(["variant", "acc %", "Δacc pp", "size MB", "x smaller",
                  *(f"ms {cell}{' cpu' if cpu else ''}" for cell, cpu in columns), "build s"],
                 [[name, f"{100 * r['accuracy']:.2f}", f"{100 * (r['accuracy'] - base['accuracy']):+.2f}",
                   f"{r['size_mb']:.2f}", f"{base['size_mb'] / r['size_mb']:.2f}x",
                   *(ms(name, cell, cpu) for cell, cpu in columns), f"{r['build_seconds']:.1f}"]
                  for name, r in rows.items()])]
    goal, int8 = GOALS[part], rows[ORT_INT8]
    size, drop = base["size_mb"] / int8["size_mb"], 100 * (base["accuracy"] - int8["accuracy"])
    speedups = [(f"{cell.split()[0][1:]} thread(s){', CPU time' if cpu else ''}", cells[cell][ORT_INT8], cpu)
                for cell, cpu in columns if cell.endswith(" b1")]
    out += ["", f"Goals, ORT int8 vs ORT fp32 ({int8['eval_samples']:,} test samples"
            f"{'' if int8['eval_whole_split'] else ', a subset'}; speed-up = median of {args['repeats']} per-round "
            "ratios; \"!\" = timing flagged by the harness):", ""]
    goal_rows = []
    for label, row, cpu in speedups:
        s = row["speedup_cpu" if cpu else "speedup"]
        flag = " ! " + row["timing_warning"] if row["timing_warning"] else ""
        goal_rows.append([f"speed-up at batch 1, {label}", f">= {goal['speedup']}x", f"{s:.2f}x{flag}",
                          "yes" if s >= goal["speedup"] else "NO"])
    goal_rows += [["size ratio", f">= {goal['size']}x", f"{size:.2f}x", "yes" if size >= goal["size"] else "NO"],
                  ["accuracy drop", f"<= {goal['drop']} pp", f"{drop:+.2f} pp", "yes" if drop <= goal["drop"] else "NO"]]
    return "\n".join(out + [table(["goal", "target", "measured", "met"], goal_rows)])


def render(record: dict[str, Any]) -> str:
    """The tables of one run, from its record (what this script prints and BENCHMARKS.md shows)."""
    out = [_report.heading(record)]
    for part in ("cifar", "text"):
        if part in record:
            out += ["", f"{part}: {record[part]['source']}", "", render_part(part, record[part], record["args"])]
    return "\n".join(out)


def run_cifar(args: argparse.Namespace) -> dict[str, Any]:
    model, source = cifar_model(args.depth)
    splits = load_dataset("cifar10")
    calib = list(itertools.islice(DataLoader(splits.val, batch_size=args.calib_batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(0)), args.calib_batches))
    test = DataLoader(subset(splits.test, args.test_subset), batch_size=250)
    print(f"\n## CIFAR ResNet-{args.depth} ({source}); calibration: {args.calib_batches} x {args.calib_batch_size} "
          f"validation images; ORT int8 = {QuantConfig.auto().describe()}; torch int8 = "
          f"{QuantConfig.auto(backend='torch').describe()} (PT2E + torch.compile)\n", flush=True)
    variants = cifar_variants(model, calib, args)
    return {"source": source, **measure("cifar", variants, test, DataLoader(test.dataset, batch_size=64), [1, 64], args)}


def run_text(args: argparse.Namespace) -> dict[str, Any]:
    splits = load_dataset("clinc150")
    model, source = text_model(splits, args)
    test = DataLoader(subset(splits.test, args.text_test_subset), batch_size=64, collate_fn=raw_text_collate)
    query = DataLoader(TextDataset([BOOK_QUERY], [0]), batch_size=1, collate_fn=raw_text_collate)
    print(f"\n## MiniLM on CLINC150 ({source}); ORT int8 = {QuantConfig.auto(is_static=False).describe()}; torch int8 "
          f"= {QuantConfig.auto(is_static=False, backend='torch').describe()} (torch_api auto: torch.ao quantize_dynamic "
          f"while torch ships it); latency on {BOOK_QUERY!r}, tokenising included\n", flush=True)
    return {"source": source, **measure("text", text_variants(model, args), test, query, [1], args)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["cifar", "text", "all"], default="all")
    parser.add_argument("--depth", type=int, default=56, choices=[20, 32, 44, 56, 110])
    parser.add_argument("--test-subset", type=int, default=None, help="default: all 10,000 CIFAR test images")
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--calib-batch-size", type=int, default=64)
    parser.add_argument("--text-weights", type=Path, default=None, help="a TextClassifier.save_pretrained directory")
    parser.add_argument("--text-epochs", type=int, default=1)
    parser.add_argument("--text-lr", type=float, default=1e-4)
    parser.add_argument("--text-train-subset", type=int, default=None, help="default: all 15,100 training queries")
    parser.add_argument("--text-test-subset", type=int, default=None, help="default: all 5,500 test queries")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=100, help="timed batch-1 calls per cell and round")
    parser.add_argument("--runs-64", type=int, default=10, help="timed batch-64 calls per cell and round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per cell (median quoted)")
    parser.add_argument("--out", type=Path, default=Path("runs/quantization"), help="where the artifacts go")
    parser.add_argument("--run", default=None, help="name of the results folder (default: <part>_resnet<depth>)")
    args = parser.parse_args()
    record = _report.run_parts(args, {"cifar": run_cifar, "text": run_text}, ("onnxruntime", "torchao"))
    print(render(record))


if __name__ == "__main__":
    main()
