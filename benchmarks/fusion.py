"""How much faster is a CNN in torch eager mode after folding BatchNorm into the convolutions?

For CIFAR ResNet-20 and MobileNetV2 (small_input, 10 classes) on CIFAR-shaped inputs (3x32x32), the
unfused and the fused (`cleanai.fusion.fuse_conv_bn`) model are timed by `compare_runners` at batch 1
and batch 64, in `--repeats` interleaved rounds in one process (the order reversed every other round).
The table quotes the median p50 of each and the median of the per-round ratios, and marks a row whose
timing the harness found unreliable. Weights are random (latency does not depend on their values);
BatchNorm statistics are randomised so folding is not a no-op.

Writes its raw rows to benchmarks/results/fusion/<--run>/rows.json and prints the table of BENCHMARKS.md.
Usage: python benchmarks/fusion.py [--threads 1] [--repeats 5] [--runs 100] [--runs-64 5] [--run NAME]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cleanai.benchmark import BenchmarkConfig, TorchRunner, compare_runners
from cleanai.fusion import fuse_conv_bn
from cleanai.models import create_model

import _report  # benchmarks/_report.py: scripts run from this folder

MODELS = {
    "ResNet-20 (CIFAR)": ("resnet20", {}),
    "MobileNetV2 (small_input)": ("mobilenet_v2", {"num_classes": 10, "small_input": True}),
}


def with_trained_statistics(model: nn.Module) -> nn.Module:
    """BatchNorm layers with non-trivial running statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved unfused/fused rounds per cell")
    parser.add_argument("--runs", type=int, default=100, help="timed calls per measurement at batch 1")
    parser.add_argument("--runs-64", type=int, default=5, help="timed calls per measurement at batch 64")
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    record = {**_report.provenance(args), "rows": []}
    data = DataLoader(TensorDataset(torch.randn(64, 3, 32, 32), torch.zeros(64, dtype=torch.long)), batch_size=64)

    for label, (name, kwargs) in MODELS.items():
        torch.manual_seed(0)
        model = with_trained_statistics(create_model(name, **kwargs))
        fused = fuse_conv_bn(model)
        x = data.dataset.tensors[0]
        with torch.inference_mode():
            diff = float((model(x) - fused(x)).abs().max())
        bn_count = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        for batch, runs in ((1, args.runs), (64, args.runs_64)):
            config = BenchmarkConfig(batch_size=batch, warmup=max(2, runs // 10), runs=runs, throughput_runs=0,
                                     threads=args.threads, max_eval_batches=1, progress=False)
            unfused, fused_row = compare_runners({"unfused": TorchRunner(model), "fused": TorchRunner(fused)}, data,
                                                 config, repeats=args.repeats, show=False)
            record["rows"].append({"model": label, "batch": batch, "bn_folded": bn_count, "max_abs_diff": diff,
                                   "unfused": unfused.model_dump(), "fused": fused_row.model_dump()})
    _report.finish(record, args.run, _report.machine(f"{args.threads} thread(s)", load_before))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run, from its record."""
    args = record["args"]

    def ms(row: dict[str, Any]) -> str:
        return (f"{row['latency_ms_p50']:.3f}{' !' if row['timing_warning'] else ''} "
                f"({row['latency_cpu_ms_p50']:.3f})")

    rows = [[r["model"], str(r["batch"]), str(r["bn_folded"]), ms(r["unfused"]), ms(r["fused"]),
             f"{r['fused']['speedup']:.2f}x{' !' if r['fused']['timing_warning'] else ''} "
             f"({r['fused']['speedup_cpu']:.2f}x)", f"{r['max_abs_diff']:.1e}"] for r in record["rows"]]
    warnings = [f"- {r['model']} batch {r['batch']} {side}: {r[side]['timing_warning']}"
                for r in record["rows"] for side in ("unfused", "fused") if r[side]["timing_warning"]]
    return "\n".join([
        _report.heading(record), "",
        f"torch eager, inference_mode, fp32; p50 of {args['runs']} (batch 1) / {args['runs_64']} (batch 64) timed "
        f"calls per measurement, median of {args['repeats']} interleaved rounds (`compare_runners`); wall time, "
        "process CPU time in brackets; \"!\": the harness flagged the timing (reasons below).", "",
        _report.table(["model", "batch", "BN layers folded", "unfused p50 ms (CPU)", "fused p50 ms (CPU)",
                       "speed-up, median of per-round ratios (CPU)", "max abs diff of logits"], rows),
        *(["", "Timing flagged by the harness:", "", *warnings] if warnings else [])])


if __name__ == "__main__":
    main()
