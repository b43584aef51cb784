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
output, with magnitude, Taylor and random beside them. Rows go to `--out` as JSON after every variant;
a rerun with the same settings resumes, skipping the variants already measured.
Usage: python benchmarks/pruning_cifar.py [--depth 56] [--ratio 0.3] [--residual keep] [--criteria ...]
       [--finetune-epochs 1] [--train-subset 10000] [--test-subset N] [--coverage-grid] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader, Subset

from cleanai.benchmark import BenchmarkConfig, OrtRunner, Runner, TorchRunner, benchmark, environment
from cleanai.data import load_dataset, subset
from cleanai.io import write_json
from cleanai.models import create_model
from cleanai.pruning import (
    PruneConfig, create_criterion, list_criteria, prune, recalibrate_batchnorm, requirements,
)
from cleanai.pruning.criteria import METRICS
from cleanai.training import TrainConfig, Trainer

from _report import machine, print_table  # benchmarks/_report.py: scripts run from this folder

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


def latency_ms(runner: Runner, batch: int, runs: int, loader: DataLoader,
               args: argparse.Namespace) -> tuple[float, float]:
    """(wall, process CPU) median ms per call at `batch`, timed by the benchmark harness."""
    config = BenchmarkConfig(batch_size=batch, warmup=args.warmup, runs=runs, throughput_runs=0, threads=args.threads,
                             max_eval_batches=1, progress=False)
    row = benchmark(runner, loader, config=config)
    return row.latency_ms_p50, row.latency_cpu_ms_p50


