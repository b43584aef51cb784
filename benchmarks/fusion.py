"""How much faster is a CNN in torch eager mode after folding BatchNorm into the convolutions?

For CIFAR ResNet-20 and MobileNetV2 (small_input, 10 classes) on CIFAR-shaped inputs (3x32x32), the
unfused and the fused (`cleanai.fusion.fuse_conv_bn`) model are timed with PerformanceBenchmark at
batch 1 and batch 64, interleaved `--repeats` times in one process (the order alternates each pair).
The table quotes the median p50 of each and the median of the per-pair ratios. Weights are random
(latency does not depend on their values); BatchNorm statistics are randomised so folding is not a no-op.

Prints a markdown table for BENCHMARKS.md, with the machine, threads and load average.
Usage: python benchmarks/fusion.py [--threads 1] [--repeats 5] [--runs 100] [--runs-64 5]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cleanai.benchmark import (
    BenchmarkConfig,
    PerformanceBenchmark,
    TorchRunner,
)
from cleanai.fusion import fuse_conv_bn
from cleanai.models import create_model

from _report import machine  # benchmarks/_report.py: scripts run from this folder

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


def p50_ms(model: nn.Module, data: DataLoader, batch: int, runs: int, warmup: int, threads: int) -> float:
    config = BenchmarkConfig(batch_size=batch, warmup=warmup, runs=runs, throughput_runs=0, threads=threads,
                             max_eval_batches=1, progress=False)
    return PerformanceBenchmark(TorchRunner(model), data, config=config).run().latency_ms_p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved unfused/fused pairs per cell")
    parser.add_argument("--runs", type=int, default=100, help="timed calls per measurement at batch 1")
    parser.add_argument("--runs-64", type=int, default=5, help="timed calls per measurement at batch 64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    data = DataLoader(TensorDataset(torch.randn(64, 3, 32, 32), torch.zeros(64, dtype=torch.long)), batch_size=64)

    rows = []
    for label, (name, kwargs) in MODELS.items():
        torch.manual_seed(0)
        model = with_trained_statistics(create_model(name, **kwargs))
        fused = fuse_conv_bn(model)
        x = data.dataset.tensors[0]
        with torch.inference_mode():
            diff = float((model(x) - fused(x)).abs().max())
        bn_count = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        for batch, runs in ((1, args.runs), (64, args.runs_64)):
            warmup = max(2, runs // 10)
            times: dict[str, list[float]] = {"unfused": [], "fused": []}
            for i in range(args.repeats):
                order = ("unfused", "fused") if i % 2 == 0 else ("fused", "unfused")
                for variant in order:
                    net = model if variant == "unfused" else fused
                    times[variant].append(p50_ms(net, data, batch, runs, warmup, args.threads))
            ratio = statistics.median(u / f for u, f in zip(times["unfused"], times["fused"]))
            rows.append((label, batch, bn_count, statistics.median(times["unfused"]),
                         statistics.median(times["fused"]), ratio, diff))

    print(machine(f"{args.threads} thread(s)", load_before))
    print(f"torch eager, inference_mode, fp32; p50 of {args.runs} (batch 1) / {args.runs_64} (batch 64) timed calls per "
          f"measurement, median of {args.repeats} interleaved unfused/fused pairs.\n")
    print("| model | batch | BN layers folded | unfused p50 (ms) | fused p50 (ms) | speed-up (median pair ratio) "
          "| max abs diff of logits |")
    print("|---|---|---|---|---|---|---|")
    for label, batch, bns, unfused, fused_ms, ratio, diff in rows:
        print(f"| {label} | {batch} | {bns} | {unfused:.3f} | {fused_ms:.3f} | {ratio:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
