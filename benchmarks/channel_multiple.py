"""Which channel multiple should a pruned layer keep so ONNX Runtime runs it fastest, in fp32 and in int8?

The pretrained akamaster CIFAR ResNet-56 is pruned by magnitude (in-block channels, residual widths kept) at
each `--ratios` value with kept channels rounded to each `--multiples` value (`PruneConfig.round_to`; 1 = exact
counts), BatchNorm folded, exported to ONNX (fp32) and quantized by ONNX Runtime static int8 (this CPU's preset,
minmax, per-channel); the unpruned model is the baseline. Every artifact is timed at batch 1 on `--threads` by
`compare_runners` in `--repeats` interleaved rounds. No fine-tuning: the question is speed (accuracy after
pruning is what `benchmarks/pruning_cifar.py` measures). The table shows, per ratio and precision, which multiple
ran fastest, beside `cleanai._platform.channel_multiple`, what `cleanai optimize` rounds to on this CPU.

Writes its raw rows to benchmarks/results/channel_multiple/<--run>/rows.json and prints the BENCHMARKS.md table.
Usage: python benchmarks/channel_multiple.py [--ratios 0.35 0.5] [--multiples 1 8 16] [--threads 1] [--run NAME]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from cleanai._platform import channel_multiple
from cleanai.benchmark import BenchmarkConfig, compare_runners
from cleanai.data import load_dataset
from cleanai.fusion import fuse_conv_bn
from cleanai.models import create_model
from cleanai.pruning import PruneConfig, prune
from cleanai.quantization import QuantConfig, quantize
from cleanai.runtime import OrtRunner

import _report  # benchmarks/_report.py: scripts run from this folder

PRECISIONS = ("fp32", "int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.35, 0.5])
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--runs", type=int, default=200, help="timed batch-1 calls per round")
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    record = {**_report.provenance(args), "rows": [],
              "channel_multiple": {p: channel_multiple(int8=p == "int8") for p in PRECISIONS}}
    loaders = load_dataset("cifar10").loaders(batch_size=32, eval_batch_size=64)
    example = torch.randn(1, 3, 32, 32)
    original = create_model("resnet56", pretrained="akamaster").eval()
    variants = {(0.0, 1): original}
    for ratio in args.ratios:
        for multiple in args.multiples:
            config = PruneConfig(criterion="magnitude", ratio=ratio, residual="keep", round_to=multiple)
            variants[(ratio, multiple)] = prune(original, example, config)[0]
    runners: dict[str, Any] = {}
    for (ratio, multiple), model in variants.items():
        folded = fuse_conv_bn(model.eval(), example_inputs=example)
        runners[f"{ratio:g}|{multiple}|fp32"] = OrtRunner.from_model(folded, example, name="fp32")
        runners[f"{ratio:g}|{multiple}|int8"] = quantize(
            folded, QuantConfig.auto(True, per_channel=True, calibration="minmax", calibration_batches=4),
            calib=loaders.train, example_inputs=example, name="int8")
    config = BenchmarkConfig(batch_size=1, runs=args.runs, threads=args.threads, throughput_runs=0,
                             max_eval_batches=1, progress=False)
    rows = compare_runners(runners, loaders.test, config, repeats=args.repeats, show=False)
    for key, row in zip(runners, rows):
        ratio, multiple, precision = key.split("|")
        record["rows"].append({"ratio": float(ratio), "multiple": int(multiple), "deployed": precision,
                               **row.model_dump(mode="json")})
    _report.finish(record, args.run, _report.machine(f"{args.threads} thread(s)", load_before))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """Per ratio and precision: each multiple's latency and speed-up over the unpruned fp32 model, the fastest
    marked; then what `channel_multiple` picks on the machine that ran it."""
    args, rows, picked = record["args"], record["rows"], record["channel_multiple"]
    table = []
    for ratio in sorted({r["ratio"] for r in rows}):
        for precision in PRECISIONS:
            cells = [r for r in rows if r["ratio"] == ratio and r["deployed"] == precision]
            best = max(cells, key=lambda r: r["speedup"])
            table += [[f"{ratio:.0%}" if ratio else "unpruned", precision,
                       "exact" if r["multiple"] == 1 else str(r["multiple"]), f"{r['macs'] / 1e6:.1f}M",
                       f"{r['latency_ms_p50']:.3f}{' !' if r['timing_warning'] else ''}",
                       f"{r['speedup']:.2f}x", "fastest" if r is best and len(cells) > 1 else ""] for r in cells]
    flagged = sum(1 for r in rows if r["timing_warning"])
    return "\n".join([
        _report.heading(record), "",
        f"ResNet-56 (akamaster), magnitude, residual widths kept, BN folded; ONNX Runtime at batch 1, "
        f"{args['threads']} thread(s); p50 of {args['runs']} calls, median of {args['repeats']} interleaved rounds; "
        "speed-up = median of the per-round ratios to the unpruned fp32 model; no fine-tuning (timing only).", "",
        _report.table(["pruned", "precision", "channels a multiple of", "MACs", "p50 ms", "speed-up vs unpruned fp32",
                       ""], table), "",
        f"`channel_multiple` on this CPU: fp32 {picked['fp32']}, int8 {picked['int8']}."
        + (f" {flagged} of {len(rows)} timings flagged by the harness (\"!\")." if flagged else "")])


if __name__ == "__main__":
    main()
