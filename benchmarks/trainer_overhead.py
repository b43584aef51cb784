"""Per-step cost of `Trainer` against a hand-written training loop on the same model and data.

Both train the same model from the same initial weights on the same pre-loaded batches with the
same optimizer; the two are interleaved `--repeats` times and the median epoch time of each is
compared (goal: Trainer overhead <= 10 %). Two workloads: ResNet-20 on real CIFAR-10 JPEG test
images (compute-bound, ~tens of ms a step) and the small digits CNN (tiny steps, where any fixed
per-step cost of the Trainer shows most).
Usage: python benchmarks/trainer_overhead.py [--threads 2] [--repeats 5] [--steps 40]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from cleanai.benchmark import environment
from cleanai.data import load_dataset
from cleanai.models import create_model
from cleanai.training import TrainConfig, Trainer


def hand_loop(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The loop a user would write: zero_grad, forward, loss, backward, step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss.item()  # a hand loop logs its loss too
    return time.perf_counter() - start


def trainer_loop(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    config = TrainConfig(epochs=1, optimizer="sgd", lr=0.01, optimizer_kwargs={"momentum": 0.9},
                         metrics=[], progress=False)
    start = time.perf_counter()
    Trainer(model, config=config).fit(batches)
    return time.perf_counter() - start


def workload(name: str, args: argparse.Namespace) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    if name == "resnet20 / cifar10":
        splits = load_dataset("cifar10", val_size=0)
        model = create_model("resnet20")
    else:
        splits = load_dataset("digits")
        model = create_model("small_cnn")
    loader = splits.loaders(batch_size=args.batch_size).test
    batches = [b for _, b in zip(range(args.steps), loader)]
    return model, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = []
    for name in ("resnet20 / cifar10", "small_cnn / digits"):
        model, batches = workload(name, args)
        times: dict[str, list[float]] = {"hand": [], "trainer": []}
        for i in range(args.repeats + 1):  # the first pair is a warm-up and is dropped
            order = ("hand", "trainer") if i % 2 == 0 else ("trainer", "hand")
            for side in order:
                fresh = copy.deepcopy(model)
                t = hand_loop(fresh, batches) if side == "hand" else trainer_loop(fresh, batches)
                if i:
                    times[side].append(t)
        hand, trainer = statistics.median(times["hand"]), statistics.median(times["trainer"])
        steps = len(batches)
        rows.append((name, f"{1000 * hand / steps:.2f}", f"{1000 * trainer / steps:.2f}",
                     f"{100 * (trainer / hand - 1):+.1f} %", "yes" if trainer / hand <= 1.10 else "no"))
    env = environment()
    print(f"Machine: {env['cpu']}, {env['cpu_count']} usable cores, {args.threads} thread(s); torch "
          f"{torch.__version__}, Python {platform.python_version()}; 1-min load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after. {args.steps} steps of batch {args.batch_size} per epoch, median of "
          f"{args.repeats} interleaved epochs each.\n")
    print("| workload | hand loop ms/step | Trainer ms/step | Trainer overhead | <= 10 % |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