def paired_latencies(model: nn.Module, data: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """p50 ms of the unpruned and the pruned model in torch and ONNX Runtime at batch 1 and 64, interleaved
    `--repeats` times (medians); keys `<torch|ort>_<unpruned|pruned>_<wall|cpu>_b<batch>`."""
    pruned = deployed(model, data["example"])
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for batch, runs in ((1, args.runs), (64, args.runs_64)):
            for runtime in ("torch", "ort"):
                for who, runner in (("unpruned", data["unpruned"][runtime]), ("pruned", pruned[runtime])):
                    wall, cpu = latency_ms(runner, batch, runs, data["timing"], args)
                    times.setdefault(f"{runtime}_{who}_wall_b{batch}", []).append(wall)
                    times.setdefault(f"{runtime}_{who}_cpu_b{batch}", []).append(cpu)
    return {key: statistics.median(values) for key, values in times.items()}


def forward_seconds(model: nn.Module, batches: list[Any]) -> float:
    """One plain inference pass over the calibration batches: the yardstick for a criterion's cost."""
    start = time.perf_counter()
    with torch.inference_mode():
        for inputs, _ in batches:
            model(inputs)
    return time.perf_counter() - start


def prune_variant(base: nn.Module, name: str, scope: str, steps: int, data: dict[str, Any],
                  args: argparse.Namespace, finetune_and_time: bool = True) -> dict[str, Any]:
    """Prune `base` with criterion `name`, fine-tune after each step, and measure the result
    (without `finetune_and_time`: only the accuracy right after pruning, MACs and params)."""
    parts = torch.tensor_split(torch.arange(len(data["train"])), steps)
    loaders = [DataLoader(Subset(data["train"], part.tolist()), batch_size=args.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(0)) for part in parts]
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
    return {**row, "accuracy_finetuned": accuracy(model, data["test"]), "finetune_seconds": tune_seconds[0],
            **paired_latencies(model, data, args)}


class Results:
    """Rows saved atomically after every variant; reopened with the same settings, the finished ones are reused."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path, self.settings = path, settings
        saved = json.loads(path.read_text()) if path.exists() else {}
        self.rows: dict[str, dict[str, Any]] = saved.get("rows", {}) if saved.get("settings") == settings else {}
        if self.rows:
            print(f"resuming: {len(self.rows)} variant(s) already measured in {path}", flush=True)

    def get(self, key: str, measure: Any) -> dict[str, Any]:
        if key not in self.rows:
            self.rows[key] = measure()
            write_json(self.path, {"settings": self.settings, "environment": environment(), "rows": self.rows})
        return self.rows[key]


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
    parser.add_argument("--compare-criterion", choices=names, default=None, help="default: table 1's best")
    parser.add_argument("--iterative-extra", nargs="*", choices=names, default=["adaptive"],
                        help="criteria also run with --steps local steps in table 2 (adaptive differs from coverage "
                             "only there: it measures again before every step)")
    parser.add_argument("--steps", type=int, default=5, help="iterative steps compared with 1 in table 2")
    parser.add_argument("--no-scope-steps", action="store_true", help="skip table 2")
    parser.add_argument("--coverage-grid", action="store_true", help="table 3: coverage metrics x positions")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="0 = no fine-tuning")
    parser.add_argument("--train-subset", type=int, default=10000, help="training images used for fine-tuning")
    parser.add_argument("--test-subset", type=int, default=None, help="default: the whole 10,000-image test split")
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
    parser.add_argument("--out", type=Path, default=Path("runs/pruning_cifar"))
    args = parser.parse_args()
    torch.set_num_threads(args.train_threads)
    start = time.perf_counter()

    base, source = load_base(args.depth, args.weights)
    splits = load_dataset("cifar10")
    test = DataLoader(subset(splits.test, args.test_subset), batch_size=500)
    calib = list(DataLoader(splits.val, batch_size=args.calib_batch_size))[:args.calib_batches]
    example = calib[0][0][:1]
    data = {"train": subset(splits.train, args.train_subset), "test": test, "calib": calib,
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
                                                                 "coverage_grid", "out", "train_threads")}
    tag = f"resnet{args.depth}_ratio{args.ratio}" + ("_residual-keep" if args.residual == "keep" else "")
    results = Results(args.out / f"{tag}.json", {**settings, "weights": str(args.weights), "source": source})

    def variant(name: str, scope: str, steps: int, full: bool = True) -> dict[str, Any]:
        row = results.get(f"{name}|{scope}|{steps}|{'full' if full else 'pruned'}",
                          lambda: prune_variant(base, name, scope, steps, data, args, full))
        print(f"done {name} {scope} {steps} step(s): pruned {row['accuracy_pruned']:.2f} %"
              + (f", fine-tuned {row['accuracy_finetuned']:.2f} %" if full else ""), flush=True)
        return row

    table1 = [variant(name, args.scope, 1) for name in args.criteria]
    chosen = args.compare_criterion or max(table1, key=lambda r: r["accuracy_finetuned"])["criterion"]
    table2 = [] if args.no_scope_steps else [
        *(variant(chosen, scope, steps) for scope in ("global", "local") for steps in (1, args.steps)),
        *(variant(name, "local", args.steps) for name in args.iterative_extra if name != chosen)]
    grid = [*COVERAGE_GRID, "magnitude", "taylor", "random"] if args.coverage_grid else []
    table3 = [variant(name, args.scope, 1, full=False) for name in grid]

    minutes = (time.perf_counter() - start) / 60
    print("\n" + machine(f"{args.threads} timing thread(s), {args.train_threads} for the rest", None,
                         ("torch-pruning",)) + f" Wall time {minutes:.1f} min. Rows: {results.path}\n")
    print(f"ResNet-{args.depth} ({source}), {what}, {args.scope} scope, 1 step. Fine-tune: {budget}. "
          f"Test: {len(test.dataset):,} images. Latency: {args.threads} thread(s), p50 (median of {args.repeats} "
          "interleaved rounds); speed-ups from CPU time when one thread is used.\n")
    clock = "cpu" if args.threads == 1 else "wall"

    def ms(r: dict[str, Any], runtime: str, who: str, batch: int) -> str:
        value = r.get(f"{runtime}_{who}_{clock}_b{batch}")
        return "-" if value is None else f"{value:.2f}" if batch == 1 else f"{value:.1f}"

    def speedup(r: dict[str, Any], runtime: str, per_mac: bool = False) -> str:
        before, after = (r.get(f"{runtime}_{who}_{clock}_b64") for who in ("unpruned", "pruned"))
        if after is None:
            return "-"
        ratio = before / after
        return f"{ratio / r['macs_reduction']:.2f}" if per_mac else f"{ratio:.2f}x"

    def tuned(r: dict[str, Any]) -> str:
        return f"{r['accuracy_finetuned']:.2f}" if args.finetune_epochs else "-"

    timed = [r for r in table1 if f"ort_unpruned_{clock}_b64" in r]
    unpruned = {k: statistics.median(r[k] for r in timed) for k in timed[0] if "_unpruned_" in k} if timed else {}
    what_ms = "CPU ms" if clock == "cpu" else "ms"
    print_table(["criterion", "acc before %", "acc pruned %", "+ BN recal. %", "acc fine-tuned %", "params", "MACs",
                 "MAC reduction", f"torch {what_ms} b1", f"torch {what_ms} b64", "torch speed-up b64",
                 f"ORT {what_ms} b1", f"ORT {what_ms} b64", "ORT speed-up b64", "ORT speed-up / MAC red.", "score s",
                 "forward s"],
                [["(unpruned)", f"{data['accuracy_before']:.2f}", "-", "-", "-", f"{table1[0]['params_before']:,}",
                  f"{table1[0]['macs_before'] / 1e6:.1f} M", "1.00x", ms(unpruned, "torch", "unpruned", 1),
                  ms(unpruned, "torch", "unpruned", 64), "1.00x", ms(unpruned, "ort", "unpruned", 1),
                  ms(unpruned, "ort", "unpruned", 64), "1.00x", "-", "-", f"{table1[0]['forward_seconds']:.2f}"]] +
                [[r["criterion"], f"{r['accuracy_before']:.2f}", f"{r['accuracy_pruned']:.2f}",
                  f"{r['accuracy_recalibrated']:.2f}", tuned(r), f"{r['params']:,}",
                  f"{r['macs'] / 1e6:.1f} M", f"{r['macs_reduction']:.2f}x", ms(r, "torch", "pruned", 1),
                  ms(r, "torch", "pruned", 64), speedup(r, "torch"), ms(r, "ort", "pruned", 1),
                  ms(r, "ort", "pruned", 64), speedup(r, "ort"), speedup(r, "ort", per_mac=True), f"{r['score_seconds']:.2f}",
                  f"{r['forward_seconds']:.2f}"] for r in table1])
    if table2:
        print(f"\nScope and iterative steps for `{chosen}` ({what}; same total fine-tune budget).\n")
        print_table(["criterion", "scope", "steps", "acc pruned % (last step)", "acc fine-tuned %", "params", "MACs",
                     "MAC reduction", "torch speed-up b64", "ORT speed-up b64", "score s"],
                    [[r["criterion"], r["scope"], str(r["steps"]), f"{r['accuracy_pruned']:.2f}",
                      tuned(r), f"{r['params']:,}", f"{r['macs'] / 1e6:.1f} M", f"{r['macs_reduction']:.2f}x",
                      speedup(r, "torch"), speedup(r, "ort"), f"{r['score_seconds']:.2f}"] for r in table2])
    if table3:
        print(f"\nRight after pruning ({what}, {args.scope} scope, no fine-tuning): where coverage is measured.\n")
        print_table(["criterion", "acc pruned %", "+ BN recal. %", "MAC reduction", "score s"],
                    [[r["criterion"], f"{r['accuracy_pruned']:.2f}", f"{r['accuracy_recalibrated']:.2f}",
                      f"{r['macs_reduction']:.2f}x",
                      f"{r['score_seconds']:.2f}"] for r in table3])


if __name__ == "__main__":
    main()
