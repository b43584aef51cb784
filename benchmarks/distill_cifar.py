"""Does knowledge distillation beat plain cross-entropy on CIFAR-10, for a small student and for a pruned model?

Issue 10's vision goals, each a pair trained side by side with the same budget (same images, each model
drawing its own shuffle from one seeded generator; same initial weights, optimizer and schedule); only the
loss differs:
1. student: a ResNet-`--student-depth` from random weights (seeded), trained `--epochs` epochs on
   `--train-subset` training images with cross-entropy alone, and the same with KD from the pretrained
   ResNet-`--teacher-depth` (`cleanai.distillation.distill`, `--alpha` on the hard labels, `--temperature`).
2. pruned: the teacher pruned by magnitude at `--ratio` (about 2x fewer MACs at 0.3), fine-tuned
   `--prune-epochs` epochs with `prune_and_finetune`, once with cross-entropy and once with KD from the
   unpruned model; beside them the unpruned teacher given the same cross-entropy fine-tune (the control).
KD defaults alpha 0.1 (hard-label weight), T 4: the usual CIFAR setting (RepDistiller), not tuned here.
`--teacher-epochs N` first fine-tunes the pretrained teacher N epochs with cross-entropy on the same images: the
checkpoints were trained on lossless CIFAR-10 and score about 10 points lower on this JPEG copy, so the
teacher's soft targets carry that domain gap unless it is adapted first.
Accuracy on the whole 10,000-image test split; validation accuracy on 5,000 held-out training images. Rows go
to benchmarks/results/distill_cifar/<--run>/rows.json after each model (a rerun with the same settings
resumes); `python benchmarks/tables.py` renders BENCHMARKS.md from them.
Usage: python benchmarks/distill_cifar.py [--epochs 5] [--train-subset 10000] [--prune-epochs 1] [--teacher-epochs 0] [--seeds 0]
       [--threads 2] [--run NAME]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from cleanai.data import load_dataset, subset
from cleanai.distillation import DistillConfig, distill
from cleanai.models import create_model
from cleanai.pruning import PruneConfig, prune_and_finetune
from cleanai.training import TrainConfig, Trainer

import _report  # benchmarks/_report.py: scripts run from this folder
from pruning_cifar import OPTIMIZER, accuracy


def train_config(epochs: int, lr: float, seed: int) -> TrainConfig:
    """The budget every model of a pair gets: SGD with nesterov momentum, cosine schedule, no checkpoints."""
    return TrainConfig(epochs=epochs, optimizer="sgd", lr=lr, optimizer_kwargs=OPTIMIZER, scheduler="cosine",
                       seed=seed, progress=False, device="cpu")


def kd_config(args: argparse.Namespace, train: TrainConfig) -> DistillConfig:
    return DistillConfig(alpha=args.alpha, temperature=args.temperature, train=train)


def student_row(args: argparse.Namespace, data: dict[str, Any], teacher: nn.Module | None, seed: int) -> dict[str, Any]:
    """A ResNet student from seeded random weights, trained with cross-entropy (no teacher) or KD."""
    torch.manual_seed(seed)
    student = create_model(f"resnet{args.student_depth}")
    config = train_config(args.epochs, args.lr, seed)
    start = time.perf_counter()
    if teacher is None:
        Trainer(student, config=config).fit(data["train"])
    else:
        student, _ = distill(student, teacher, data["train"], None, kd_config(args, config))  # a trained copy
    return {"seconds": time.perf_counter() - start, **scores(student.eval(), data)}


def pruned_row(args: argparse.Namespace, data: dict[str, Any], teacher: nn.Module, kd: bool, seed: int) -> dict[str, Any]:
    """The teacher pruned by magnitude at `--ratio` and fine-tuned with cross-entropy, or with KD from itself unpruned."""
    start = time.perf_counter()
    config = train_config(args.prune_epochs, args.prune_lr, seed)
    model, report, _ = prune_and_finetune(
        copy.deepcopy(teacher), data["example"], PruneConfig(ratio=args.ratio, calib_batches=len(data["calib"])),
        data["train"], data["val"], config, data["calib"], teacher=teacher if kd else None,
        distill_config=kd_config(args, config) if kd else None)
    return {"seconds": time.perf_counter() - start, "macs": report.macs_after, "macs_before": report.macs_before,
            "params": report.params_after, **scores(model.eval(), data)}


def control_row(args: argparse.Namespace, data: dict[str, Any], teacher: nn.Module, seed: int) -> dict[str, Any]:
    """The unpruned teacher given the pruned models' cross-entropy fine-tune: what the fine-tune alone does."""
    model = copy.deepcopy(teacher)
    Trainer(model, config=train_config(args.prune_epochs, args.prune_lr, seed)).fit(data["train"])
    return scores(model.eval(), data)


