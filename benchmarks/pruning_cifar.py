"""Which pruning criterion keeps a CIFAR-10 ResNet most accurate at ~2x fewer MACs, and is it really faster?

Starts from the CIFAR ResNet-`--depth` fine-tuned on the JPEG training split by
benchmarks/cifar_pretrained.py (`--weights`; the akamaster checkpoint when that file is absent) and
prunes it at one `--ratio` with every CleanAI criterion (plus coverage measured on the raw convolution
output, `coverage@output`) and with Torch-Pruning's own GroupMagnitudeImportance /
GroupTaylorImportance (`tp-magnitude`, `tp-taylor`), all through `cleanai.pruning.prune` and all
fine-tuned with the same budget. `--residual keep` leaves the residual stream whole (the stem and each
stage's channels coupled through the shortcuts: `PruneConfig(residual="keep")`) and prunes inside the
blocks only, the source study's setting.
Table 1, per criterion: test accuracy before / right after pruning / after fine-tuning, params, MACs,
latency at batch 1 and 64 in torch eager and in ONNX Runtime (the model exported, as it would ship;
`--threads` threads, interleaved `--repeats` times with the unpruned model, medians; process CPU time
with one thread, which other processes' preemption cannot stretch, else wall time), the batch-64
speed-up next to the MAC reduction, and the seconds the criterion spent calibrating + scoring next to
one plain forward pass over the same calibration batches.
Table 2: global vs local scope and 1 vs `--steps` iterative steps for `--compare-criterion` (default:
table 1's best after fine-tuning), and the `--iterative-extra` criteria (adaptive) with `--steps`
steps; iterative runs split the same training images over their steps, so every row has the same
fine-tune budget. "+ BN recal." is the accuracy right after pruning once the BatchNorm statistics are
measured again on the calibration batches (`recalibrate_batchnorm`, no training; the fine-tuning
starts from the plain pruned model). Table 3 (`--coverage-grid`): accuracy right after pruning for
every coverage metric measured where the activation acts (after BatchNorm and ReLU) and on the raw
output, with magnitude, Taylor and random beside them.
Control: the unpruned model gets exactly the same fine-tuning as every pruned variant (same images, same
order, same schedule), so a drop is measured against what the fine-tuning alone does. Selection: the best
criterion is picked by accuracy on validation images held out from training (the validation split minus
the calibration images), and its test accuracy is reported; the test split never chooses.
Rows go to `benchmarks/results/pruning_cifar/<--run>/rows.json` after every variant, with the command, its
arguments, the commit and the machine (`python benchmarks/tables.py` renders BENCHMARKS.md from them); a
rerun with the same settings resumes, skipping the variants already measured.
Usage: python benchmarks/pruning_cifar.py [--depth 56] [--ratio 0.3] [--residual keep] [--criteria ...]
       [--finetune-epochs 1] [--train-subset 10000] [--test-subset N] [--val-subset N] [--coverage-grid]
       [--threads 1] [--run NAME]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader, Subset

from cleanai.benchmark import BenchmarkConfig, OrtRunner, Runner, TorchRunner, compare_runners
from cleanai.data import load_dataset, subset
from cleanai.models import create_model
from cleanai.pruning import (
    PruneConfig, create_criterion, list_criteria, prune, recalibrate_batchnorm, requirements,
)
from cleanai.pruning.criteria import METRICS
from cleanai.training import TrainConfig, Trainer

import _report  # benchmarks/_report.py: scripts run from this folder
from _report import machine, table

TP_CRITERIA = {"tp-magnitude": tp.importance.GroupMagnitudeImportance,
               "tp-taylor": tp.importance.GroupTaylorImportance}
# Variants of CleanAI criteria under their own names: name -> (registered criterion, options).
VARIANTS = {"coverage@output": ("coverage", {"position": "output"})}
COVERAGE_GRID = {f"coverage {metric} @{position}": ("coverage", {"metric": metric, "position": position})
                 for position in ("activation", "output") for metric in METRICS}
OPTIMIZER = {"momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}


class TimedCriterion(tp.importance.Importance):
    """Delegates to `inner`, with its requirements (prune() fills the gradients tp-taylor reads), and adds up
    the seconds it spends calibrating (`prepare`) and scoring groups."""

    def __init__(self, inner: tp.importance.Importance) -> None:
        self.inner, self.seconds = inner, 0.0
        needs = requirements(inner)
        self.requires_data, self.requires_gradients = needs.data, needs.gradients
        self.refresh_each_step = getattr(inner, "refresh_each_step", False)

    def prepare(self, model: nn.Module, batches: list[Any]) -> None:
        start = time.perf_counter()
        if hasattr(self.inner, "prepare"):
            self.inner.prepare(model, batches)
        self.seconds += time.perf_counter() - start

    def on_pruned(self, group: Any) -> None:
        if hasattr(self.inner, "on_pruned"):
            self.inner.on_pruned(group)

    def __call__(self, group: Any) -> torch.Tensor | None:
        start = time.perf_counter()
        scores = self.inner(group)
        self.seconds += time.perf_counter() - start
        return scores


def make_criterion(name: str) -> TimedCriterion:
    if name in TP_CRITERIA:
        return TimedCriterion(TP_CRITERIA[name]())
    criterion, kwargs = {**VARIANTS, **COVERAGE_GRID}.get(name, (name, {}))
    return TimedCriterion(create_criterion(criterion, **kwargs))


def prune_config(data: dict[str, Any], args: argparse.Namespace, scope: str, steps: int) -> PruneConfig:
    """`--ratio` for every group, or for the in-block groups only with `--residual keep`."""
    return PruneConfig(ratio=args.ratio, residual=args.residual, scope=scope, iterative_steps=steps,
                       calib_batches=len(data["calib"]))


def load_base(depth: int, weights: Path | None) -> tuple[nn.Module, str]:
    """The model to prune and where its weights came from."""
    path = weights or Path(f"runs/finetuned/resnet{depth}_cifar10jpeg.safetensors")
    if weights is None and not path.exists():
        return create_model(f"resnet{depth}", pretrained="akamaster").eval(), "akamaster (no fine-tuned file found)"
    return create_model(f"resnet{depth}", pretrained=path).eval(), str(path)


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy in % over the whole loader."""
    return 100 * Trainer(model, config=TrainConfig(device="cpu", progress=False)).evaluate(loader)["accuracy"]


