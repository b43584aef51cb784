"""Per-step cost of `Trainer` against a hand-written training loop on the same model and data.

Both train the same model from the same initial weights on the same pre-loaded batches with the
same optimizer; the two are interleaved `--repeats` times and the median epoch time of each is
compared (goal: Trainer overhead <= 10 %). Time is the process's CPU time (`time.process_time`) on one
thread, which other jobs on a shared machine disturb far less than wall-clock time; wall time is
printed beside it. Two workloads: ResNet-20 on real CIFAR-10 JPEG test
images (compute-bound, ~tens of ms a step) and the small digits CNN (tiny steps, where any fixed
per-step cost of the Trainer shows most).
(Training loops are not Runners, so the rounds here are interleaved by hand, not by `compare_runners`.)
Raw rows: benchmarks/results/trainer_overhead/<--run>/rows.json.
Usage: python benchmarks/trainer_overhead.py [--threads 1] [--repeats 5] [--steps 40] [--run NAME]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cleanai.data import load_dataset
from cleanai.models import create_model
from cleanai.training import TrainConfig, Trainer

import _report  # benchmarks/_report.py: scripts run from this folder


def hand_loop(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The loop a user would write: zero_grad, forward, loss, backward, step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss.item()  # a hand loop logs its loss too


def trainer_loop(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    config = TrainConfig(epochs=1, optimizer="sgd", lr=0.01, optimizer_kwargs={"momentum": 0.9},
                         metrics=[], progress=False)
    Trainer(model, config=config).fit(batches)


def timed(loop: Callable[[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]], None], model: nn.Module,
          batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one epoch."""
    cpu, wall = time.process_time(), time.perf_counter()
    loop(model, batches)
    return time.process_time() - cpu, time.perf_counter() - wall


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
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    record = {**_report.provenance(args), "rows": []}
    for name in ("resnet20 / cifar10", "small_cnn / digits"):
        model, batches = workload(name, args)
        loops = {"hand": hand_loop, "trainer": trainer_loop}
        times: dict[str, list[tuple[float, float]]] = {"hand": [], "trainer": []}
        for i in range(args.repeats + 1):  # the first pair is a warm-up and is dropped
            for side in ("hand", "trainer") if i % 2 == 0 else ("trainer", "hand"):
                t = timed(loops[side], copy.deepcopy(model), batches)
                if i:
                    times[side].append(t)
        record["rows"].append({"workload": name, "steps": len(batches), **{
            f"{side}_{clock}_s": statistics.median(t[k] for t in times[side])
            for side in ("hand", "trainer") for k, clock in enumerate(("cpu", "wall"))}})
    _report.finish(record, args.run, _report.machine(f"{args.threads} thread(s)", load_before))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run, from its record."""
    args, rows = record["args"], []
    for r in record["rows"]:
        per_step = {k: f"{1000 * r[k] / r['steps']:.2f}" for k in ("hand_cpu_s", "hand_wall_s", "trainer_cpu_s",
                                                                  "trainer_wall_s")}
        cpu, wall = r["trainer_cpu_s"] / r["hand_cpu_s"], r["trainer_wall_s"] / r["hand_wall_s"]
        rows.append([r["workload"], f"{per_step['hand_cpu_s']} ({per_step['hand_wall_s']})",
                     f"{per_step['trainer_cpu_s']} ({per_step['trainer_wall_s']})",
                     f"{100 * (cpu - 1):+.1f} % ({100 * (wall - 1):+.1f} %)", "yes" if cpu <= 1.10 else "no"])
    return "\n".join([
        _report.heading(record), "",
        f"{args['steps']} steps of batch {args['batch_size']} per epoch, median of {args['repeats']} interleaved "
        "epochs each (one warm-up pair dropped).", "",
        _report.table(["workload", "hand loop CPU ms/step (wall)", "Trainer CPU ms/step (wall)",
                       "Trainer overhead CPU (wall)", "<= 10 %"], rows)])


if __name__ == "__main__":
    main()
