"""`cleanai optimize` against single-technique searches (issue 14's goals), measured side by side in one run.

Part `cifar`: the pretrained akamaster CIFAR-10 ResNet-`--depth` (default 56), budget `--max-drop` (1.0) point
on the validation split. Three searches with the same settings, trial count and seed:
  combined           every choice (criterion, ratio, per-layer scale, steps, KD, BN folding, int8 modes)
  pruning only       the same without quantization (the fp32 ONNX artifact)
  quantization only  no pruning (BN folding and ONNX Runtime int8 modes only)
Each chosen pipeline is rerun with its final fine-tune (the recipe the search writes), then the original fp32
torch model and the three final artifacts are timed at batch 1 in interleaved rounds (`compare_runners`,
`--threads`) and scored on the whole 10,000-image test split. Goals: the combined artifact within budget, at
most 1/4 of the fp32 torch latency, and faster than both single-technique artifacts. When the combined search
chose a pruned, statically quantized artifact, its pruned model and the original are then quantized with
per-channel and with per-tensor scales and timed the same way (not with --quick): what the speed is made of.
Part `clinc`: the fine-tuned MiniLM teacher of `benchmarks/clinc150.py` (its cache), budget 1.0 point, one
combined search (head and neuron pruning in one step, KD, dynamic int8; `--clinc-depths`: shallower students,
`--clinc-vocab-keep-first`: vocabulary pruning too); its final artifact next to the
hand-built rows of benchmarks/results/clinc150/<--clinc-baseline>/rows.json, a run of benchmarks/clinc150.py with
the same cached teacher (accuracy with "oos" as a plain class, which is what the search measures; batch-1
latency on token tensors here, tokenising included there: compare sizes directly, latencies only as ratios to
each run's own teacher). Then the teacher, the hand-built final artifact and the search's are timed in one run and
scored on the test split (`measure_intents`) and on the whole validation split, where the goal's accuracy condition
can be read without the test split. `--clinc-match-hand-built` measures the teacher and the hand-built artifact on
the validation split first and gives the search the budget that puts its floor at the hand-built artifact's accuracy.
Each search lives in `<cache>/optimize_bench/<run>/<name>/` and resumes; rows go to
benchmarks/results/optimize/<run>/rows.json after each part (a rerun with the same settings reuses them), and
every search's trials.json beside them as trials-<name>.json.
`--quick`: ResNet-20, 2,000 training / 1,000 validation images, 3 trials per search, 1 epoch, no CLINC part:
a first look in about 10 minutes on a quiet 2-core machine, not a result.
`--time-budget SECONDS` bounds each whole search (scan, trials, final rerun; `OptimizeConfig.time_budget`),
`--searches combined` runs only the search `cleanai optimize` runs.
`--reuse-search RUN` starts every search from run RUN's (its study, original measurements and sensitivity scan,
copied into this run's folder; the CLINC150 teacher weights file its settings name): a run that only changes
what the search's fingerprint leaves out (`--final-epochs`, `--trials`, the objective) reruns the choice's final
fine-tune, or adds trials, without training the finished trials again.
Usage: python benchmarks/optimize.py [--quick] [--part cifar clinc] [--trials 24] [--timeout 2400]
       [--time-budget 3600] [--searches combined pruning quantization]
       [--threads 1] [--clinc-depths 4 3] [--clinc-vocab-keep-first 12000] [--clinc-kd 0.125 7]
       [--clinc-quant dynamic] [--clinc-objective size] [--clinc-lrs 1e-4 2e-4] [--clinc-match-hand-built]
       [--clinc-kd-augment 1] [--near-miss-margin 0.3] [--max-near-misses 2] [--reuse-search RUN] [--run NAME]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from cleanai._platform import channel_multiple
from cleanai.benchmark import BOOK_QUERY, BenchmarkConfig, compare_runners, intent_variants, measure_intents
from cleanai.data import default_cache_dir, load_dataset, texts_of
from cleanai.distillation import prune_vocabulary
from cleanai.io import RUN_MARKER, save_safetensors, write_json
from cleanai.models import TextClassifier, create_model
from cleanai.optimize import OptimizeConfig, OptimizeResult, optimize
from cleanai.pruning import PruneConfig, load_pruned
from cleanai.quantization import QuantConfig, quantize
from cleanai.recipes import DataSpec, ModelSpec
from cleanai.runtime import OrtRunner, TextClassifierRunner, TorchRunner, evaluate
from cleanai.training import TrainConfig

import _report  # benchmarks/_report.py: scripts run from this folder
import clinc150  # its training schedule (--clinc-schedule), query length and the models its runs cached

SEARCHES = {"combined": {}, "pruning only": {"quant_modes": ["none"]},
            "quantization only": {"max_ratio": 0.0, "quant_modes": ["static", "dynamic"]}}
SEARCH_OPTIONS = {name.split()[0]: name for name in SEARCHES}  # --searches combined pruning quantization
NEAREST = "nearest rows"  # the hand-built student cut as the search cuts (--clinc-vocab-fallback nearest)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-20, small subsets, 3 trials: a first look")
    parser.add_argument("--part", nargs="+", choices=["cifar", "clinc"], default=None,
                        help="default: both (cifar only with --quick)")
    parser.add_argument("--depth", type=int, default=None, choices=[20, 56], help="default 56 (20 with --quick)")
    parser.add_argument("--max-drop", type=float, default=1.0, help="accuracy points the artifact may lose")
    parser.add_argument("--trials", type=int, default=None, help="trials per search (default 24; 3 with --quick)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds of trials per search (default: no limit)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds per whole search: scan, trials and final rerun (OptimizeConfig.time_budget)")
    parser.add_argument("--searches", nargs="+", choices=list(SEARCH_OPTIONS), default=list(SEARCH_OPTIONS),
                        help="which CIFAR searches run (default all three)")
    parser.add_argument("--train-samples", type=int, default=None, help="default 10,000 (2,000 with --quick)")
    parser.add_argument("--val-samples", type=int, default=None, help="default 2,000 (1,000 with --quick)")
    parser.add_argument("--search-epochs", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--final-epochs", type=int, default=None, help="default 6 (1 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="latency threads")
    parser.add_argument("--round-to", type=int, default=None,
                        help="kept channels the nearest multiple of this (PruneConfig.round_to); default: what each "
                             "candidate's kernels work in on this CPU (cleanai._platform.channel_multiple)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds of the final comparison")
    parser.add_argument("--runs", type=int, default=100, help="timed batch-1 calls per round")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="CLINC150 teacher (TextClassifier folder); default: the one benchmarks/clinc150.py cached")
    parser.add_argument("--clinc-baseline", default="book_4layers",
                        help="the benchmarks/clinc150.py run (same teacher) whose hand-built rows the CLINC150 search "
                             "is set beside")
    parser.add_argument("--clinc-depths", type=int, nargs="+", default=[],
                        help="the CLINC150 search also tries students of these encoder depths (default: none)")
    parser.add_argument("--clinc-vocab-keep-first", type=int, nargs="+", default=[],
                        help="the CLINC150 search also tries vocabulary pruning, keeping the tokenizer's first N ids "
                             "beside the training queries' tokens (default: none)")
    parser.add_argument("--clinc-vocab-fallback", choices=["nearest", "prefix"], default=None,
                        help="the kept row a token the search's vocabulary cut drops reads "
                             "(OptimizeConfig.vocab_fallback; default prefix, as the runs before session 29); with "
                             "nearest, the hand-built artifact is also rebuilt with nearest rows beside its own")
    parser.add_argument("--clinc-kd", type=float, nargs=2, default=[0.5, 2.0], metavar=("ALPHA", "T"),
                        help="KD weight and temperature of the CLINC150 search (default 0.5 2; the hand-built "
                             "book_* runs distil with 0.125 7)")
    parser.add_argument("--clinc-kd-augment", type=int, default=None, metavar="N",
                        help="the CLINC150 search's KD fine-tunes also read N edited, unlabelled variants of each "
                             "training query (OptimizeConfig.kd_augment; the hand-built book_* runs: --augment 1)")
    parser.add_argument("--clinc-lrs", type=float, nargs="+", default=[],
                        help="learning rates the CLINC150 search samples for its fine-tunes (default: 1e-4 only; the "
                             "hand-built book_* runs train at 2e-4)")
    parser.add_argument("--clinc-schedule", choices=["constant", "warmup_cosine"], default=None,
                        help="the CLINC150 search's fine-tunes: a constant learning rate (default), or the hand-built "
                             "runs' schedule (AdamW with weight decay 0.01, a linear warm-up over 6 %% of one epoch's "
                             "steps, then cosine decay to 0 over each fine-tune)")
    parser.add_argument("--clinc-quant", nargs="+", choices=["none", "dynamic"], default=["none", "dynamic"],
                        help="quantization modes of the CLINC150 search (default: none dynamic)")
    parser.add_argument("--clinc-max-ratio", type=float, default=0.6,
                        help="largest pruning ratio of the CLINC150 search (default 0.6)")
    parser.add_argument("--clinc-objective", choices=["latency", "size"], default=None,
                        help="what the CLINC150 search minimises within the budget (default: latency)")
    parser.add_argument("--clinc-match-hand-built", action="store_const", const=True, default=None,
                        help="the CLINC150 search's floor is the hand-built artifact's validation accuracy: its max "
                             "drop is the teacher's validation accuracy minus that artifact's, both measured before "
                             "the search as the validation rows read them (the goal's 'equal or better accuracy', on "
                             "the split the search chooses on); --max-drop then applies to the CIFAR part only")
    parser.add_argument("--near-miss-margin", type=float, default=None, metavar="POINTS",
                        help="rerun the candidates that missed the floor by at most this many points in the search, and "
                             "beat its choice, with the final fine-tune first, best first; the first that then meets "
                             "the floor on validation is the choice (OptimizeConfig.near_miss_margin; default off)")
    parser.add_argument("--max-near-misses", type=int, default=None, metavar="N",
                        help="at most this many near misses rerun per search (default 3)")
    parser.add_argument("--reuse-search", default=None, metavar="RUN",
                        help="start every search from the finished trials of run RUN (same settings but final "
                             "epochs, trials and objective)")
    parser.add_argument("--run", default=None, help="results folder name (default: quick or full)")
    args = parser.parse_args()
    quick = args.quick
    defaults = {"part": ["cifar"] if quick else ["cifar", "clinc"], "depth": 20 if quick else 56,
                "trials": 3 if quick else 24, "train_samples": 2000 if quick else 10000,
                "val_samples": 1000 if quick else 2000, "search_epochs": 1 if quick else 3,
                "final_epochs": 1 if quick else 6, "run": "quick" if quick else "full"}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def search_config(args: argparse.Namespace, out: Path, **fields: Any) -> OptimizeConfig:
    settings: dict[str, Any] = {
        "out": out, "max_accuracy_drop": args.max_drop, "objective": "latency", "n_trials": args.trials,
        "timeout": args.timeout, "time_budget": args.time_budget, "threads": args.threads,
        "search_epochs": args.search_epochs, "final_epochs": args.final_epochs, "progress": False,
        "finetune": TrainConfig(epochs=1, optimizer="sgd", lr=0.01, progress=False, device="cpu",
                                optimizer_kwargs={"momentum": 0.9, "nesterov": True}),
        **{name: getattr(args, name) for name in ("near_miss_margin", "max_near_misses")
           if getattr(args, name) is not None}}
    if args.quick:
        return OptimizeConfig.quick(**{**settings, **fields})
    return OptimizeConfig(**{**settings, **fields})


def summary(result: OptimizeResult, seconds: float) -> dict[str, Any]:
    """What a search row keeps: the choice, the front, the final artifact, the trial states and the time."""
    states: dict[str, int] = {}
    for r in result.trials:
        states[r["state"]] = states.get(r["state"], 0) + 1
    final = {k: v for k, v in result.final.items() if k != "rows"}
    return {"seconds": seconds, "met": result.met, "gap": result.gap, "floor": result.floor,
            "baseline": result.baseline, "chosen": result.chosen, "front": result.front, "states": states,
            "final": final, "artifact": {k: str(v) for k, v in result.artifact.items()},
            "recipe": None if result.recipe is None else str(result.recipe), "near_misses": result.near_misses}


def artifact_runner(row: dict[str, Any], name: str) -> Any:
    files = row["artifact"]
    if "onnx" in files:
        return OrtRunner(files["onnx"], name=name)
    return TorchRunner(load_pruned(files["torch"]).eval(), name=name)


def cifar(args: argparse.Namespace, results: _report.Resumable, work: Path) -> None:
    model = ModelSpec(name=f"resnet{args.depth}", weights="akamaster")
    data = DataSpec(name="cifar10", batch_size=128, subset={"train": args.train_samples, "val": args.val_samples})
    # in-block channels only: residual widths stay whole
    prune = PruneConfig(residual="keep", calib_batches=4, round_to=args.round_to)
    for name in (SEARCH_OPTIONS[option] for option in args.searches):
        fields = SEARCHES[name]

        def measure(name: str = name, fields: dict[str, Any] = fields) -> dict[str, Any]:
            start = time.perf_counter()
            result = optimize(model, data, search_config(args, work / name.replace(" ", "_"), prune=prune, **fields))
            print(result.summary(), flush=True)
            return summary(result, time.perf_counter() - start)
        results.get(f"cifar|{name}", measure)

    def compare() -> dict[str, Any]:
        original = create_model(model.name, pretrained="akamaster").eval()
        runners: dict[str, Any] = {"fp32 torch (original)": TorchRunner(original, name="fp32 torch (original)")}
        for name in SEARCHES:
            row = results.record["rows"].get(f"cifar|{name}")
            if row is not None and row["artifact"]:
                runners[name] = artifact_runner(row, name)
        test = load_dataset("cifar10").loaders(batch_size=128, eval_batch_size=256).test
        rows = compare_runners(runners, test, BenchmarkConfig(batch_size=1, runs=args.runs, threads=args.threads,
                                                              throughput_runs=0, progress=False),
                               repeats=args.repeats, show=True)
        return {"rows": [r.model_dump(mode="json") for r in rows]}
    results.get("cifar|compare", compare)

    def granularity() -> dict[str, Any]:
        """What the combined artifact's speed is made of when it prunes and quantizes statically: its pruned model
        and the original, each quantized with per-channel and with per-tensor scales (the same preset and minmax
        calibration otherwise), timed as the comparison times."""
        if args.quick:
            return {"skipped": "not with --quick"}
        row = results.record["rows"]["cifar|combined"]
        params = (row["chosen"] or {}).get("params", {})
        if not (params.get("ratio") and params.get("quant") == "static" and "torch" in row["artifact"]):
            return {"skipped": "the combined search did not choose a pruned, statically quantized artifact"}
        loaders = load_dataset("cifar10").loaders(batch_size=128, eval_batch_size=256)
        models = {"original": create_model(model.name, pretrained="akamaster").eval(),
                  "combined's pruned model": load_pruned(row["artifact"]["torch"]).eval()}
        preset = {"calibration": "minmax", "calibration_batches": 8}  # as the searches calibrate
        example = torch.randn(1, 3, 32, 32)
        runners = {f"{label}, int8 {'per-channel' if per_channel else 'per-tensor'}": quantize(
            net, QuantConfig.auto(True, per_channel=per_channel, **preset), calib=loaders.train,
            example_inputs=example, name=label)
            for label, net in models.items() for per_channel in (True, False)}
        rows = compare_runners(runners, loaders.test,
                               BenchmarkConfig(batch_size=1, runs=args.runs, threads=args.threads, throughput_runs=0,
                                               progress=False), repeats=args.repeats, show=True)
        return {"rows": [r.model_dump(mode="json") for r in rows]}
    results.get("cifar|granularity", granularity)


def clinc(args: argparse.Namespace, results: _report.Resumable, work: Path) -> None:
    teacher_dir = args.teacher or clinc150.cached_teacher()
    if teacher_dir is None or not (teacher_dir / "config.json").is_file():
        raise SystemExit("no CLINC150 teacher: run benchmarks/clinc150.py first, or pass --teacher DIR")

    @functools.cache
    def splits() -> Any:
        return load_dataset("clinc150", config="plus")

    @functools.cache
    def references() -> tuple[dict[str, TextClassifierRunner], Any]:
        """The fp32 torch teacher and the hand-built final artifact of `--clinc-baseline`, each reading raw queries
        as benchmarks/clinc150.py does; and the CLINC150 loaders of raw texts. Built once for the rows below (the
        hand-built artifact is rebuilt: vocabulary, export, quantization)."""
        teacher = TextClassifier.from_pretrained(teacher_dir).eval()
        oos = teacher.label_names.index("oos")
        return ({"teacher": TextClassifierRunner(teacher.tokenizer, TorchRunner(teacher, name="teacher"),
                                                 clinc150.MAX_LENGTH, oos_index=oos),
                 **hand_built_final(args.clinc_baseline, texts_of(splits().train), oos, work / "hand_built",
                                    args.clinc_vocab_fallback)},
                splits().loaders(batch_size=64))

    def val_accuracy(runners: dict[str, TextClassifierRunner], loaders: Any) -> dict[str, Any]:
        """The runners' accuracy on the whole validation split, "oos" as a class."""
        accuracy = {name: evaluate(runner, loaders.val).metrics["accuracy"] for name, runner in runners.items()}
        return {"accuracy": accuracy, "queries": len(loaders.val.dataset)}

    def hand_built_floor() -> dict[str, Any]:
        """`--clinc-match-hand-built`: the budget that puts the search's floor at the hand-built artifact's
        validation accuracy (the teacher's less that artifact's, in points; 0 when the artifact is better)."""
        row = val_accuracy(*references())
        accuracy = row["accuracy"]
        return {**row, "max_drop": max(0.0, 100 * (accuracy["teacher"] - accuracy[_hand_built(accuracy)]))}

    max_drop = (results.get("clinc|hand_built_floor", hand_built_floor)["max_drop"] if args.clinc_match_hand_built
                else args.max_drop)

    def measure() -> dict[str, Any]:
        teacher = TextClassifier.from_pretrained(teacher_dir).eval()
        # the search's fingerprint names this file: a reused search keeps the one its run wrote
        weights = teacher_weights(work.parent, args.reuse_search or args.run)
        if args.reuse_search is None or not weights.is_file():
            save_safetensors(teacher, weights)
        model = ModelSpec(name="text_classifier", kwargs={"checkpoint": str(teacher_dir)}, weights=str(weights))
        data = DataSpec(name="clinc150", options={"config": "plus"}, batch_size=32, eval_batch_size=128)
        # the hand-built runs' schedule, its warm-up counted on one epoch (a trial's fine-tunes last one)
        schedule = (clinc150.schedule(1, math.ceil(len(splits().train) / data.batch_size))
                    if args.clinc_schedule == "warmup_cosine" else {})
        start = time.perf_counter()
        result = optimize(model, data, search_config(args, work / "clinc", quant_modes=args.clinc_quant,
                                                     max_accuracy_drop=max_drop,
                                                     objective=args.clinc_objective or "latency",
                                                     fold_bn=[False], criteria=["magnitude", "taylor"], max_steps=1,
                                                     max_ratio=args.clinc_max_ratio,
                                                     depths=args.clinc_depths,
                                                     vocab_keep_first=args.clinc_vocab_keep_first,
                                                     vocab_fallback=args.clinc_vocab_fallback or "prefix",
                                                     kd_alpha=args.clinc_kd[0],
                                                     kd_temperature=args.clinc_kd[1],
                                                     kd_augment=args.clinc_kd_augment or 0,
                                                     finetune_lrs=args.clinc_lrs,
                                                     finetune=TrainConfig(epochs=1, optimizer="adamw", lr=1e-4,
                                                                          progress=False, device="cpu",
                                                                          **schedule)))
        print(result.summary(), flush=True)
        return summary(result, time.perf_counter() - start)
    results.get("clinc|combined", measure)

    def runners() -> tuple[dict[str, TextClassifierRunner], Any]:
        """`references` and the search's final artifact, read the same way."""
        measured, loaders = references()
        teacher = measured["teacher"]
        final = results.record["rows"]["clinc|combined"]["artifact"]["onnx"]
        return ({**measured, "optimize": TextClassifierRunner(teacher.tokenizer, OrtRunner(final, name="optimize"),
                                                               teacher.max_length, oos_index=teacher.oos_index)},
                loaders)

    def side_by_side() -> dict[str, Any]:
        """The three `runners` in the same interleaved rounds, measured as benchmarks/clinc150.py measures its rows
        (`measure_intents`: the book's query, tokenising included; the whole test split): the goal's comparison
        within one run, not across two runs' teacher timings."""
        measured, loaders = runners()
        rows = measure_intents(measured, loaders.test, loaders.val, BOOK_QUERY,
                               BenchmarkConfig(threads=args.threads, runs=args.runs, progress=False),
                               repeats=args.repeats)
        return {"rows": [r.model_dump(mode="json") for r in rows]}

    def validation() -> dict[str, Any]:
        """The three `runners`' accuracy on the whole validation split, "oos" as a class: the goal's accuracy
        condition read on the split the search chooses on, beside its reading on the test split (the references'
        as measured for the floor, when they were)."""
        measured, loaders = runners()
        known = results.record["rows"].get("clinc|hand_built_floor", {}).get("accuracy", {})
        row = val_accuracy({name: r for name, r in measured.items() if name not in known}, loaders)
        return {**row, "accuracy": {**known, **row["accuracy"]}}

    if "onnx" not in results.record["rows"]["clinc|combined"]["artifact"]:
        results.get("clinc|side_by_side", lambda: {"skipped": "the CLINC150 search saved no ONNX artifact"})
        return
    results.get("clinc|side_by_side", side_by_side)
    results.get("clinc|validation", validation)