def finetune(model: nn.Module, loader: DataLoader, args: argparse.Namespace) -> None:
    """The fine-tune budget every variant gets (per step, on its share of the training images)."""
    if args.finetune_epochs:
        config = TrainConfig(epochs=args.finetune_epochs, optimizer="sgd", lr=args.lr, optimizer_kwargs=OPTIMIZER,
                             scheduler="cosine", seed=0, progress=False, device="cpu")
        Trainer(model, config=config).fit(loader)
    model.eval()


def deployed(model: nn.Module, example: torch.Tensor) -> dict[str, Runner]:
    """The model as it would ship: torch eager, and exported (parity-checked) to ONNX Runtime."""
    return {"torch": TorchRunner(model), "ort": OrtRunner.from_model(model, example, name="onnxruntime")}


def paired_latencies(model: nn.Module, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """p50 ms of the unpruned and the pruned model in torch and ONNX Runtime at batch 1 and 64, timed by
    `compare_runners` in `--repeats` interleaved rounds (medians); keys (rt = torch | ort)
    `<rt>_<unpruned|pruned>_<wall|cpu>_b<batch>`, `<rt>_speedup_<wall|cpu>_b<batch>` (median of per-round
    ratios) and `<rt>_warning_b<batch>` (the harness's timing warnings, if any)."""
    pruned = deployed(model, data["example"])
    out: dict[str, Any] = {}
    for batch, runs in ((1, args.runs), (64, args.runs_64)):
        config = BenchmarkConfig(batch_size=batch, warmup=args.warmup, runs=runs, throughput_runs=0,
                                 threads=args.threads, max_eval_batches=1, progress=False)
        for runtime in ("torch", "ort"):
            before, after = compare_runners({"unpruned": data["unpruned"][runtime], "pruned": pruned[runtime]},
                                            data["timing"], config, repeats=args.repeats, show=False)
            for who, row in (("unpruned", before), ("pruned", after)):
                out[f"{runtime}_{who}_wall_b{batch}"] = row.latency_ms_p50
                out[f"{runtime}_{who}_cpu_b{batch}"] = row.latency_cpu_ms_p50
            out[f"{runtime}_speedup_wall_b{batch}"] = after.speedup
            out[f"{runtime}_speedup_cpu_b{batch}"] = after.speedup_cpu
            warnings = filter(None, (before.timing_warning, after.timing_warning))
            out[f"{runtime}_warning_b{batch}"] = "; ".join(warnings) or None
    return out


def forward_seconds(model: nn.Module, batches: list[Any]) -> float:
    """One plain inference pass over the calibration batches: the yardstick for a criterion's cost."""
    start = time.perf_counter()
    with torch.inference_mode():
        for inputs, _ in batches:
            model(inputs)
    return time.perf_counter() - start


def train_loaders(train: Dataset, steps: int, batch_size: int) -> list[DataLoader]:
    """The training images split over `steps` (one loader per step), each shuffled with the same seed."""
    parts = torch.tensor_split(torch.arange(len(train)), steps)
    return [DataLoader(Subset(train, part.tolist()), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(0)) for part in parts]


def prune_variant(base: nn.Module, name: str, scope: str, steps: int, data: dict[str, Any],
                  args: argparse.Namespace, finetune_and_time: bool = True) -> dict[str, Any]:
    """Prune `base` with criterion `name`, fine-tune after each step, and measure the result
    (without `finetune_and_time`: only the accuracy right after pruning, MACs and params)."""
    loaders = train_loaders(data["train"], steps, args.batch_size)
    criterion, pruned_accuracy, tune_seconds = make_criterion(name), [], [0.0]

    def after_step(step: int, model: nn.Module, _report: Any) -> None:
        if step == steps:
            pruned_accuracy.append(accuracy(model, data["test"]))
            recalibrated = copy.deepcopy(model)
            recalibrate_batchnorm(recalibrated, data["calib"])
            pruned_accuracy.append(accuracy(recalibrated, data["test"]))
        if finetune_and_time:
            start = time.perf_counter()
            finetune(model, loaders[step - 1], args)
            tune_seconds[0] += time.perf_counter() - start

    config = prune_config(data, args, scope, steps)
    model, report = prune(base, data["example"], config, data["calib"], criterion=criterion, callback=after_step)
    row = {
        "criterion": name, "scope": scope, "steps": steps, "accuracy_before": data["accuracy_before"],
        "accuracy_pruned": pruned_accuracy[0], "accuracy_recalibrated": pruned_accuracy[1],
        "params": report.params_after, "params_before": report.params_before, "macs": report.macs_after,
        "macs_before": report.macs_before, "macs_reduction": report.macs_speedup,
        "score_seconds": criterion.seconds, "forward_seconds": data["forward_seconds"],
        "prune_seconds": sum(s.seconds for s in report.steps), "warnings": report.warnings,
    }
    if not finetune_and_time:
        return row
    return {**row, "accuracy_finetuned": accuracy(model, data["test"]), "accuracy_val": accuracy(model, data["val"]),
            "finetune_seconds": tune_seconds[0], **paired_latencies(model, data, args)}


def control(base: nn.Module, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The unpruned model given exactly the fine-tuning a one-step pruned variant gets: the yardstick for drops."""
    model = copy.deepcopy(base)
    start = time.perf_counter()
    finetune(model, train_loaders(data["train"], 1, args.batch_size)[0], args)
    return {"criterion": "(unpruned control)", "accuracy_before": data["accuracy_before"],
            "accuracy_finetuned": accuracy(model, data["test"]), "accuracy_val": accuracy(model, data["val"]),
            "finetune_seconds": time.perf_counter() - start}


CONTROL = "(control)"  # the key of the unpruned control's row


def main() -> None:
    names = [*list_criteria(), *VARIANTS, *TP_CRITERIA]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=56, choices=[20, 32, 44, 56, 110])
    parser.add_argument("--weights", type=Path, default=None,
                        help="default: runs/finetuned/resnet<depth>_cifar10jpeg.safetensors, else akamaster")
    parser.add_argument("--ratio", type=float, default=0.3, help="fraction of channels removed (0.3 ~ 2x fewer MACs)")
    parser.add_argument("--residual", choices=["prune", "keep"], default="prune",
                        help="keep: leave the residual stream whole and prune inside the blocks only")
    parser.add_argument("--scope", choices=["local", "global"], default="local", help="scope of table 1")
    parser.add_argument("--criteria", nargs="+", choices=names, default=[n for n in names if n != "adaptive"],
                        help="table 1 (default: all but adaptive, which equals coverage in one step)")
    parser.add_argument("--compare-criterion", choices=names, default=None,
                        help="default: table 1's best on the validation images")
    parser.add_argument("--iterative-extra", nargs="*", choices=names, default=["adaptive"],
                        help="criteria also run with --steps local steps in table 2 (adaptive differs from coverage "
                             "only there: it measures again before every step)")
    parser.add_argument("--steps", type=int, default=5, help="iterative steps compared with 1 in table 2")
    parser.add_argument("--no-scope-steps", action="store_true", help="skip table 2")
    parser.add_argument("--coverage-grid", action="store_true", help="table 3: coverage metrics x positions")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="0 = no fine-tuning")
    parser.add_argument("--train-subset", type=int, default=10000, help="training images used for fine-tuning")
    parser.add_argument("--test-subset", type=int, default=None, help="default: the whole 10,000-image test split")
    parser.add_argument("--val-subset", type=int, default=None,
                        help="validation images that select the best criterion (default: all those not used for "
                             "calibration)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--calib-batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50, help="timed batch-1 calls")
    parser.add_argument("--runs-64", type=int, default=5, help="timed batch-64 calls")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved unpruned/pruned timing pairs")
    parser.add_argument("--threads", type=int, default=1, help="timing threads (1: CPU time is quoted beside wall)")
    parser.add_argument("--train-threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads for calibration, scoring, evaluation and fine-tuning (default: all cores)")
    parser.add_argument("--run", default=None,
                        help="name of the results folder (default: resnet<depth>_ratio<r>[_residual-keep]_ft<epochs>x<images>)")
    args = parser.parse_args()
    torch.set_num_threads(args.train_threads)
    start, load_before = time.perf_counter(), os.getloadavg()[0]

    base, source = load_base(args.depth, args.weights)
    splits = load_dataset("cifar10")
    test = DataLoader(subset(splits.test, args.test_subset), batch_size=500)
    calib = list(DataLoader(splits.val, batch_size=args.calib_batch_size))[:args.calib_batches]
    held_out = Subset(splits.val, range(args.calib_batches * args.calib_batch_size, len(splits.val)))
    example = calib[0][0][:1]
    data = {"train": subset(splits.train, args.train_subset), "test": test, "calib": calib,
            "val": DataLoader(subset(held_out, args.val_subset), batch_size=500),
            "timing": DataLoader(subset(splits.test, 64), batch_size=64),
            "example": example, "accuracy_before": accuracy(base, test),
            "forward_seconds": forward_seconds(base, calib), "unpruned": deployed(base, example)}
    budget = "none" if not args.finetune_epochs else (
        f"{args.finetune_epochs} epoch(s) of SGD (momentum 0.9, nesterov, wd 5e-4), lr {args.lr} cosine, batch "
        f"{args.batch_size}, on {len(data['train']):,} training images (random crop + flip); an iterative run "
        "splits those images over its steps")
    what = f"ratio {args.ratio}" + (" in the blocks, the residual stream kept whole" if args.residual == "keep" else "")
    print(f"ResNet-{args.depth} from {source}; {what}; calibration {len(calib)} x {args.calib_batch_size} "
          f"validation images; test {len(test.dataset):,} images. Fine-tune budget per variant: {budget}.", flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("criteria", "compare_criterion", "no_scope_steps",
                                                                 "coverage_grid", "run", "train_threads")}
    args.run = args.run or (f"resnet{args.depth}_ratio{args.ratio}"
                            + ("_residual-keep" if args.residual == "keep" else "")
                            + f"_ft{args.finetune_epochs}x{len(data['train'])}")
    results = _report.Resumable(args, args.run, {**settings, "weights": str(args.weights), "source": source})
    results.record.update(source=source, budget=budget, what=what, test_images=len(test.dataset),
                          val_images=len(data["val"].dataset))

    def variant(name: str, scope: str, steps: int, full: bool = True) -> str:
        key = f"{name}|{scope}|{steps}|{'full' if full else 'pruned'}"
        row = results.get(key, lambda: prune_variant(base, name, scope, steps, data, args, full))
        print(f"done {name} {scope} {steps} step(s): pruned {row['accuracy_pruned']:.2f} %"
              + (f", fine-tuned {row['accuracy_finetuned']:.2f} % (validation {row['accuracy_val']:.2f} %)"
                 if full else ""), flush=True)
        return key

    rows = results.record["rows"]
    results.get(CONTROL, lambda: control(base, data, args))
    table1 = [variant(name, args.scope, 1) for name in args.criteria]
    chosen = args.compare_criterion or rows[selected(rows, table1)]["criterion"]
    tables: dict[str, Any] = {}
    tables["table2"] = [] if args.no_scope_steps else [
        *(variant(chosen, scope, steps) for scope in ("global", "local") for steps in (1, args.steps)),
        *(variant(name, "local", args.steps) for name in args.iterative_extra if name != chosen)]
    grid = [*COVERAGE_GRID, "magnitude", "taylor", "random"] if args.coverage_grid else []
    tables["table3"] = [variant(name, args.scope, 1, full=False) for name in grid]
    results.record["tables"] = tables

    minutes = (time.perf_counter() - start) / 60
    line = machine(f"{args.threads} timing thread(s), {args.train_threads} for the rest", load_before,
                   ("torch-pruning",)) + f" Wall time {minutes:.1f} min."
    _report.finish(results.record, args.run, line)
    print("\n" + render(results.record))


def selected(rows: dict[str, dict[str, Any]], keys: list[str]) -> str:
    """The key of the best fine-tuned variant by validation accuracy: the test split never chooses."""
    return max(keys, key=lambda k: rows[k]["accuracy_val"])


def render(record: dict[str, Any]) -> str:
    """The markdown tables of one run, from its record (what this script prints and BENCHMARKS.md shows);
    a run still going (or stopped) shows the rows it has and says what is missing."""
    args, rows, tables = record["args"], record["rows"], record.get("tables", {"table2": [], "table3": []})
    table1_keys = [k for k in (f"{name}|{args['scope']}|1|full" for name in args["criteria"]) if k in rows]
    if CONTROL not in rows or not table1_keys:
        return f"{_report.heading(record)}\n\n**Run not finished**: no pruned variant measured yet."
    clock = "cpu" if args["threads"] == 1 else "wall"
    tuned_any = bool(args["finetune_epochs"])

    def ms(r: dict[str, Any], runtime: str, who: str, batch: int) -> str:
        value = r.get(f"{runtime}_{who}_{clock}_b{batch}")
        return "-" if value is None else f"{value:.2f}" if batch == 1 else f"{value:.1f}"

    def speedup(r: dict[str, Any], runtime: str, per_mac: bool = False) -> str:
        """Batch-64 speed-up: the median of per-round ratios (rows timed before it was kept: ratio of medians)."""
        before, after = (r.get(f"{runtime}_{who}_{clock}_b64") for who in ("unpruned", "pruned"))
        if after is None:
            return "-"
        ratio = r.get(f"{runtime}_speedup_{clock}_b64") or before / after
        flag = " !" if r.get(f"{runtime}_warning_b64") else ""
        return f"{ratio / r['macs_reduction']:.2f}{flag}" if per_mac else f"{ratio:.2f}x{flag}"

    def tuned(r: dict[str, Any], key: str = "accuracy_finetuned") -> str:
        return f"{r[key]:.2f}" if tuned_any else "-"

    base, table1 = rows[CONTROL], [rows[k] for k in table1_keys]
    best = rows[selected(rows, table1_keys)]
    timed = [r for r in table1 if f"ort_unpruned_{clock}_b64" in r]
    unpruned = {k: statistics.median(r[k] for r in timed) for k in timed[0] if "_unpruned_" in k} if timed else {}
    what_ms = "CPU ms" if clock == "cpu" else "ms"
    out = [_report.heading(record), "",
           f"ResNet-{args['depth']} ({record['source']}), {record['what']}, {args['scope']} scope, 1 step. Fine-tune "
           f"per variant, the unpruned control included: {record['budget']}. Test: {record['test_images']:,} images; "
           f"validation (selects the criterion): {record['val_images']:,} held-out images. Latency: "
           f"{args['threads']} thread(s), p50 (median of {args['repeats']} interleaved rounds); speed-ups from CPU "
           "time when one thread is used, " + (
               "each the median of per-round ratios; \"!\" marks a speed-up whose timing the harness flagged (wall "
               "time far above CPU time, or more threads than idle cores)" if any(
                   f"torch_speedup_{clock}_b64" in r for r in table1) else
               "each the ratio of the medians (these rows were timed before per-round ratios and timing flags were "
               "recorded)") + ". Drops are against the unpruned control.", ""]
    first = table1[0]
    out.append(table(
        ["criterion", "acc before %", "acc pruned %", "+ BN recal. %", "val acc fine-tuned %", "test acc fine-tuned %",
         "drop vs control pp", "params", "MACs", "MAC reduction", f"torch {what_ms} b1", f"torch {what_ms} b64",
         "torch speed-up b64", f"ORT {what_ms} b1", f"ORT {what_ms} b64", "ORT speed-up b64",
         "ORT speed-up / MAC red.", "score s", "forward s"],
        [["(unpruned control, same fine-tuning)", f"{base['accuracy_before']:.2f}", "-", "-", tuned(base, "accuracy_val"),
          tuned(base), "-", f"{first['params_before']:,}", f"{first['macs_before'] / 1e6:.1f} M", "1.00x",
          ms(unpruned, "torch", "unpruned", 1), ms(unpruned, "torch", "unpruned", 64), "1.00x",
          ms(unpruned, "ort", "unpruned", 1), ms(unpruned, "ort", "unpruned", 64), "1.00x", "-", "-",
          f"{first['forward_seconds']:.2f}"]] +
        [[r["criterion"] + (" (selected)" if r is best else ""), f"{r['accuracy_before']:.2f}",
          f"{r['accuracy_pruned']:.2f}", f"{r['accuracy_recalibrated']:.2f}", tuned(r, "accuracy_val"), tuned(r),
          f"{r['accuracy_finetuned'] - base['accuracy_finetuned']:+.2f}" if tuned_any else "-", f"{r['params']:,}",
          f"{r['macs'] / 1e6:.1f} M", f"{r['macs_reduction']:.2f}x", ms(r, "torch", "pruned", 1),
          ms(r, "torch", "pruned", 64), speedup(r, "torch"), ms(r, "ort", "pruned", 1),
          ms(r, "ort", "pruned", 64), speedup(r, "ort"), speedup(r, "ort", per_mac=True), f"{r['score_seconds']:.2f}",
          f"{r['forward_seconds']:.2f}"] for r in table1]))
    if tuned_any:
        test, control_test = best["accuracy_finetuned"], base["accuracy_finetuned"]
        out += ["", f"Selected on validation: **{best['criterion']}** ({best['accuracy_val']:.2f} % "
                f"validation); its test accuracy {test:.2f} % against the control's {control_test:.2f} % "
                f"({test - control_test:+.2f} pp)."]
    missing = [name for name in args["criteria"] if f"{name}|{args['scope']}|1|full" not in rows]
    if missing or "finished" not in record:
        out += ["", f"**Run not finished** when these rows were rendered: not measured yet: "
                f"{', '.join(missing) or 'nothing in table 1 (later tables pending)'}."]
    if tables["table2"]:
        out += ["", f"Scope and iterative steps for `{rows[tables['table2'][0]]['criterion']}` ({record['what']}; same "
                "total fine-tune budget).", ""]
        out.append(table(["criterion", "scope", "steps", "acc pruned % (last step)", "val acc fine-tuned %",
                          "test acc fine-tuned %", "params", "MACs", "MAC reduction", "torch speed-up b64",
                          "ORT speed-up b64", "score s"],
                         [[r["criterion"], r["scope"], str(r["steps"]), f"{r['accuracy_pruned']:.2f}",
                           tuned(r, "accuracy_val"), tuned(r), f"{r['params']:,}", f"{r['macs'] / 1e6:.1f} M",
                           f"{r['macs_reduction']:.2f}x", speedup(r, "torch"), speedup(r, "ort"),
                           f"{r['score_seconds']:.2f}"] for r in map(rows.get, tables["table2"])]))
    if tables["table3"]:
        out += ["", f"Right after pruning ({record['what']}, {args['scope']} scope, no fine-tuning): where coverage "
                "is measured.", ""]
        out.append(table(["criterion", "acc pruned %", "+ BN recal. %", "MAC reduction", "score s"],
                         [[r["criterion"], f"{r['accuracy_pruned']:.2f}", f"{r['accuracy_recalibrated']:.2f}",
                           f"{r['macs_reduction']:.2f}x", f"{r['score_seconds']:.2f}"]
                          for r in map(rows.get, tables["table3"])]))
    return "\n".join(out)


if __name__ == "__main__":
    main()
