"""Grid vs random vs TPE vs TPE + Hyperband on one fixed training space: best accuracy and training epochs spent.

The digits CNN (`small_cnn`, the embedded scikit-learn digits: 1,078 training, 359 validation, 360 test images)
is trained by the CleanAI Trainer for `--epochs` epochs per trial over a space of learning rates x optimizers
(a finite grid, so grid search covers it once). The first four methods get the grid's number of trials; Hyperband
(min 1 epoch, reduction factor 3) may stop trials early. The "1/3 epochs" rows get a budget of one third of the
grid's epochs instead (`TuneConfig.max_steps`: no trial starts once the finished ones trained that many), TPE
alone beside TPE + Hyperband as its control. Per method and seed the row holds the best validation
accuracy, the test accuracy of that trial's model, the epochs trained in total and the wall time. The goal of
issue 12: TPE + Hyperband within 0.5 point of grid's best with at most one third of grid's epochs.

`--distill-teacher DIR` adds the book's distillation search on CLINC150 (a fine-tuned TextClassifier folder as
teacher, its layers 0, 2, 5 as student; `--distill-trials` TPE trials over epochs, alpha, T) against one run with
the DistillConfig defaults; `--distill-train-subset` / `--distill-val-subset` bound it on a small machine, and
`--distill-pruner median` stops trials whose validation accuracy after an epoch is below the median of the earlier
trials' at that epoch. Each row also holds its student's accuracy on the whole test split.

Rows are saved after every (method, seed) cell to benchmarks/results/hpo/<--run>/rows.json; a rerun with the
same arguments skips the cells already there.
Usage: python benchmarks/hpo.py [--seeds 3] [--epochs 6] [--threads 1] [--run NAME] [--distill-teacher DIR]
       [--distill-trials 20] [--distill-train-subset N] [--distill-val-subset N] [--distill-pruner median]
       (--seeds 0: the CLINC search only)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Any

import torch

from cleanai.data import load_dataset, subset
from cleanai.models import create_model
from cleanai.training import TrainConfig, Trainer
from cleanai.tuning import SearchSpace, TrainingSpec, TuneConfig, search_distillation, tune

import _report  # benchmarks/_report.py: scripts run from this folder

SPACE = {"lr": {"type": "categorical", "choices": [0.001, 0.003, 0.01, 0.03, 0.1]},
         "optimizer": {"type": "categorical", "choices": ["sgd", "adam"], "registry": "optimizers"}}
GRID_SIZE = math.prod(len(values) for values in SearchSpace.from_dict(SPACE).grid().values())
METHODS = {
    "grid": {"sampler": "grid"},
    "random": {"sampler": "random"},
    "tpe": {"sampler": "tpe", "sampler_kwargs": {"n_startup_trials": 4}},
    "tpe+hyperband": {"sampler": "tpe", "sampler_kwargs": {"n_startup_trials": 4}, "pruner": "hyperband",
                      "pruner_kwargs": {"min_resource": 1, "reduction_factor": 3}},
}
# Optuna's MedianPruner, judged from the sixth trial on and after a trial's second epoch (the first epochs of a
# longer schedule run at a higher learning rate, so they say little)
DISTILL_PRUNERS = {"none": {}, "median": {"n_startup_trials": 5, "n_warmup_steps": 2}}
BUDGET = 1 / 3  # the goal's share of grid's epochs: the "..., 1/3 epochs" rows get it as TuneConfig.max_steps
METHODS |= {f"{name}, 1/3 epochs": {**METHODS[name], "budget": BUDGET} for name in ("tpe", "tpe+hyperband")}


def digits_cell(method: str, seed: int, args: argparse.Namespace, loaders: Any) -> dict[str, Any]:
    """One search of `method` with `seed`: its best trial, the test accuracy of that model, the epochs spent."""
    spec = TrainingSpec(lambda hp: create_model("small_cnn", num_classes=10), loaders.train, loaders.val,
                        TrainConfig(epochs=args.epochs, seed=seed, progress=False, device="cpu"))
    fields = dict(METHODS[method])
    if fields.get("pruner") == "hyperband":
        fields["pruner_kwargs"] = {**fields["pruner_kwargs"], "max_resource": args.epochs}
    budget = fields.pop("budget", None)
    limit = {"n_trials": GRID_SIZE} if budget is None else {"n_trials": None,
                                                            "max_steps": int(GRID_SIZE * args.epochs * budget)}
    start = time.perf_counter()
    result = tune(spec, SPACE, TuneConfig(**fields, **limit, seed=seed, keep_models=1, progress=False))
    seconds = time.perf_counter() - start
    best = result.best_trial
    model = result.get_best_models(1)[0]
    test = Trainer(model, config=TrainConfig(progress=False, device="cpu")).evaluate(loaders.test)["accuracy"]
    states = [t.state.name.lower() for t in result.trials]
    return {"method": method, "seed": seed, "best_val_accuracy": best.value, "test_accuracy": test,
            "best_params": best.params, "epochs": sum(len(t.intermediate_values) for t in result.trials),
            "trials": len(states), "pruned": states.count("pruned"), "failed": states.count("fail"),
            "seconds": seconds}


def distill_cells(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """The book's search on CLINC150 and the untuned defaults, each scored on the validation split. Each row is
    saved when measured; the search's study and the teacher's cached logits live in the cache folder, so an
    interrupted search resumes with its finished trials."""
    from torch.utils.data import DataLoader

    from cleanai.data import default_cache_dir, text_collate
    from cleanai.distillation import DistillConfig, distill, keep_layers
    from cleanai.models import TextClassifier

    done = {r["method"] for r in record["rows"] if r.get("part") == "distill"}
    search = f"TPE{'' if args.distill_pruner == 'none' else ' + ' + args.distill_pruner}, {args.distill_trials} trials"
    if {"defaults", search} <= done:
        return
    splits = load_dataset("clinc150", config="plus")
    teacher = TextClassifier.from_pretrained(args.distill_teacher).eval()
    student = keep_layers(teacher, [0, 2, 5])
    collate = text_collate(teacher.tokenizer, 64)
    train_part = subset(splits.train, args.distill_train_subset, seed=0)  # class-balanced; None keeps all
    train = DataLoader(train_part, batch_size=32, shuffle=True, collate_fn=collate,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(subset(splits.val, args.distill_val_subset, seed=0), batch_size=128, collate_fn=collate)
    test = DataLoader(splits.test, batch_size=128, collate_fn=collate)

    def test_accuracy(model: torch.nn.Module) -> float:
        return Trainer(model, config=TrainConfig(progress=False, device="cpu")).evaluate(test)["accuracy"]

    work = default_cache_dir() / "hpo" / args.run  # large and rebuildable: outside the work tree
    base = DistillConfig(train=TrainConfig(optimizer="adamw", lr=2e-4, seed=0, progress=False, device="cpu"),
                         cache_dir=work / "teacher-logits")
    if "defaults" not in done:
        start = time.perf_counter()
        distilled, history = distill(student, teacher, train, val, base)
        seconds = time.perf_counter() - start
        record["rows"].append({"part": "distill", "method": "defaults", "alpha": base.alpha,
                               "temperature": base.temperature, "epochs": base.train.epochs,
                               "val_accuracy": history.last["val_accuracy"], "seconds": seconds,
                               "test_accuracy": test_accuracy(distilled)})
        _report.save(record, args.run)
    if search not in done:
        result = search_distillation(student, teacher, train, val, base, tune_config=TuneConfig(
            n_trials=args.distill_trials, seed=0, progress=False, run_dir=work / "study", keep_models=1,
            pruner=args.distill_pruner, pruner_kwargs=DISTILL_PRUNERS[args.distill_pruner]))
        best = result.best_trial
        record["rows"].append({"part": "distill", "method": search, **best.params, "val_accuracy": best.value,
                               "test_accuracy": test_accuracy(result.get_best_models(1)[0]),
                               # a failed trial's duration runs until a later start finds it stale: left out
                               "seconds": sum(t.duration.total_seconds() for t in result.trials
                                              if t.duration and t.state.name in ("COMPLETE", "PRUNED")),
                               "trials": [{"number": t.number, "state": t.state.name, "params": t.params,
                                           "value": t.value} for t in result.trials]})
        _report.save(record, args.run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of a full trial (Hyperband's max resource)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run", default="latest", help="name of the results folder")
    parser.add_argument("--distill-teacher", default=None, help="a fine-tuned CLINC150 TextClassifier folder")
    parser.add_argument("--distill-trials", type=int, default=20)
    parser.add_argument("--distill-train-subset", type=int, default=None, help="training queries (class-balanced)")
    parser.add_argument("--distill-val-subset", type=int, default=None, help="validation queries (class-balanced)")
    parser.add_argument("--distill-pruner", choices=list(DISTILL_PRUNERS), default="none",
                        help="stop distillation trials early (median: below the earlier trials' median at an epoch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    record = {**_report.provenance(args), "rows": []}
    try:
        old = _report.load("hpo.py", args.run)
        if old["args"] == record["args"]:
            record["rows"] = old["rows"]  # resume: keep the cells already measured
    except FileNotFoundError:
        pass
    loaders = load_dataset("digits").loaders(batch_size=64, seed=0)
    done = {(r["method"], r["seed"]) for r in record["rows"] if "seed" in r}
    for seed in range(args.seeds):
        for method in METHODS:
            if (method, seed) in done:
                continue
            row = digits_cell(method, seed, args, loaders)
            record["rows"].append(row)
            _report.save(record, args.run)
            print(f"{method:14s} seed {seed}: val {row['best_val_accuracy']:.4f} test {row['test_accuracy']:.4f} "
                  f"epochs {row['epochs']} ({row['pruned']} pruned) {row['seconds']:.0f} s", flush=True)
    if args.distill_teacher:
        distill_cells(args, record)
    _report.finish(record, args.run, _report.machine(f"{args.threads} thread(s)", load_before, ["optuna"]))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run, from its record."""
    args = record["args"]
    cells = [r for r in record["rows"] if "seed" in r]
    by_method = {m: [r for r in cells if r["method"] == m] for m in METHODS}

    def mean_sd(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
        sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
        return f"{statistics.mean(values) * scale:.{digits}f} ± {sd:.{digits}f}"

    grid = by_method["grid"]
    grid_epochs = statistics.mean(r["epochs"] for r in grid) if grid else float("nan")
    rows = []
    for method, runs in by_method.items():
        if not runs:
            continue
        epochs = statistics.mean(r["epochs"] for r in runs)
        rows.append([method, str(len(runs)), mean_sd([r["best_val_accuracy"] for r in runs]),
                     mean_sd([r["test_accuracy"] for r in runs]), f"{epochs:.1f}", f"{epochs / grid_epochs:.2f}",
                     f"{statistics.mean(r['pruned'] for r in runs):.1f}",
                     f"{statistics.mean(r['seconds'] for r in runs):.0f}"])
    lines = [_report.heading(record)]
    if rows:
        lines += ["", f"small_cnn on digits, {GRID_SIZE} trials per search (the grid: lr in {SPACE['lr']['choices']} x "
                  f"optimizer in {SPACE['optimizer']['choices']}), {args['epochs']} epochs per full trial, seeds "
                  f"0..{args['seeds'] - 1} (sampler and weight initialisation); mean ± sample std over seeds. "
                  "Accuracy in %, of the best trial by validation accuracy; its model's test accuracy beside it.", "",
                  _report.table(["method", "seeds", "best val acc %", "its test acc %", "epochs trained",
                                 "epochs / grid's", "trials pruned", "seconds"], rows)]
    grid_best = [r["best_val_accuracy"] for r in grid]
    for name in ("tpe+hyperband", "tpe+hyperband, 1/3 epochs"):
        hb = by_method[name]
        if not (hb and grid_best):
            continue
        gap = (statistics.mean(grid_best) - statistics.mean(r["best_val_accuracy"] for r in hb)) * 100
        ratio = statistics.mean(r["epochs"] for r in hb) / grid_epochs
        met = gap <= 0.5 and ratio <= BUDGET + 1e-9
        lines += ["", f"Goal, {name} (within 0.5 point of grid's best validation accuracy with at most one third of "
                      f"its epochs): {abs(gap):.2f} points {'behind' if gap > 0 else 'above'} grid, {ratio:.2f} of its "
                      f"epochs: {'met' if met else 'NOT met'}."]
    distill_rows = [r for r in record["rows"] if r.get("part") == "distill"]
    if distill_rows:
        sizes = [f"{args[k]:,}" if args.get(k) else "all" for k in ("distill_train_subset", "distill_val_subset")]
        tested = all("test_accuracy" in r for r in distill_rows)  # (runs before this record scored validation only)
        table = [[r["method"], str(r["epochs"]), f"{r['alpha']:.4g}", f"{r['temperature']:g}",
                  f"{100 * r['val_accuracy']:.2f}", *([f"{100 * r['test_accuracy']:.2f}"] if tested else []),
                  f"{r['seconds']:.0f}"] for r in distill_rows]
        lines += ["", f"CLINC150 distillation: student = layers 0, 2, 5 of the fine-tuned teacher; {sizes[0]} "
                      f"training / {sizes[1]} validation queries (class-balanced); the search row's seconds are its "
                      "finished (complete or pruned) trials' total."
                      + (" Test accuracy on the whole test split, oos as a class; the choice reads validation only."
                         if tested else ""), "",
                  _report.table(["CLINC150 distillation", "epochs", "alpha", "T", "val acc %",
                                 *(["test acc %"] if tested else []), "seconds"], table)]
        for row in distill_rows:
            trials = row.get("trials", [])
            values = [t["value"] for t in trials if t["state"] == "COMPLETE"]
            pruned = sum(t["state"] == "PRUNED" for t in trials)
            if values:  # (runs before this record kept only the best trial)
                lines += ["", f"{row['method']}: {len(values)} complete trial(s) between {100 * min(values):.2f} and "
                              f"{100 * max(values):.2f} %; {sum(v == max(values) for v in values)} at the best value"
                              + (f"; {pruned} stopped early by the pruner" if pruned else "")
                              + " (every trial's parameters and value are in the raw rows)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