def hand_built_final(run: str, train_texts: list[str], oos: int, workdir: Path,
                     fallback: str | None = None) -> dict[str, TextClassifierRunner]:
    """The final artifact of a benchmarks/clinc150.py run (distilled, vocabulary-pruned, ORT dynamic int8), rebuilt
    as that script builds it from the distilled student it cached; with `fallback` "nearest", also the same student
    cut to the same vocabulary inside the model, dropped tokens reading the nearest kept rows (what the search's cut
    does). Without that run or its student it stops, naming them: the search's row is saved, so the same command run
    again after that run resumes here."""
    baseline = _report.RESULTS / "clinc150" / run / "rows.json"
    record = json.loads(baseline.read_text()) if baseline.is_file() else {}
    source = clinc150.cached_model(record)
    if "vocabulary" not in record:
        missing = f"{baseline} (with a vocabulary)"
    elif not (source / "config.json").is_file():
        missing = f"its distilled student {source}"
    else:
        distilled = TextClassifier.from_pretrained(source).eval()
        keep, length = record["vocabulary"]["keep_first"], record["args"]["max_length"]
        small = prune_vocabulary(distilled, train_texts, keep_first=keep)
        built = intent_variants(small, "hand-built: distilled + vocab", workdir, ["ORT int8"], oos, length)
        if fallback == "nearest":
            nearest = prune_vocabulary(distilled, train_texts, keep_first=keep, remap="model", fallback="nearest")
            built.update(intent_variants(nearest, f"hand-built: distilled + vocab ({NEAREST})", workdir, ["ORT int8"],
                                         oos, length))
        return built
    raise SystemExit(f"the hand-built run {run!r} is not there: {missing}. Run benchmarks/clinc150.py --run {run} "
                     "on the same teacher, then this command again (the search's results are kept: it resumes)")