def scores(model: nn.Module, data: dict[str, Any]) -> dict[str, float]:
    return {"test": accuracy(model, data["test"]), "val": accuracy(model, data["val"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-depth", type=int, default=56, choices=[20, 32, 44, 56, 110])
    parser.add_argument("--student-depth", type=int, default=20, choices=[20, 32, 44, 56, 110])
    parser.add_argument("--epochs", type=int, default=5, help="student training epochs")
    parser.add_argument("--lr", type=float, default=0.1, help="student learning rate (from random weights)")
    parser.add_argument("--train-subset", type=int, default=10000, help="training images (random crop + flip)")
    parser.add_argument("--teacher-epochs", type=int, default=0,
                        help="cross-entropy fine-tune of the pretrained teacher before everything (lr --prune-lr)")
    parser.add_argument("--ratio", type=float, default=0.3, help="magnitude pruning ratio of the teacher")
    parser.add_argument("--prune-epochs", type=int, default=1, help="fine-tune epochs after pruning")
    parser.add_argument("--prune-lr", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=0.1, help="weight of the hard-label loss")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--parts", nargs="+", choices=["student", "pruned"], default=["student", "pruned"])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--run", default=None, help="results folder (default: from the settings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    splits = load_dataset("cifar10")
    calib = list(DataLoader(splits.val, batch_size=64))[:args.calib_batches]
    data = {"train": DataLoader(subset(splits.train, args.train_subset), batch_size=args.batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(0)),
            "val": DataLoader(splits.val, batch_size=500), "test": DataLoader(splits.test, batch_size=500),
            "calib": calib, "example": calib[0][0][:1]}
    teacher = create_model(f"resnet{args.teacher_depth}", pretrained="akamaster")
    if args.teacher_epochs:  # adapt the teacher to this copy of CIFAR-10 (JPEG q75) before it teaches
        Trainer(teacher, config=train_config(args.teacher_epochs, args.prune_lr, 0)).fit(data["train"])
    teacher.eval()
    run = args.run or (f"r{args.teacher_depth}-r{args.student_depth}_e{args.epochs}x{args.train_subset}"
                       f"_ratio{args.ratio}_ft{args.prune_epochs}"
                       + (f"_teacher-ft{args.teacher_epochs}" if args.teacher_epochs else "")
                       + ("" if (args.alpha, args.temperature) == (0.1, 4.0) else f"_a{args.alpha}_T{args.temperature}"))
    settings = {k: v for k, v in vars(args).items() if k not in ("seeds", "parts", "threads", "run")}
    results = _report.Resumable(args, run, settings)
    results.get("teacher", lambda: scores(teacher, data))
    for seed in args.seeds:
        if "student" in args.parts:
            for kind, who in (("ce", None), ("kd", teacher)):
                row = results.get(f"student|{kind}|{seed}", lambda: student_row(args, data, who, seed))
                print(f"student {kind} seed {seed}: test {row['test']:.2f} %", flush=True)
        if "pruned" in args.parts:
            results.get(f"control|{seed}", lambda: control_row(args, data, teacher, seed))
            for kind in ("ce", "kd"):
                row = results.get(f"pruned|{kind}|{seed}", lambda: pruned_row(args, data, teacher, kind == "kd", seed))
                print(f"pruned {kind} seed {seed}: test {row['test']:.2f} %", flush=True)
    line = _report.machine(f"{args.threads} thread(s)", load_before) + \
        f" Wall time {(time.perf_counter() - start) / 60:.1f} min."
    _report.finish(results.record, run, line)
    print("\n" + render(results.record))


def render(record: dict[str, Any]) -> str:
    """The markdown table of one run: each pair (CE vs KD) per seed, and the KD gain in points."""
    args, rows = record["args"], record["rows"]
    teacher = rows["teacher"]
    tuned = f", fine-tuned {args['teacher_epochs']} epoch(s) here first" if args.get("teacher_epochs") else ""
    out = [_report.heading(record), "",
           f"Teacher: ResNet-{args['teacher_depth']} (akamaster weights{tuned}), test {teacher['test']:.2f} %, validation "
           f"{teacher['val']:.2f} %. KD: alpha {args['alpha']} on the hard labels, T {args['temperature']}. Test: the "
           "whole 10,000-image split; validation: 5,000 held-out training images.", ""]
    body = []
    for seed in args["seeds"]:
        pairs = [(f"ResNet-{args['student_depth']} from random weights, {args['epochs']} epochs x "
                  f"{args['train_subset']:,} images, lr {args['lr']}", "student"),
                 (f"ResNet-{args['teacher_depth']} pruned by magnitude at {args['ratio']}, fine-tuned "
                  f"{args['prune_epochs']} epoch(s) x {args['train_subset']:,} images, lr {args['prune_lr']}", "pruned")]
        for what, part in pairs:
            ce, kd = rows.get(f"{part}|ce|{seed}"), rows.get(f"{part}|kd|{seed}")
            if ce is None or kd is None:
                continue
            macs = f" ({kd['macs_before'] / kd['macs']:.2f}x fewer MACs)" if "macs" in kd else ""
            body.append([what + macs, str(seed), f"{ce['val']:.2f}", f"{kd['val']:.2f}", f"{ce['test']:.2f}",
                         f"{kd['test']:.2f}", f"{kd['test'] - ce['test']:+.2f}",
                         f"{ce['seconds'] / 60:.1f} / {kd['seconds'] / 60:.1f}"])
        if f"control|{seed}" in rows:
            c = rows[f"control|{seed}"]
            body.append([f"(control: unpruned ResNet-{args['teacher_depth']}, the same cross-entropy fine-tune)",
                         str(seed), f"{c['val']:.2f}", "-", f"{c['test']:.2f}", "-", "-", "-"])
    out.append(_report.table(["model and budget", "seed", "val CE %", "val KD %", "test CE %", "test KD %",
                              "KD gain pp (test)", "minutes CE / KD"], body))
    if "finished" not in record:
        out += ["", "**Run not finished** when this table was rendered."]
    return "\n".join(out)


if __name__ == "__main__":
    main()
