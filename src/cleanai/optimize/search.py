"""`optimize(model, data, OptimizeConfig(...))`: the fastest (or smallest) artifact that keeps the accuracy.

1. The original model is measured once (validation accuracy, batch-1 latency in torch and ONNX Runtime) and
   its layers scanned for sensitivity (`cleanai.pruning.sensitivity_scan`); both are kept in the out folder.
2. A multi-objective `tune()` study (validation accuracy up, artifact latency down, artifact size down)
   samples candidate pipelines (`cleanai.optimize.candidate`). Each trial prunes with fine-tuning, is granted
   more fine-tuning epochs by successive halving (`halving.py`: poor candidates stop early), folds BatchNorm,
   and is exported or quantized (calibration and fp32 fallbacks from the accuracy-budget search); the
   artifact's accuracy, batch-1 latency (the user's threads; timed in turns with the original model and kept
   as the ratio times the original's latency, so a busy spell of a shared machine does not favour one trial)
   and size are what the study sees. A model ONNX cannot export is measured as its torch artifact, and the
   trial names the operator.
3. Among the trials within budget, the objective chooses; with `near_miss_margin`, the trials that missed the floor
   by at most that much and beat the choice are first rerun with the final fine-tune, best first, and the first
   that then meets the floor on validation is the choice. The choice is written as a recipe YAML and rerun by
   the recipe runner with the final, longer fine-tune; its benchmark on the (whole) test
   split and the report (the recipe report, with the search's sections in front) close the run. When no
   trial meets the budget, the best candidates and the gap are the result, and the recipe of the most
   accurate one is written for a longer rerun.

Choices use the validation split only; the test split is scored by the reruns' recipe steps (as every recipe step
scores it) and the result's benchmark, and no choice reads those scores.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState
from torch import nn

from cleanai.benchmark import BenchmarkConfig, PerformanceBenchmark, load_rows
from cleanai.data import default_cache_dir, texts_of
from cleanai.distillation import distill, prune_vocabulary
from cleanai.errors import CleanAIError, ConfigError
from cleanai.export import ExportError
from cleanai.fusion import fuse_conv_bn
from cleanai.io import RUN_MARKER, atomic_dir, atomic_open, check_destination, write_json
from cleanai.models import TextClassifier
from cleanai.optimize.budget import TimeBudget, TrainingClock
from cleanai.optimize.candidate import Candidate, Encoder, search_space, starting_points
from cleanai.optimize.config import OptimizeConfig, OptimizeError
from cleanai.optimize.halving import SuccessiveHalving, rungs
from cleanai.pruning import SensitivityResult, load_pruned, prune_and_finetune, save_pruned, sensitivity_scan
from cleanai.quantization import quantize, quantize_with_accuracy_budget
from cleanai.recipes import DataSpec, ModelSpec, Recipe, ReportOptions, load_recipe, read_status, run_recipe
from cleanai.recipes.runner import RecipeRun
from cleanai.runtime import OrtRunner, Runner, TorchRunner, artifact_bytes, count_macs, evaluate
from cleanai.training import Trainer, seed_everything
from cleanai.tuning import TuneConfig, TuneResult, TuneTrial, tune

log = logging.getLogger("cleanai.optimize")
METRICS = ("val_accuracy", "latency_ms", "size_mb")
DIRECTIONS = ["maximize", "minimize", "minimize"]
_MARKER_TEXT = "Written by CleanAI (cleanai optimize): a search's folder; a rerun resumes it.\n"
_MODEL_STEPS = ("keep_layers", "prune", "finetune", "distill", "vocabulary")  # steps that write a torch model


@dataclass
class OptimizeResult:
    """The search's outcome: every trial, the Pareto front, the choice and (when the budget is met) the artifact.

    `trials` / `front` are rows (dicts: number, state, candidate, val_accuracy, latency_ms, size_mb, ...);
    `chosen` is the chosen row (None without a finished trial); `met` says whether it meets the budget, else
    `gap` says by how much the closest candidate misses it. `artifact` maps "onnx" / "torch" to the saved
    files of the final pipeline, `final` holds its validation accuracy and test-split rows; `near_misses` the
    candidates rerun with the final fine-tune before the choice (`near_miss_margin`), in the order they ran.
    """

    out: Path
    config: OptimizeConfig
    baseline: dict[str, Any]
    floor: float
    trials: list[dict[str, Any]]
    front: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    met: bool
    gap: str | None = None
    recipe: Path | None = None
    artifact: dict[str, Path] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    report: list[Path] = field(default_factory=list)
    near_misses: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """Plain text: the budget, the front, the choice or the gap, and where the files are."""
        base = self.baseline
        lines = [f"original: val accuracy {base['val_accuracy']:.4f}, batch-1 latency "
                 f"{base['latency_ms_torch']:.3f} ms "
                 f"(torch fp32, {self.config.threads} thread(s)); budget: val accuracy >= {self.floor:.4f} "
                 f"(drop <= {self.config.max_accuracy_drop:g} point(s))",
                 f"{sum(r['state'] == 'complete' for r in self.trials)} of {len(self.trials)} trial(s) complete; "
                 f"Pareto front ({len(self.front)}):"]
        lines += [f"  #{r['number']:<3} acc {r['val_accuracy']:.4f}  {r['latency_ms']:.3f} ms  {r['size_mb']:.3f} MB"
                  f"  {r['candidate']}" for r in self.front]
        lines += [f"near miss #{r['number']} rerun with the final fine-tune: val accuracy {r['val_accuracy_search']:.4f} "
                  f"-> {r['val_accuracy']:.4f} ({'meets' if r['meets_budget'] else 'misses'} the budget)"
                  for r in self.near_misses]
        if self.chosen is not None and self.met:
            lines.append(f"chosen ({self.config.objective}): #{self.chosen['number']} {self.chosen['candidate']}")
        else:
            lines.append(f"no candidate meets the budget: {self.gap}")
        final = self.final
        if final:
            lines.append(f"final artifact ({final['backend']}): val accuracy {final['val_accuracy']:.4f}, test accuracy "
                         f"{final['test_accuracy']:.4f} (original {final['test_accuracy_original']:.4f}), latency "
                         f"{final['latency_ms']:.3f} ms = {final['speedup_vs_torch']:.2f}x faster than torch fp32, "
                         f"{final['size_mb']:.3f} MB")
        if self.recipe is not None:
            lines.append(f"recipe: {self.recipe}" + ("" if self.met else
                                                     " (the most accurate candidate, for a longer rerun)"))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(mode="json"), "baseline": self.baseline, "floor": self.floor,
                "met": self.met, "gap": self.gap, "chosen": self.chosen, "front": self.front, "trials": self.trials,
                "recipe": None if self.recipe is None else str(self.recipe),
                "artifact": {k: str(v) for k, v in self.artifact.items()}, "final": self.final,
                "near_misses": self.near_misses}


def optimize(model: ModelSpec | Mapping[str, Any] | str, data: DataSpec | Mapping[str, Any] | str = "digits",
             config: OptimizeConfig | Mapping[str, Any] | None = None) -> OptimizeResult:
    """Search prune x distill x fold x quantize pipelines for `model` on `data` within the accuracy budget;
    write everything into `config.out` (resumed when it holds an earlier search of the same settings).

    `model` is what a recipe names: a registered model name or a `ModelSpec` / mapping (name, kwargs,
    weights: a checkpoint file or a tag such as 'akamaster'); `data` a dataset name or a `DataSpec` / mapping.
    """
    config = config if isinstance(config, OptimizeConfig) else OptimizeConfig.model_validate(config or {})
    spec = ModelSpec(name=model) if isinstance(model, str) else ModelSpec.model_validate(
        model.model_dump() if isinstance(model, ModelSpec) else model)
    if spec.weights is not None and Path(spec.weights).is_file():
        spec = spec.model_copy(update={"weights": str(Path(spec.weights).resolve())})  # the recipe reruns anywhere
    data_spec = DataSpec(name=data) if isinstance(data, str) else DataSpec.model_validate(
        data.model_dump() if isinstance(data, DataSpec) else data)
    out = check_destination(config.out, option="out")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / RUN_MARKER).is_file():
        (out / RUN_MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
    longest = config.max_steps * config.finetune.epochs  # the pruning steps' fine-tuning, before the rest
    budget = None if config.time_budget is None else TimeBudget(
        config.time_budget, longest + config.search_epochs, longest + config.final_epochs)
    search = _Search(config, spec, data_spec, out)
    if budget is not None:
        budget.final_extra = search.final_benchmark_estimate()
    study = tune(search.trial, search_space(config, search.encoder), TuneConfig(
        sampler=config.sampler, n_trials=config.n_trials, directions=DIRECTIONS,
        timeout=min((t for t in (config.timeout, config.time_budget) if t is not None), default=None),
        seed=config.seed, run_dir=out / "study", storage=config.storage, study_name=config.study_name,
        keep_models=0, first_trials=starting_points(config, search.encoder), progress=config.progress),
        may_start=None if budget is None else budget.may_start)
    if budget is not None and not study.trials:
        raise OptimizeError(f"no trial could start within the {budget.describe(study.trials)} (measuring the "
                            f"original and the sensitivity scan): give a larger time_budget; a rerun reuses the "
                            f"measurements kept in {str(out)!r}")
    result = search.result(study)
    return search.finish(result, None if budget is None else functools.partial(budget.may_rerun, study.trials))


class _Search:
    """The search's shared state: data, the original model's measurements, the sensitivity scan, the trials."""

    def __init__(self, config: OptimizeConfig, model: ModelSpec, data: DataSpec, out: Path) -> None:
        self.config, self.out = config, out
        self.model_spec, self.data_spec = model, data
        self.run = RecipeRun(Recipe(path=out / "recipe.yaml", name=f"optimize_{model.name}", seed=config.seed,
                                    threads=config.threads, model=model, data=data, steps=(), variants={},
                                    report=ReportOptions(), raw={}), out / "final", progress=False)
        self.splits, self.loaders = self.run.splits, self.run.loaders
        self.source = self.run.source_model.eval()
        self.example = self.run.example
        self.encoder = self._encoder()
        self.key = _fingerprint(model, data, config)
        self._reference_bench: PerformanceBenchmark | None = None  # the original, timed beside every trial
        self._source_macs: int | None = None  # the original's MACs on the example, counted on first use
        self._train_texts: list[str] | None = None
        self.baseline = self._cached("baseline.json", self._measure_baseline)
        self.floor = self.baseline["val_accuracy"] - config.accuracy_budget
        scan_key = self._scan_key()  # the scan is shared with every search of the same model, data and scan settings
        scan = self._cached("sensitivity.json", self._scan, key=scan_key,
                            shared=default_cache_dir() / "optimize" / f"sensitivity-{scan_key}.json")
        self.scan = None if scan.get("result") is None else SensitivityResult.model_validate(scan["result"])
        self.halving = SuccessiveHalving(config.eta, self.floor)

    def _encoder(self) -> Encoder | None:
        """The text model's encoder blocks, which `depths` cut; None for other models (which `depths` and
        `vocab_keep_first` are refused for)."""
        if not isinstance(self.source, TextClassifier):
            for name, what in (("depths", "keep encoder layers"), ("vocab_keep_first", "prune the vocabulary"),
                               ("kd_augment", "add edited variants of the training texts")):
                if getattr(self.config, name):
                    raise ConfigError(f"{name} {getattr(self.config, name)} {what} of a text model (TextClassifier); "
                                      f"{self.model_spec.name} is a {type(self.source).__name__}: leave {name} unset")
            return None
        path, blocks = self.source.encoder_layers()
        deeper = [d for d in self.config.depths if d > len(blocks)]
        if deeper:
            raise ConfigError(f"depths {deeper} exceed the {len(blocks)} encoder layers of {self.model_spec.name}; "
                              f"choose depths from 1 to {len(blocks)}")
        return Encoder(path, len(blocks))

    # ------------------------------------------------------------------ measured once, kept in the out folder

    def _cached(self, name: str, compute: Any, key: str | None = None, shared: Path | None = None) -> dict[str, Any]:
        """`name` in the out folder, measured once under `key` (default: the search's); `shared`: a copy other
        searches of the same inputs read instead of measuring again."""
        key = key or self.key
        path = self.out / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") != key:
                raise ConfigError(f"out {str(self.out)!r} holds a search of another model, data or settings ({name} "
                                  "differs); choose a new out folder, or rerun with the settings it was made with")
            return data
        data = json.loads(shared.read_text(encoding="utf-8")) if shared is not None and shared.is_file() else {}
        if data.get("key") != key:
            data = {"key": key, **compute()}
            if shared is not None:
                write_json(shared, data)
        else:
            log.info("%s: reusing %s (the same model, data and settings)", name, shared)
        write_json(path, data)
        return data

    def _scan_key(self) -> str:
        """What the sensitivity scan depends on: the model and its weights' content, the data, the seed and the
        scan's own settings (not the budget, the quantization choices or the trial count)."""
        cfg = self.config
        settings = {"context": self.run.context_hash, "ratios": cfg.sensitivity_ratios,
                    "batches": cfg.sensitivity_batches, "prune": cfg.prune.model_dump(mode="json"),
                    "scan": bool(cfg.max_ratio and cfg.max_scale)}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def _original(self, onnx: bool) -> Runner:
        """The original model as the baseline measures it: exported to fp32 ONNX, or in torch."""
        if onnx:
            return OrtRunner.from_model(self.source, self.example, name="original (onnx fp32)",
                                        dynamic_sequence=self.splits.task == "text")
        return TorchRunner(self.source, name="original (torch fp32)")

    def final_benchmark_estimate(self) -> float:
        """Seconds the final rerun's benchmark is expected to take: measuring the original on the validation
        split, scaled to the test split it measures the original and the artifact on (0 when not recorded)."""
        return self.baseline.get("seconds", 0.0) * len(self.splits.test) / max(len(self.splits.val), 1)

    def _measure_baseline(self) -> dict[str, Any]:
        start = time.perf_counter()
        torch_runner = self._original(onnx=False)
        row = {"val_accuracy": self._accuracy(torch_runner), "latency_ms_torch": self._time(self._bench(torch_runner)),
               "size_mb_torch": artifact_bytes(torch_runner) / 1e6}
        try:
            onnx = self._original(onnx=True)
            self._reference_bench = self._bench(onnx)
            row.update(latency_ms_onnx=self._time(self._reference_bench), size_mb_onnx=artifact_bytes(onnx) / 1e6)
        except ExportError as exc:
            row.update(latency_ms_onnx=None, size_mb_onnx=None, onnx_error=_export_problem(exc))
        row["seconds"] = time.perf_counter() - start
        return row

    def _scan(self) -> dict[str, Any]:
        cfg = self.config
        if cfg.max_ratio == 0 or cfg.max_scale == 0:
            return {"result": None, "reason": "no per-layer ratios asked (max_ratio or max_scale is 0)"}
        try:
            scan = sensitivity_scan(self.source, self.example, self.loaders.val, cfg.sensitivity_ratios, "magnitude",
                                    max_batches=cfg.sensitivity_batches, calib=self.loaders.train, config=cfg.prune,
                                    progress=cfg.progress)
        except CleanAIError as exc:  # nothing to scan: the scale parameter then has no effect
            log.warning("sensitivity scan not possible, every layer gets the overall ratio: %s", exc)
            return {"result": None, "reason": str(exc)}
        return {"result": scan.to_dict()}

    # ------------------------------------------------------------------ one trial

    def trial(self, trial: TuneTrial) -> tuple[float, float, float]:
        """Build, fine-tune (with successive halving), export or quantize and measure one candidate."""
        cfg = self.config
        candidate = Candidate.from_params(trial.params)
        trial.set("candidate", candidate.describe(self.encoder))
        seed_everything(cfg.seed + trial.number)
        model = copy.deepcopy(self.source)
        accuracy = self.baseline["val_accuracy"]
        teacher = self.source if candidate.kd else None
        layers = candidate.cut(self.encoder)
        clock = TrainingClock()  # what the trial spends training, which a time budget reads back
        if layers is not None:
            model.cut_layers(layers)
        if candidate.prunes:
            with clock.training(candidate.steps * cfg.finetune.epochs):
                model, report, history = prune_and_finetune(
                    model, self.example, candidate.prune_config(cfg, self.scan, self.encoder),
                    self._train_loader(candidate), self.loaders.val,
                    candidate.finetune_config(cfg).model_copy(update={"progress": False}), calib=self.loaders.train,
                    teacher=teacher, distill_config=candidate.distill_config(cfg))
            accuracy = history.final["accuracy"]
        elif layers is not None:  # a shallower model: its first fine-tune, as a pruned one gets after pruning
            with clock.training(cfg.finetune.epochs):
                self._finetune(model, teacher, candidate, cfg.finetune.epochs)
            accuracy = self._accuracy(TorchRunner(model))
        if candidate.prunes or layers is not None:
            trial.set("macs_ratio", self._macs_ratio(model))
            done = 0
            for rung, epochs in enumerate(rungs(cfg.search_epochs, cfg.eta)):
                self.halving.check(trial, rung, accuracy)  # raises optuna.TrialPruned for a poor candidate
                with clock.training(epochs - done):
                    self._finetune(model, teacher, candidate, epochs - done)
                done, accuracy = epochs, self._accuracy(TorchRunner(model))
            trial.set("epochs", done)
        clock.record(trial)
        if candidate.vocab is not None:  # after training: what the artifact's embedding keeps
            model = prune_vocabulary(model, self.train_texts(), keep_first=candidate.vocab, remap="model",
                                     fallback=cfg.vocab_fallback)
            accuracy = self._accuracy(TorchRunner(model))
        trial.set("val_accuracy_torch", accuracy)
        model.eval()
        if candidate.fold_bn:
            model = fuse_conv_bn(model, example_inputs=self.example)
        runner, details = self._artifact(model, candidate, accuracy)
        for key, value in details.items():
            trial.set(key, value)
        values = (self._accuracy(runner), self.latency(runner), artifact_bytes(runner) / 1e6)
        for name, value in zip(METRICS, values):
            trial.set(name, value)
        return values

    def train_texts(self) -> list[str]:
        """The training split's texts (what vocabulary pruning keeps the tokens of), read on first use."""
        if self._train_texts is None:
            self._train_texts = texts_of(self.splits.train)
        return self._train_texts

    def _macs_ratio(self, model: nn.Module) -> float | None:
        """`model`'s MACs on the example input over the original model's (None when they cannot be counted)."""
        if self._source_macs is None:
            self._source_macs = count_macs(self.source, self.example) or 0
        macs = count_macs(model, self.example)
        return None if not macs or not self._source_macs else macs / self._source_macs

    def _finetune(self, model: nn.Module, teacher: nn.Module | None, candidate: Candidate, epochs: int) -> None:
        train = candidate.finetune_config(self.config).model_copy(update={"epochs": epochs, "progress": False})
        if teacher is None:
            Trainer(model, config=train).fit(self.loaders.train)
        else:
            kd = candidate.distill_config(self.config).model_copy(update={"train": train, "inplace": True})
            distill(model, teacher, self._train_loader(candidate), None, kd)

    def _train_loader(self, candidate: Candidate) -> Any:
        """What `candidate`'s fine-tunes read: with KD and `kd_augment`, the transfer set of the recipe rerun's."""
        return self.run.train_loader(self.config.kd_augment if candidate.kd and self.config.kd_augment else None)

    def _artifact(self, model: nn.Module, candidate: Candidate, accuracy: float) -> tuple[Runner, dict[str, Any]]:
        """The deployable artifact: fp32 ONNX, or int8 ONNX within what is left of the budget (fp32 fallbacks by
        the accuracy-budget search); the torch model when ONNX cannot export it (the operator is named)."""
        cfg, text = self.config, self.splits.task == "text"
        quant = candidate.quant_config(cfg)
        try:
            if quant is None:
                return OrtRunner.from_model(model, self.example, name="candidate", dynamic_sequence=text), \
                    {"backend": "onnxruntime", "fp32_layers": []}
            room = accuracy - self.floor
            if room >= 0:
                found = quantize_with_accuracy_budget(
                    model, quant, self.loaders.train, self.loaders.val, room, example_inputs=self.example,
                    calibrations=[quant.calibration or "minmax"], granularities=[quant.per_channel],
                    max_fp32_layers=cfg.max_fp32_layers)
                if found.runner is not None and found.chosen is not None:
                    return found.runner, {"backend": "onnxruntime", "fp32_layers": found.chosen.fp32_layers}
                quant = found.best.config if found.best is not None else quant  # the closest to the budget
            runner = quantize(model, quant, calib=self.loaders.train, example_inputs=self.example, name="candidate")
            return runner, {"backend": "onnxruntime", "fp32_layers": list(quant.nodes_to_exclude)}
        except ExportError as exc:
            problem = _export_problem(exc)
            log.warning("trial artifact falls back to torch: %s", problem)
            return TorchRunner(model, name="candidate (torch)"), {"backend": "torch", "fallback": problem,
                                                                   "fp32_layers": []}

    def _accuracy(self, runner: Runner) -> float:
        return float(evaluate(runner, self.loaders.val, ("accuracy",)).metrics["accuracy"])

    def latency(self, runner: Runner) -> float:
        """Batch-1 latency (ms) of a trial's `runner` on the user's threads: the median of its ratios to the
        original model timed beside it in `latency_rounds` interleaved rounds, times the original's latency, so
        trials measured minutes apart under another load of a shared machine stay comparable."""
        reference, base_ms = self._reference()
        candidate = self._bench(runner)
        ratios = []
        for round_ in range(self.config.latency_rounds):
            order = (reference, candidate) if round_ % 2 == 0 else (candidate, reference)
            times = {bench: self._time(bench) for bench in order}
            ratios.append(times[candidate] / times[reference])
        return statistics.median(ratios) * base_ms

    def _reference(self) -> tuple[PerformanceBenchmark, float]:
        """The timing of the original model as the baseline measured it (fp32 ONNX, or torch when ONNX cannot
        export it), built on first use and kept, and its baseline latency (ms)."""
        onnx = self.baseline.get("latency_ms_onnx") is not None
        if self._reference_bench is None:
            self._reference_bench = self._bench(self._original(onnx))
        return self._reference_bench, self.baseline["latency_ms_onnx" if onnx else "latency_ms_torch"]

    def _bench(self, runner: Runner) -> PerformanceBenchmark:
        """Batch-1 timing of `runner` on the user's threads, with the final benchmark's warm-up; it reads its
        input batch once and reuses it on every timing."""
        config = BenchmarkConfig(batch_size=1, runs=self.config.latency_runs, throughput_runs=0,
                                 threads=self.config.threads, progress=False)
        return PerformanceBenchmark(runner, self.loaders.val, config=config)

    def _time(self, bench: PerformanceBenchmark) -> float:
        """Median batch-1 latency (ms) of one timing of `bench`."""
        return float(bench.time()["latency_ms_p50"])

    # ------------------------------------------------------------------ choice, final run, files

    def result(self, study: TuneResult) -> OptimizeResult:
        """Every trial as a row, the Pareto front, and the choice (or the gap when nothing meets the budget)."""
        trials = study.trials
        # a starting point still queued when the trial count was reached never ran: it is not a trial
        rows = [_row(t, study.fail_reason(t, trials)) for t in trials if t.state != TrialState.WAITING]
        complete = [r for r in rows if r["state"] == "complete"]
        if not complete:
            study.completed()  # raises TuningError naming why no trial completed
        front_numbers = {t.number for t in study.best_trials}
        front = sorted((r for r in complete if r["number"] in front_numbers), key=lambda r: -r["val_accuracy"])
        for r in rows:
            r["pareto"] = r["number"] in front_numbers
            r["meets_budget"] = r["state"] == "complete" and self._meets(r)
        within = [r for r in complete if r["meets_budget"]]
        if within:
            chosen = min(within, key=self._objective)
            return OptimizeResult(self.out, self.config, self.baseline, self.floor, rows, front, chosen, True)
        closest = max(complete, key=lambda r: (r["val_accuracy"], -r["latency_ms"]))
        return OptimizeResult(self.out, self.config, self.baseline, self.floor, rows, front, closest, False,
                              gap=self._gap(closest))

    def _meets(self, row: dict[str, Any], floor: float | None = None) -> bool:
        """Whether `row` meets the budget: the accuracy floor (`floor`, default the budget's) and the targets."""
        cfg = self.config
        return (row["val_accuracy"] >= (self.floor if floor is None else floor) - 1e-12
                and (cfg.target_latency_ms is None or row["latency_ms"] <= cfg.target_latency_ms)
                and (cfg.target_size_mb is None or row["size_mb"] <= cfg.target_size_mb))

    def _objective(self, row: dict[str, Any]) -> tuple[float, ...]:
        objective = self.config.objective
        if objective == "latency":
            return row["latency_ms"], row["size_mb"]
        if objective == "size":
            return row["size_mb"], row["latency_ms"]
        base = self.baseline
        latency = base["latency_ms_onnx"] or base["latency_ms_torch"]
        size = base["size_mb_onnx"] or base["size_mb_torch"]
        return (row["latency_ms"] / latency) * (row["size_mb"] / size), row["latency_ms"]

    def _gap(self, row: dict[str, Any]) -> str:
        cfg = self.config
        parts = []
        if row["val_accuracy"] < self.floor:
            parts.append(f"the most accurate candidate (#{row['number']}: {row['candidate']}) reaches val accuracy "
                         f"{row['val_accuracy']:.4f}, {100 * (self.floor - row['val_accuracy']):.2f} point(s) below "
                         f"the floor {self.floor:.4f}")
        if cfg.target_latency_ms is not None and row["latency_ms"] > cfg.target_latency_ms:
            parts.append(f"its latency {row['latency_ms']:.3f} ms exceeds target_latency_ms {cfg.target_latency_ms:g}")
        if cfg.target_size_mb is not None and row["size_mb"] > cfg.target_size_mb:
            parts.append(f"its size {row['size_mb']:.3f} MB exceeds target_size_mb {cfg.target_size_mb:g}")
        return "; ".join(parts) + ("; try a larger budget, more trials or more fine-tuning (search_epochs, "
                                   "final_epochs)")

    def finish(self, result: OptimizeResult, may_rerun: Callable[[int], bool] | None = None) -> OptimizeResult:
        """Rerun the near misses (`near_miss_margin`), then write the trials, the front plot and the recipe; rerun
        the choice with its final fine-tune when it meets the budget; save the artifact; write result.json and the
        report. `may_rerun(n)`: whether n more final reruns fit in the time budget (None: no time budget)."""
        from cleanai.optimize.report import front_png, write_report

        self._rerun_near_misses(result, may_rerun)
        write_json(self.out / "trials.json", result.trials)
        with atomic_open(self.out / "pareto_front.png", "wb") as fh:
            fh.write(front_png(result))
        if result.chosen is not None:
            result.recipe = self._write_recipe(result.chosen, self.out / "recipe.yaml", self._why(result))
        if result.met and result.recipe is not None:
            recipe = load_recipe(result.recipe)
            folder = run_recipe(recipe, self.out / "final", progress=self.config.progress)
            result.artifact = self._save_artifact(folder)
            result.final = self._final(folder, result.artifact)
        write_json(self.out / "result.json", result.to_dict())
        result.report = write_report(result)
        return result

    def _rerun_near_misses(self, result: OptimizeResult, may_rerun: Callable[[int], bool] | None) -> None:
        """Successive halving's last rung: a short fine-tune can turn away a candidate that longer training would
        keep, so the candidates that missed the floor by at most `near_miss_margin` and beat the choice on the
        objective are rerun with the final fine-tune (into `<out>/final`, without the benchmark, which only the
        result gets), best objective first; the first whose artifact meets the floor on validation is chosen."""
        cfg = self.config
        if not cfg.near_miss_margin:
            return
        choice = result.chosen if result.met else None
        lowest = self.floor - cfg.near_miss_margin / 100.0
        misses = sorted((r for r in result.trials if r["state"] == "complete" and not r["meets_budget"]
                         and self._meets(r, lowest)
                         and (choice is None or self._objective(r) < self._objective(choice))), key=self._objective)
        for row in misses[:cfg.max_near_misses]:
            if may_rerun is not None and not may_rerun(1 + (choice is not None)):
                log.warning("time_budget: no room to rerun near miss #%s and then the choice", row["number"])
                break
            start = time.perf_counter()
            path = self._write_recipe(row, self.out / "near_misses" / f"trial-{row['number']}.yaml",
                                      f"a near miss (val accuracy {row['val_accuracy']:.4f} under the floor "
                                      f"{self.floor:.4f}), rerun with the final fine-tune", benchmark=False)
            folder = run_recipe(load_recipe(path), self.out / "final", progress=cfg.progress)
            accuracy = self._accuracy(self._runner(folder))
            record = {"number": row["number"], "candidate": row["candidate"], "val_accuracy_search": row["val_accuracy"],
                      "val_accuracy": accuracy, "meets_budget": accuracy >= self.floor - 1e-12,
                      "seconds": time.perf_counter() - start}
            result.near_misses.append(record)
            log.info("near miss #%s after the final fine-tune: val accuracy %.4f (floor %.4f)", row["number"],
                     accuracy, self.floor)
            if record["meets_budget"]:
                result.chosen, result.met, result.gap = row, True, None
                return

    def _why(self, result: OptimizeResult) -> str:
        """Why the recipe's pipeline is the one written, for its header."""
        rule = {"latency": "lowest latency", "size": "smallest artifact", "pareto": "lowest latency x size"}
        if not result.met:
            return "no candidate met the budget; this is the most accurate one, to rerun longer"
        if result.chosen is not None and not result.chosen["meets_budget"]:  # a near miss the final fine-tune kept
            return (f"chosen: a near miss in the search that met the budget after the final fine-tune (val accuracy "
                    f"{result.near_misses[-1]['val_accuracy']:.4f}), with the {rule[self.config.objective]} of those "
                    "that did or were within it")
        return f"chosen: within the budget, the {rule[self.config.objective]}"

    def _write_recipe(self, row: dict[str, Any], path: Path, why: str, benchmark: bool = True) -> Path:
        """The recipe that reruns trial `row` with the final fine-tune, written to `path` (its header says `why`);
        without `benchmark`, no benchmark step and no report."""
        candidate = Candidate.from_params(row["params"])
        steps = candidate.recipe_steps(self.config, self.scan, onnx=row["backend"] == "onnxruntime",
                                       fp32_layers=row.get("fp32_layers"), encoder=self.encoder)
        # no top-level `threads`: that would train the final rerun on the latency threads; the benchmark step
        # carries them, and every other step runs on the process's threads, as the trials did
        recipe = {"name": f"optimize_{self.model_spec.name}", "seed": self.config.seed,
                  "model": self.model_spec.model_dump(mode="json", exclude_defaults=True),
                  "data": {"name": self.data_spec.name, **self.data_spec.model_dump(mode="json", exclude_defaults=True)},
                  "steps": steps if benchmark else [s for s in steps if s["type"] != "benchmark"],
                  "report": {"title": f"cleanai optimize: {self.model_spec.name}, trial #{row['number']}",
                             **({} if benchmark else {"auto": False})}}
        header = (f"# Written by `cleanai optimize` (trial #{row['number']}: {row['candidate']}).\n# {why}; "
                  f"search: val accuracy {row['val_accuracy']:.4f}, {row['latency_ms']:.3f} ms, "
                  f"{row['size_mb']:.3f} MB.\n"
                  f"# Rerun or edit it: cleanai run {path} --out runs/<name>\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w", encoding="utf-8") as fh:
            fh.write(header + yaml.safe_dump(recipe, sort_keys=False))
        load_recipe(path)  # what is written validates
        return path

    @staticmethod
    def _outputs(folder: Path) -> tuple[Path | None, Path | None]:
        """A run's ONNX file (its last export or quantize step) and the folder of its last step that wrote a torch
        model (None when it has none)."""
        entries = read_status(folder)["variants"]["main"]
        onnx = next((e for e in reversed(entries) if e["type"] in ("quantize", "export")), None)
        model_step = next((e for e in reversed(entries) if e["type"] in _MODEL_STEPS), None)
        return (None if onnx is None else folder / onnx["folder"] / "model.onnx",
                None if model_step is None else folder / model_step["folder"])

    def _runner(self, folder: Path) -> Runner:
        """The artifact of run `folder`: its ONNX file, else its torch model, else the original."""
        onnx, model_dir = self._outputs(folder)
        if onnx is not None:
            return OrtRunner(onnx)
        return TorchRunner(self.source if model_dir is None else load_pruned(model_dir))

    def _save_artifact(self, folder: Path) -> dict[str, Path]:
        """The final run's ONNX file and its pickle-free torch model (widths manifest + safetensors), copied into
        `<out>/artifact`."""
        onnx, model_dir = self._outputs(folder)
        with atomic_dir(self.out / "artifact") as stage:
            if onnx is not None:
                shutil.copyfile(onnx, stage / "model.onnx")
            if model_dir is not None:
                for name in ("manifest.json", "model.safetensors"):
                    shutil.copyfile(model_dir / name, stage / name)
            else:  # nothing was pruned: the original model is the torch artifact
                save_pruned(self.source, stage, base=self.model_spec.name, base_kwargs=self.run.base_kwargs,
                            example_inputs=self.example)
        files = {"torch": self.out / "artifact"}
        if onnx is not None:
            files["onnx"] = self.out / "artifact" / "model.onnx"
        return files

    def _final(self, folder: Path, artifact: dict[str, Path]) -> dict[str, Any]:
        """The final artifact's validation accuracy (same split as the choice), its test-split benchmark rows, and
        the seconds of each step of the rerun with the threads they ran on (what a time budget is checked against)."""
        runner: Runner = (OrtRunner(artifact["onnx"]) if "onnx" in artifact
                          else TorchRunner(load_pruned(artifact["torch"])))
        status = read_status(folder)
        entry = status["benchmark"]
        rows = load_rows(folder / entry["folder"] / "results.json")
        original, final = rows[0], rows[-1]
        val = self._accuracy(runner)
        return {"backend": runner.backend, "val_accuracy": val, "meets_budget_on_val": val >= self.floor - 1e-12,
                "test_accuracy": final.accuracy, "test_accuracy_original": original.accuracy,
                "latency_ms": final.latency_ms_p50, "latency_ms_original": original.latency_ms_p50,
                "speedup_vs_torch": original.latency_ms_p50 / final.latency_ms_p50, "size_mb": final.size_mb,
                "size_mb_original": original.size_mb, "threads": status["threads"],
                "steps": [{"type": e["type"], "seconds": e.get("seconds")} for e in [*status["variants"]["main"], entry]],
                "rows": [r.model_dump(mode="json") for r in rows]}


def _row(trial: optuna.trial.FrozenTrial, fail_reason: str | None) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {"number": trial.number, "state": trial.state.name.lower(), "params": trial.params,
            "candidate": attrs.get("candidate", "-"),
            **{name: attrs.get(name) for name in METRICS},
            "val_accuracy_torch": attrs.get("val_accuracy_torch"), "backend": attrs.get("backend"),
            "fp32_layers": attrs.get("fp32_layers", []), "fallback": attrs.get("fallback"),
            "macs_ratio": attrs.get("macs_ratio"), "epochs": attrs.get("epochs"),
            "rungs": {k: v for k, v in attrs.items() if k.startswith("rung_")},
            "fail_reason": fail_reason,
            "seconds": None if trial.duration is None else trial.duration.total_seconds()}


def _export_problem(exc: ExportError) -> str:
    what = f"operator {exc.operator}" if exc.operator else "the export"
    return f"ONNX export failed ({what}{f' in module {exc.module}' if exc.module else ''}): {exc}"


def _fingerprint(model: ModelSpec, data: DataSpec, config: OptimizeConfig) -> str:
    """What the measurements kept in the out folder depend on (not the trial count, time limit or progress)."""
    settings = config.model_dump(mode="json", exclude={"n_trials", "timeout", "time_budget", "progress", "out",
                                                       "final_epochs", "objective", "max_accuracy_drop",
                                                       "target_latency_ms", "target_size_mb", "near_miss_margin",
                                                       "max_near_misses"})
    for name in ("finetune_lrs", "kd_augment"):  # absent when unset, so the studies made before them still resume
        if not settings[name]:
            del settings[name]
    if not settings["vocab_keep_first"] or settings["vocab_fallback"] == "prefix":  # as the studies before it measured
        del settings["vocab_fallback"]
    blob = json.dumps({"model": model.model_dump(mode="json"), "data": data.model_dump(mode="json"),
                       "config": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