def teacher_weights(root: Path, run: str) -> Path:
    """The teacher file the CLINC150 search of run `run` names: its own, or, for a run that reused another's search
    (and wrote none), that run's."""
    path = root / run / "clinc_teacher.safetensors"
    record = _report.RESULTS / "optimize" / run / "rows.json"
    source = json.loads(record.read_text())["args"].get("reuse_search") if record.is_file() else None
    return path if path.is_file() or source is None else teacher_weights(root, source)


def reuse_searches(source: Path, work: Path) -> None:
    """Copy each search folder of `source` that `work` does not have yet: the study and what was measured once
    (original, scan), not the final rerun, its artifact or report, which the search writes again."""
    searches = [d for d in sorted(source.glob("*")) if (d / RUN_MARKER).is_file() and (d / "study").is_dir()]
    if not searches:
        raise SystemExit(f"--reuse-search: {source} holds no search (a folder with a study); name a run of this "
                         "script that has searched, e.g. one listed in benchmarks/results/optimize/")
    for folder in searches:
        target = work / folder.name
        if target.exists():
            continue  # copied by an earlier start of this run: it resumes
        stage = work / f".{folder.name}.copying"
        shutil.rmtree(stage, ignore_errors=True)
        shutil.copytree(folder / "study", stage / "study")
        for name in (RUN_MARKER, "baseline.json", "sensitivity.json"):
            if (folder / name).is_file():
                shutil.copy2(folder / name, stage / name)
        stage.rename(target)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    load = os.getloadavg()[0]
    settings = {k: v for k, v in vars(args).items() if k not in ("run",)}
    results = _report.Resumable(args, args.run, json.loads(json.dumps(settings, default=str)))
    # what the first invocation's searches used: a resume keeps their rows, so it keeps this too
    results.record.setdefault("channel_multiple", {p: channel_multiple(int8=p == "int8") for p in ("fp32", "int8")})
    work = default_cache_dir() / "optimize_bench" / args.run
    work.mkdir(parents=True, exist_ok=True)
    if args.reuse_search is not None:
        reuse_searches(default_cache_dir() / "optimize_bench" / args.reuse_search, work)
    if "cifar" in args.part:
        cifar(args, results, work)
    if "clinc" in args.part:
        clinc(args, results, work)
    for trials in sorted(work.glob("*/trials.json")):  # every search's trials (choices, rungs, fail reasons)
        write_json(_report.run_dir("optimize.py", args.run) / f"trials-{trials.parent.name}.json",
                   json.loads(trials.read_text(encoding="utf-8")))
    _report.finish(results.record, args.run, _report.machine(f"{args.threads} latency thread(s)", load))


def _wall_time(record: dict[str, Any]) -> str:
    """The run's wall time from its start and end stamps (from the first start to the last end over the invocations
    that kept no end of their own: resumed before `_report.finish` recorded one), then each later invocation's own."""
    if "finished" not in record:
        return ""

    def minutes(r: dict[str, Any]) -> float:
        return (datetime.fromisoformat(r["finished"]) - datetime.fromisoformat(r["started"])).total_seconds() / 60
    resumed = record.get("resumed", [])
    timed = [r for r in resumed if "finished" in r]
    untimed = len(resumed) - len(timed)
    return (f" Wall time {minutes(record):.1f} min"
            + (f", from the first start to the last end over {untimed + 1} invocations" if untimed else "")
            + "".join(f", then {minutes(r):.1f} min resumed" for r in timed) + ".")


def _multiples(record: dict[str, Any]) -> str:
    """What pruned layers kept: the run's --round-to, or what `channel_multiple` picked per precision (runs before
    it existed recorded neither and kept exact counts)."""
    if record["args"].get("round_to"):
        return f" Kept channels a multiple of {record['args']['round_to']}."
    picked = record.get("channel_multiple")
    return (f" Kept channels a multiple of {picked['fp32']} in fp32 and {picked['int8']} in int8 candidates "
            "(`channel_multiple` on this CPU)." if picked else "")


def _clinc_goal(final: dict[str, Any], name: str, hand: dict[str, Any], goal: bool = True) -> str:
    """Issue 14's CLINC150 goal: the search's final artifact beats the hand-built final row on latency or size at
    equal or better test accuracy ("oos" as a class); `goal` False: the same test against another hand-built row."""
    accuracy, speedup = hand["metrics"]["accuracy_oos_class"], hand.get("speedup") or 0.0
    faster, smaller = final["speedup_vs_torch"] > speedup, final["size_mb"] < hand["size_mb"]
    met = final["test_accuracy"] >= accuracy and (faster or smaller)
    verdict = ("met" if met else "NOT met") if goal else ("it does" if met else "it does NOT")
    return (f"{'Goal (beat' if goal else 'The same test against'} the hand-built `{name}`"
            f"{' on latency or size at equal or better test accuracy)' if goal else ''}: "
            f"**{verdict}**: test accuracy {_pct(final['test_accuracy'])} against {_pct(accuracy)} %, "
            f"{final['speedup_vs_torch']:.2f}x against {speedup:.2f}x faster than the teacher timed beside it, "
            f"{final['size_mb']:.2f} against {hand['size_mb']:.2f} MB.")


def _clinc_validation(val: dict[str, Any]) -> str:
    """The goal's accuracy condition on the validation split: the search's final artifact against the hand-built one,
    both read as the rows "in one run" read raw queries."""
    accuracy = val["accuracy"]
    gap = 100 * (accuracy["optimize"] - accuracy[_hand_built(accuracy)])
    return (f"On the whole validation split ({val['queries']:,} queries), the split the search chooses on, accuracy "
            "with \"oos\" as a class: " + ", ".join(f"{name} {_pct(a)} %" for name, a in accuracy.items())
            + (": the search's artifact is at least as accurate as the hand-built one there." if gap >= 0 else
               f": the search's artifact is {-gap:.2f} points ({round(-gap * val['queries'] / 100)} queries) below "
               "the hand-built one there."))


def _near_misses(name: str, row: dict[str, Any]) -> list[str]:
    """A search's near misses rerun with the final fine-tune (`--near-miss-margin`), in the order they ran."""
    near = row.get("near_misses")
    if not near:
        return []
    return ["", f"{name}: near misses rerun with the final fine-tune before the choice, best objective first (no "
            "benchmark but the result's): " + "; ".join(
                f"#{r['number']} {r['candidate']}: validation {_pct(r['val_accuracy_search'])} % in the search, "
                f"{_pct(r['val_accuracy'])} % after the final fine-tune "
                f"({'meets the floor: chosen' if r['meets_budget'] else 'under the floor'}, {r['seconds'] / 60:.0f} min)"
                for r in near) + "."]


def _hand_built(accuracy: dict[str, float]) -> str:
    """The key of the hand-built artifact among a validation row's accuracies."""
    return next(name for name in accuracy if name.startswith("hand-built"))


def _hand_built_budget(floor: dict[str, Any] | None) -> str:
    """The CLINC150 search's budget under `--clinc-match-hand-built`, from the validation accuracies it came from."""
    if floor is None:
        return ""
    accuracy = floor["accuracy"]
    hand = _hand_built(accuracy)
    return (" The CLINC150 search's floor is the hand-built artifact's validation accuracy "
            f"(`--clinc-match-hand-built`; {floor['queries']:,} queries, raw, \"oos\" as a class): teacher "
            f"{_pct(accuracy['teacher'])} %, {hand} "
            f"{_pct(accuracy[hand])} %, so its budget is {floor['max_drop']:.2f} point(s) below the teacher, in place "
            "of --max-drop.")


def _intent_cells(label: str, row: dict[str, Any], speedup: float) -> list[str]:
    """A CLINC150 table row of a `measure_intents` row: test accuracy with "oos" as a class, size, speed-up."""
    return [label, _pct(row["metrics"].get("accuracy_oos_class")), f"{row['size_mb']:.2f}", f"{speedup:.2f}x"]


def _read_final(final: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The search's final row with the accuracy, speed-up and size of a `measure_intents` row of its artifact."""
    return {**final, "test_accuracy": row["metrics"]["accuracy_oos_class"], "speedup_vs_torch": row["speedup"],
            "size_mb": row["size_mb"]}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def render(record: dict[str, Any]) -> str:
    """The tables of one run: per search its choice and final artifact; the interleaved test comparison; CLINC."""
    args, rows = record["args"], record["rows"]
    data = {"cifar": f"CIFAR-10 {args['train_samples']:,} training / {args['val_samples']:,} validation images",
            "clinc": "CLINC150 every training / validation query"}
    # --max-drop is the CLINC150 search's budget unless the hand-built artifact's accuracy set it
    own_budget = "cifar" in args["part"] or "clinc|hand_built_floor" not in rows
    out = [_report.heading(record, _wall_time(record)), "",
           (f"Budget {args['max_drop']} point(s) on the validation split; " if own_budget else "")
           + f"{'; '.join(data[part] for part in args['part'])}; {args['trials']} trials per search, "
           f"{args['search_epochs']} search / {args['final_epochs']} final fine-tuning epoch(s); latency at batch 1, "
           f"{args['threads']} thread(s)."
           + (f" The CLINC150 search minimises {args['clinc_objective']}." if args.get("clinc_objective") else "")
           + (" Its fine-tunes follow the hand-built runs' schedule (warm-up, then cosine decay over each)."
              if args.get("clinc_schedule") == "warmup_cosine" else "")
           + (f" Its vocabulary cuts keep the tokenizer, a dropped token reading the kept row nearest its own in the "
              f"original embedding (`--clinc-vocab-fallback nearest`); the hand-built pipeline re-splits such a word "
              f"into kept WordPiece pieces, and the rows \"({NEAREST})\" give its distilled student the search's cut."
              if args.get("clinc_vocab_fallback") == "nearest" else "")
           + (f" Its KD fine-tunes also read {args['clinc_kd_augment']} edited, unlabelled variant(s) of each training "
              "query, as the hand-built distillation does (`--clinc-kd-augment`)." if args.get("clinc_kd_augment") else "")
           + _hand_built_budget(rows.get("clinc|hand_built_floor"))
           + (f" The searches start from the finished trials of run `{args['reuse_search']}` (`--reuse-search`), not "
              "trained again: this run's wall time is what it added (new trials, the final rerun, the measurements)."
              if args.get("reuse_search") else "")
           + (f" Each search's time budget (scan, trials, final rerun): {args['time_budget'] / 60:g} min."
              if args.get("time_budget") else "")
           + _multiples(record)]
    body, searched = [], {}
    for name in SEARCHES:
        row = rows.get(f"cifar|{name}")
        if row is None:
            continue
        searched[name] = row
        chosen = row["chosen"] or {}
        body.append([name, chosen.get("candidate", "-"), "yes" if row["met"] else f"no: {row['gap']}",
                     _pct(chosen.get("val_accuracy")), _pct(row["final"].get("val_accuracy")),
                     f"{row['seconds'] / 60:.0f}", ", ".join(f"{v} {k}" for k, v in sorted(row["states"].items()))])
    if body:
        out += ["", _report.table(["search", "chosen pipeline", "within budget", "val acc % (search)",
                                   "val acc % (final)", "minutes", "trials"], body)]
    budget = args.get("time_budget")
    if body and budget:
        out += ["", "Time budget: " + "; ".join(
            f"{name} {row['seconds'] / 60:.1f} of {budget / 60:g} min "
            f"({'within' if row['seconds'] <= budget else 'OVER'})"
            for name, row in searched.items()) + "."]
    for name, row in searched.items():
        out += _near_misses(name, row)
    out += [f"{name}'s final rerun on {row['final']['threads']} thread(s), seconds per step: " + ", ".join(
        f"{step['type']} {step['seconds']:.0f}" for step in row["final"]["steps"]) + "."
            for name, row in searched.items() if row["final"].get("steps")]
    compare = rows.get("cifar|compare")
    if compare is not None:
        measured = compare["rows"]
        base = measured[0]
        table = [[r["name"], _pct(r["accuracy"]), f"{r['latency_ms_p50']:.3f}",
                  f"{base['latency_ms_p50'] / r['latency_ms_p50']:.2f}x", f"{r['size_mb']:.3f}",
                  "yes" if r["timing_warning"] else ""] for r in measured]
        out += ["", f"ResNet-{args['depth']}, whole test split, median of {args['repeats']} interleaved rounds:", "",
                _report.table(["artifact", "test acc %", "latency ms p50", "speed-up vs fp32 torch", "size MB",
                               "timing flagged"], table)]
    granularity = rows.get("cifar|granularity", {})
    if granularity.get("rows"):
        measured = granularity["rows"]
        table = [[r["name"], _pct(r["accuracy"]), f"{r['latency_ms_p50']:.3f}", f"{r['speedup']:.2f}x",
                  f"{r['macs'] / 1e6:.1f}M", "yes" if r["timing_warning"] else ""] for r in measured]
        out += ["", "The combined artifact taken apart: its pruned model and the original, each int8 with per-channel "
                f"and per-tensor scales (static, minmax), whole test split, median of {args['repeats']} interleaved "
                "rounds; speed-up = median of the per-round ratios to the first row:", "",
                _report.table(["int8 artifact", "test acc %", "latency ms p50", "speed-up", "MACs", "timing flagged"],
                              table)]
    clinc_row = rows.get("clinc|combined")
    if clinc_row is not None:
        final, chosen = clinc_row["final"], clinc_row["chosen"] or {}
        baseline = _report.RESULTS / "clinc150" / args["clinc_baseline"] / "rows.json"
        hand = {r["name"]: r for r in json.loads(baseline.read_text())["rows"]} if baseline.is_file() else {}
        # the median of per-round ratios where that run was timed in interleaved rounds
        table = [_intent_cells(f"hand-built: {name}", r,
                               r.get("speedup") or hand["teacher"]["latency_ms_p50"] / r["latency_ms_p50"])
                 for name, r in hand.items()]
        if final:
            table.append([f"optimize: {chosen.get('candidate', '-')}", _pct(final["test_accuracy"]),
                          f"{final['size_mb']:.2f}", f"{final['speedup_vs_torch']:.2f}x"])
        book = rows.get("clinc|book_protocol", {}).get("rows")
        if book:
            table.append(_intent_cells(f"optimize, by the hand-built runs' protocol: {chosen.get('candidate', '-')}",
                                       book[-1], book[-1]["speedup"]))
            final = _read_final(final, book[-1])
        side = {row["name"]: row for row in rows.get("clinc|side_by_side", {}).get("rows") or []}
        table += [_intent_cells(f"in one run: {name}", row, row["speedup"]) for name, row in side.items()]
        side_hand = {name.removeprefix("hand-built: "): row for name, row in side.items()
                     if name.startswith("hand-built")}
        goals = list(hand.items())[-1:]  # the hand-built run's final artifact
        if "optimize" in side and side_hand:  # the goal reads the run that timed both artifacts beside the teacher
            final, goals = _read_final(final, side["optimize"]), list(side_hand.items())
        out += ["", "CLINC150 (plus), test split, accuracy with \"oos\" as a plain class; speed-up against each run's "
                "own fp32 torch teacher:", "", _report.table(["pipeline", "test acc %", "size MB", "speed-up"], table)]
        if book:
            out += ["", "The search's own benchmark times the token tensors of the first test query; the hand-built "
                    "runs time the book's query, tokenising included. The row \"by the hand-built runs' protocol\" "
                    f"measures the search's final artifact their way: the teacher and it in {args['repeats']} "
                    "interleaved rounds on the book's query, speed-up the median of the per-round ratios"
                    + ("." if side else "; the goal below reads that row.")]
        if side:
            out += ["", f"The rows \"in one run\" rebuild the hand-built final artifact from the distilled student "
                    f"that run `{args['clinc_baseline']}` cached (its vocabulary, ONNX Runtime dynamic int8) and time it "
                    f"beside the teacher and the search's final artifact in {args['repeats']} interleaved rounds on the "
                    "book's query, tokenising included; speed-up the median of the per-round ratios; the goal below reads "
                    "those rows."]
        if final and goals:
            for i, (name, row) in enumerate(goals):
                out += ["", _clinc_goal(final, name, row, goal=i == 0)]
        val = rows.get("clinc|validation")
        if val:
            out += ["", _clinc_validation(val)]
        out += _near_misses("CLINC150", clinc_row)
        if not clinc_row["met"]:
            out += ["", f"No CLINC150 candidate met the budget: {clinc_row['gap']}"]
        elif final:
            out += ["", f"Search: {', '.join(f'{v} {k}' for k, v in sorted(clinc_row['states'].items()))} trial(s) in "
                    f"{clinc_row['seconds'] / 60:.0f} min (scan and final rerun included); chosen at validation "
                    f"accuracy {_pct(chosen.get('val_accuracy'))} %, its final rerun "
                    f"{_pct(final['val_accuracy'])} % against the floor {_pct(clinc_row['floor'])} %: "
                    f"{'within' if final['meets_budget_on_val'] else 'NOT within'} the budget."]
    if "finished" not in record:
        out += ["", "**Run not finished** when this table was rendered."]
    return "\n".join(out)


if __name__ == "__main__":
    main()
