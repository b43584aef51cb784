"""The `cleanai` command. It only composes the Python API; every subcommand maps to one function."""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from cleanai.errors import CleanAIError, ConfigError


def _demo(args: argparse.Namespace) -> None:
    from cleanai.demo import run_demo

    _check_out(args)
    run_demo(args.out, epochs=args.epochs, threads=args.threads, seed=args.seed, progress=not args.quiet,
             overwrite=args.overwrite, sets=_key_values(args.set, "--set"))


def _check_out(args: argparse.Namespace, kind: str = "dir") -> None:
    """Refuse a bad `--out` before any work: a wrong kind, an unwritable place, a folder CleanAI did not write."""
    from cleanai.io import check_destination

    if args.out is not None:
        check_destination(args.out, kind=kind, overwrite=args.overwrite, option="--out")


def _load_yaml(path: Path | None, fields: str = "TrainConfig") -> dict[str, Any]:
    """Read a `--config` file: a YAML mapping; a syntax error names the file, line and column."""
    if path is None:
        return {}
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} {'is a folder' if path.is_dir() else 'does not exist'}; "
                          f"give a YAML file of {fields} fields")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text; give a YAML file of {fields} fields") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {where}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of {fields} fields, got {type(data).__name__}")
    return data


def _key_values(pairs: Sequence[str], option: str) -> dict[str, Any]:
    """`["key=value", ...]` -> `{key: value}`, each value read as a YAML scalar (0.5, true, output)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{option} {pair!r}: {value!r} is not a YAML value (quote it, or write e.g. 0.5, "
                              "true, [1, 2])") from None
    return out


def _number(kind: type, low: float, high: float = math.inf, *, low_open: bool = False,
            what: str = "") -> Callable[[str], Any]:
    """An argparse type: an int or float in [low, high] (or (low, high] with `low_open`), refused with that range."""
    name = "an integer" if kind is int else "a number"
    lo, hi = (f"{low:g}", f"{high:g}") if kind is float else (str(int(low)), str(high))
    allowed = (f"{name} {'>' if low_open else '>='} {lo}" if high == math.inf
               else f"{name} in {'(' if low_open else '['}{lo}, {hi}]")

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        fits = value is not None and math.isfinite(value) and (low < value if low_open else low <= value) and (
            value <= high)
        if not fits:
            raise argparse.ArgumentTypeError(f"expected {allowed}{what}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


_COUNT = _number(int, 1)  # batch sizes, epochs, runs, threads, steps
_SEED = _number(int, 0, 2**32 - 1)
_LR = _number(float, 0, low_open=True)
_points = _number(float, 0, what=" (1.0 = one accuracy point)")


def _model_and_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """Load the data, then build the model for it; refuse a model that cannot take this data, before any work."""
    from cleanai._validate import check_modality, check_model_input
    from cleanai.data import load_dataset
    from cleanai.models import create_model

    splits = load_dataset(args.data, root=args.data_dir)
    model = create_model(args.model, pretrained=args.weights, **_class_count(args.model, splits))
    names = {"where": args.command, "name": f"model {args.model!r}", "source": f"dataset {args.data!r}"}
    check_modality(model, splits.task == "text", **names)
    check_model_input(model, _example(_loaders(model, splits, 1)), **names)
    return model, splits


def _class_count(model_name: str, splits: Any) -> dict[str, int]:
    """The model factory's keyword for the number of classes (`num_labels` for text models), set from the data."""
    from cleanai.models import MODELS

    key = "num_labels" if "num_labels" in inspect.signature(MODELS.get(model_name)).parameters else "num_classes"
    return {key: len(splits.label_names)}


def _loaders(model: Any, splits: Any, batch_size: int, seed: int | None = None) -> Any:
    from cleanai.data import text_collate

    collate = text_collate(model.tokenizer) if splits.task == "text" else None
    return splits.loaders(batch_size=batch_size, collate_fn=collate, seed=seed or 0)


def _train(args: argparse.Namespace) -> None:
    from cleanai.io import atomic_dir, check_destination, save_safetensors, write_json
    from cleanai.training import TrainConfig, Trainer, seed_everything
    from cleanai.training.config import check_run

    _check_nproc(args)
    _check_out(args)
    fields = _load_yaml(args.config)
    overrides = {"epochs": args.epochs, "lr": args.lr, "optimizer": args.optimizer, "scheduler": args.scheduler,
                 "amp": args.amp or None, "seed": args.seed, "checkpoint_every": args.checkpoint_every}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    fields.setdefault("checkpoint_dir", str(Path(args.out).with_name(Path(args.out).name + ".checkpoints")))
    if args.resume and not fields.get("resume"):
        fields["resume"] = True  # a `resume: <checkpoint file>` in --config is more precise, and kept
    fields["progress"] = not args.quiet
    config = TrainConfig.model_validate(fields)
    if config.checkpoint_dir is not None:  # last.pt files are added to it (a resume needs them): only its kind is checked
        check_destination(config.checkpoint_dir, overwrite=True, option="checkpoint_dir")
    if config.resume not in (True, False) and not Path(config.resume).is_file():
        raise ConfigError(f"resume: {str(config.resume)!r} in {args.config} is not a checkpoint file; give the "
                          f"last.pt a run saved, or use --resume to continue from {config.checkpoint_dir}/last.pt")
    if config.seed is not None:  # before the model is built: the seed fixes its initial weights too
        seed_everything(config.seed)
    model, splits = _model_and_data(args)
    splits = splits.subsets(_subsets(args), seed=config.seed or 0)
    loaders = _loaders(model, splits, args.batch_size, config.seed)
    check_run(config, model, _first_batch(loaders.val))
    if args.nproc > 1:  # every input is checked here, once, so a bad one is a one-line error, not N tracebacks
        del model, splits, loaders
        _relaunch(args)
        return
    trainer = Trainer(model, config=config)
    history = trainer.fit(loaders.train, loaders.val)
    scores = trainer.evaluate(loaders.test)
    if not trainer.distributed.is_main:  # data-parallel: rank 0 writes the run folder
        return
    with atomic_dir(args.out, overwrite=args.overwrite) as stage:
        save_safetensors(model, stage / "model.safetensors", metadata={"model": args.model, "dataset": args.data})
        write_json(stage / "history.json", history.to_dict())
        write_json(stage / "train_config.json", config.model_dump(mode="json"))
        write_json(stage / "test_metrics.json", scores)
    print("test " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    print(f"Model and history written to {Path(args.out).resolve()}")


def _add_subset_options(p: argparse.ArgumentParser, train_use: str, val_use: str) -> None:
    """`--train-samples` / `--val-samples`: seeded, class-balanced parts of those splits (cleanai.data.subset)."""
    p.add_argument("--train-samples", type=_COUNT, default=None,
                   help=f"a seeded part of the training split, {train_use} (default: all)")
    p.add_argument("--val-samples", type=_COUNT, default=None,
                   help=f"a seeded part of the validation split {val_use} (default: all)")


def _subsets(args: argparse.Namespace) -> dict[str, int]:
    """The split sizes `--train-samples` / `--val-samples` asked for."""
    return {k: n for k, n in (("train", args.train_samples), ("val", args.val_samples)) if n}


def _check_nproc(args: argparse.Namespace) -> None:
    """`--nproc N`: not under torchrun already, at most one process per usable core (GPU), a batch that splits."""
    import os

    import torch

    if args.nproc == 1:
        return
    if "WORLD_SIZE" in os.environ:
        raise ConfigError(f"--nproc {args.nproc} starts torchrun itself, but this process already runs under torchrun "
                          f"(WORLD_SIZE={os.environ['WORLD_SIZE']}); leave --nproc out there")
    if args.batch_size % args.nproc:
        raise ConfigError(f"--batch-size {args.batch_size} is the global batch of one step and must divide evenly "
                          f"among --nproc {args.nproc} processes; use a multiple of {args.nproc}")
    gpus = torch.cuda.device_count()
    have, unit = (gpus, "GPU(s)") if gpus else (len(os.sched_getaffinity(0)), "usable CPU core(s)")
    if args.nproc > have:
        raise ConfigError(f"--nproc {args.nproc}: this machine has {have} {unit}, and data-parallel training runs one "
                          f"process per {'GPU' if gpus else 'core'}; use --nproc 2..{have}" if have > 1 else
                          f"--nproc {args.nproc}: this machine has {have} {unit}, so data-parallel training cannot "
                          "help; leave --nproc out")


def _relaunch(args: argparse.Namespace) -> None:
    """Run this same `cleanai train` command (without --nproc) in `--nproc` processes through torchrun."""
    import os
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "cleanai.cli", *_without_nproc(args.argv)]
    # one thread per process unless the user set it (torchrun would set it too, with a banner saying so)
    code = subprocess.call(command, env={"OMP_NUM_THREADS": "1", **os.environ})
    if code:
        raise CleanAIError(f"the {args.nproc} training processes failed (torchrun exit code {code}); their errors are "
                           "above")


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """`argv` without `--nproc N` / `--nproc=N`."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            out.append(token)
    return out


def _measure(runners: list[Any], model: Any, splits: Any, args: argparse.Namespace, split: str = "test") -> list[Any]:
    """Benchmark `runners` on one split the same way, print the table and return the rows."""
    from torch.utils.data import DataLoader

    from cleanai.benchmark import BenchmarkConfig, TextClassifierRunner, compare_runners
    from cleanai.data import raw_text_collate

    data = getattr(splits, split)
    if len(data) == 0:
        raise CleanAIError(f"split {split!r} of {args.data!r} is empty; choose train, val or test")
    if splits.task == "text":
        runners = [TextClassifierRunner(model.tokenizer, r) for r in runners]
    loader = DataLoader(data, batch_size=args.eval_batch_size,
                        collate_fn=raw_text_collate if splits.task == "text" else None)
    config = BenchmarkConfig(batch_size=args.batch_size, throughput_batch_size=args.throughput_batch_size,
                             runs=args.runs, threads=args.threads)
    return compare_runners(runners, loader, config)  # interleaved rounds, medians, ratios round by round


def _write_rows(rows: list[Any], stage: Path) -> None:
    from cleanai.benchmark import plot_metrics, save_rows

    save_rows(rows, stage / "results.json")
    save_rows(rows, stage / "results.csv")
    plot_metrics(rows, stage / "metrics.png")


def _first_batch(loader: Any) -> Any:
    """The loader's first batch, taken without drawing from the global RNG (a check must not change a seeded run)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        return next(iter(loader))


def _example(loaders: Any) -> Any:
    """One sample of the validation split, shaped as the model takes it (for tracing, export and checks)."""
    inputs = _first_batch(loaders.val)[0]
    return {k: v[:1] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:1]


def _benchmark(args: argparse.Namespace) -> None:
    from cleanai._validate import probe_runner
    from cleanai.benchmark import OrtRunner, TorchRunner
    from cleanai.io import atomic_dir

    _check_out(args)
    model, splits = _model_and_data(args)
    runners: list[Any] = [TorchRunner(model, name=f"{args.model} (torch)")]
    if args.onnx is not None:
        if not args.onnx.is_file():
            raise ConfigError(f"--onnx {str(args.onnx)!r} is not a file; give an .onnx file (see `cleanai export`)")
        runners.append(probe_runner(
            lambda: OrtRunner(args.onnx, name=f"{args.onnx.name} (onnxruntime)"),
            _example(_loaders(model, splits, 1)), what=f"--onnx {str(args.onnx)!r}", source=f"dataset {args.data!r}",
            num_classes=len(splits.label_names)))
    rows = _measure(runners, model, splits, args, args.split)
    if args.out is not None:
        with atomic_dir(args.out, overwrite=args.overwrite) as stage:
            _write_rows(rows, stage)
        print(f"Results written to {Path(args.out).resolve()}")


def _export(args: argparse.Namespace) -> None:
    from cleanai.export import export_onnx, optimize_onnx
    from cleanai.io import check_destination

    optimized = args.out.with_name(f"{args.out.stem}.opt.onnx")
    _check_out(args, kind="file")
    if args.optimize is not None:
        check_destination(optimized, kind="file", overwrite=args.overwrite, option="--optimize output")
    model, splits = _model_and_data(args)
    result = export_onnx(model.eval(), _example(_loaders(model, splits, 8)), args.out, exporter=args.exporter,
                         dynamic_sequence=splits.task == "text")
    print(f"Exported {args.model} with the {result.exporter} exporter to {result.path} "
          f"(parity with torch: max abs diff {result.max_abs_diff:.2e})")
    if args.optimize is not None:
        out = optimize_onnx(result.path, optimized, level=args.optimize)
        print(f"ONNX Runtime graph optimisations ({args.optimize}) saved to {out}")


def _quantize(args: argparse.Namespace) -> None:
    from cleanai.benchmark import TorchRunner
    from cleanai.io import atomic_dir, write_json
    from cleanai.quantization import QuantConfig, quantize, quantize_with_accuracy_budget

    _check_out(args)
    if args.preset is not None:
        config = QuantConfig.preset(args.preset, is_static=args.mode == "static", backend=args.backend)
    else:
        fields = {**_load_yaml(args.config, "QuantConfig"), "mode": args.mode, "backend": args.backend}
        if args.calibration is not None:
            fields["calibration"] = args.calibration
        if args.per_tensor:
            fields["per_channel"] = False
        config = QuantConfig.model_validate(fields)
    config = config.model_copy(update={"calibration_batches": args.calib_batches})
    if args.runtime == "auto" and args.max_drop is not None:
        raise ConfigError("--runtime auto picks among runtimes by speed after a parity check; --max-drop searches one "
                          "backend's int8 variants against an accuracy budget: use one of them")
    model, splits = _model_and_data(args)
    loaders = _loaders(model, splits, args.calib_batch_size)
    if args.runtime == "auto":
        return _choose_runtime(args, model, splits, loaders, config)
    search = None
    if args.max_drop is None:
        runner = quantize(model, config, calib=loaders.train, example_inputs=_example(loaders), name=args.model)
    else:
        search = quantize_with_accuracy_budget(model, config, loaders.train, loaders.val, args.max_drop / 100,
                                               example_inputs=_example(loaders))
        summary = search.summary()
        print(summary)
        runner, config = search.runner, search.chosen.config if search.chosen is not None else config
    with atomic_dir(args.out, overwrite=args.overwrite) as stage:
        if search is not None:
            write_json(stage / "search.json", search.to_dict())
            (stage / "search.txt").write_text(summary + "\n", encoding="utf-8")
        if runner is not None:
            artifact = runner.save(stage)
            write_json(stage / "quant_config.json", config.model_dump(mode="json"))
            if not args.no_benchmark:
                _write_rows(_measure([TorchRunner(model, name=f"{args.model} fp32 (torch)"), runner], model, splits,
                                     args), stage)
    if runner is None:
        raise CleanAIError(f"no quantized variant kept accuracy within {args.max_drop} points of fp32 on the validation "
                           f"split; every attempt and what is left to try: {Path(args.out).resolve() / 'search.txt'}")
    print(f"Quantized artifact {artifact.name} and results written to {Path(args.out).resolve()}")


def _prune(args: argparse.Namespace) -> None:
    from cleanai.io import atomic_dir, write_json
    from cleanai.pruning import PruneConfig, prune_and_finetune, save_pruned
    from cleanai.training import TrainConfig, Trainer, seed_everything
    from cleanai.training.config import check_run

    _check_out(args)
    config = PruneConfig(criterion=args.criterion, ratio=args.ratio, scope=args.scope, iterative_steps=args.steps,
                         criterion_kwargs=_key_values(args.criterion_arg, "--criterion-arg"),
                         ratio_dict=_key_values(args.ratio_dict, "--ratio-dict"), ignored_layers=args.ignored_layers,
                         round_to=args.round_to, max_layer_ratio=args.max_layer_ratio, calib_batches=args.calib_batches,
                         seed=args.seed, recalibrate_bn=args.recalibrate_bn)
    fields = _load_yaml(args.config)
    fields.update({k: v for k, v in {"epochs": args.finetune_epochs, "lr": args.lr, "optimizer": args.optimizer,
                                     "seed": args.seed}.items() if v is not None})
    fields["progress"] = not args.quiet
    train_config = TrainConfig.model_validate(fields) if args.finetune_epochs > 0 else None
    seed_everything(args.seed)  # before the model is built: the seed fixes initial weights not loaded from a file
    model, splits = _model_and_data(args)
    loaders = _loaders(model, splits, args.batch_size, args.seed)
    example = _example(loaders)
    if train_config is not None:
        check_run(train_config, model, _first_batch(loaders.val))
    eval_config = (train_config or TrainConfig()).model_copy(update={"checkpoint_dir": None, "log_dir": None})
    before = Trainer(model, config=eval_config).evaluate(loaders.test)
    pruned, report, history = prune_and_finetune(model, example, config, loaders.train, loaders.val, train_config)
    after = Trainer(pruned, config=eval_config).evaluate(loaders.test)
    rows = [{"variant": name, "test": scores, "params": params, "macs": macs} for name, scores, params, macs in (
        ("unpruned", before, report.params_before, report.macs_before),
        ("pruned", after, report.params_after, report.macs_after))]
    base_kwargs = {"num_labels" if splits.task == "text" else "num_classes": len(splits.label_names)}
    with atomic_dir(args.out, overwrite=args.overwrite) as stage:
        save_pruned(pruned, stage, base=args.model, base_kwargs=base_kwargs, example_inputs=example)
        write_json(stage / "prune_report.json", report.to_dict())
        write_json(stage / "history.json", history.to_dict())
        write_json(stage / "summary.json", rows)
    print(report)
    print(f"\nper step, validation {history.metric}:\n{history}")
    print(f"\n{'test split':<10} {'accuracy':>9} {'params':>12} {'MACs':>15}")
    for row in rows:
        print(f"{row['variant']:<10} {row['test'].get('accuracy', float('nan')):>9.4f} {row['params']:>12,} "
              f"{row['macs']:>15,}")
    print(f"{'ratio':<10} {'':>9} {report.params_ratio:>12.1%} {report.macs_ratio:>15.1%}")
    print(f"Pruned model (manifest.json + model.safetensors) and reports written to {Path(args.out).resolve()}")


def _list(args: argparse.Namespace) -> None:
    from cleanai import data, models, pruning, quantization, training, tuning

    listing: dict[str, Callable[[], list[str]]] = {
        "models": models.list_models, "datasets": data.list_datasets, "optimizers": training.list_optimizers,
        "losses": training.list_losses, "schedulers": training.list_schedulers, "metrics": training.list_metrics,
        "criteria": pruning.list_criteria, "presets": quantization.list_presets, "samplers": tuning.list_samplers,
        "pruners": tuning.list_pruners,
    }
    print("\n".join(listing[args.what]()))


def _choose_runtime(args: argparse.Namespace, model: Any, splits: Any, loaders: Any, config: Any) -> None:
    """`quantize --runtime auto`: every runtime x precision candidate checked and timed; the fastest that passes."""
    from cleanai.benchmark import BenchmarkConfig, choose_runtime
    from cleanai.io import atomic_dir, write_json

    measure = BenchmarkConfig(batch_size=args.batch_size, throughput_batch_size=args.throughput_batch_size,
                              runs=args.runs, threads=args.threads, progress=False)
    choice = choose_runtime(model, _loaders(model, splits, args.eval_batch_size).test, loaders.train, config=measure,
                            quant=config, example_inputs=_example(loaders))
    table = choice.table()
    print(table)
    with atomic_dir(args.out, overwrite=args.overwrite) as stage:
        artifact = choice.runner.save(stage)
        write_json(stage / "quant_config.json", config.model_dump(mode="json"))
        write_json(stage / "runtime.json", choice.to_dict())
        (stage / "runtime.txt").write_text(table + "\n", encoding="utf-8")
        _write_rows(choice.rows, stage)
    print(f"Chose {choice.runner.name}; artifact {artifact.name}, the table of every candidate (runtime.txt) and "
          f"results written to {Path(args.out).resolve()}")


def _add_model_data(p: argparse.ArgumentParser, default_model: str = "small_cnn") -> None:
    p.add_argument("--model", default=default_model, help="model name (see `cleanai list models`)")
    p.add_argument("--data", default="digits", help="dataset name (see `cleanai list datasets`)")
    p.add_argument("--data-dir", type=Path, default=None, help="dataset directory (default: $CLEANAI_DATA/<name>)")
    p.add_argument("--weights", default=None,
                   help="checkpoint to start from: .safetensors/.pt/.th path, or 'akamaster' for CIFAR ResNets")


def _add_measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=_COUNT, default=1, help="batch size for latency")
    p.add_argument("--throughput-batch-size", type=_COUNT, default=64)
    p.add_argument("--eval-batch-size", type=_COUNT, default=256)
    p.add_argument("--runs", type=_COUNT, default=100)
    p.add_argument("--threads", type=_COUNT, default=None)


def _add_out(p: argparse.ArgumentParser, default: Path | None, help: str) -> None:
    p.add_argument("--out", type=Path, default=default, help=help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out even if CleanAI did not write it (without it, only an empty folder, a new "
                        "path or an earlier CleanAI run folder is replaced)")


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (`cleanai prune: error: ...`), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _distill(args: argparse.Namespace) -> None:
    """`cleanai distill`: a text student distilled from a fine-tuned teacher, then both benchmarked."""
    from torch.utils.data import DataLoader, Subset

    from cleanai.benchmark import BenchmarkConfig, compare, intent_variants, measure_intents
    from cleanai.data import load_dataset, raw_text_collate, text_collate
    from cleanai.distillation import DistillConfig, distill, keep_layers
    from cleanai.io import atomic_dir, write_json
    from cleanai.models import TextClassifier
    from cleanai.training import TrainConfig

    _check_out(args)
    train_config = TrainConfig(epochs=args.epochs, optimizer="adamw", lr=args.lr, seed=args.seed, device="cpu",
                               progress=not args.quiet)
    config = DistillConfig(alpha=args.alpha, temperature=args.temperature, hidden_weight=args.hidden_weight,
                           cache_dir=args.cache_dir, train=train_config)
    splits = load_dataset(args.data, config=args.data_config)
    if "oos" not in splits.label_names:
        raise CleanAIError(f"cleanai distill measures intent classifiers with an 'oos' class; {args.data!r} has none")
    teacher = TextClassifier.from_pretrained(args.teacher).eval()
    if args.student.startswith("layers:"):
        student = keep_layers(teacher, [int(v) for v in args.student.removeprefix("layers:").split(",")])
    else:
        student = TextClassifier.from_pretrained(args.student)
    part = {name: getattr(splits, name) for name in ("train", "val", "test")}
    for name, limit in (("train", args.train_subset), ("test", args.test_subset), ("val", args.test_subset)):
        if limit is not None:
            part[name] = Subset(part[name], range(min(limit, len(part[name]))))
    collate = text_collate(teacher.tokenizer, args.max_length)
    train = DataLoader(part["train"], batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    student, history = distill(student, teacher, train, DataLoader(part["val"], batch_size=128, collate_fn=collate),
                               config)
    raw = {name: DataLoader(part[name], batch_size=64, collate_fn=raw_text_collate) for name in ("val", "test")}
    bench = BenchmarkConfig(threads=args.threads, runs=args.runs, progress=not args.quiet)
    oos = splits.label_names.index("oos")
    with atomic_dir(args.out, overwrite=args.overwrite) as stage:
        runners = {**intent_variants(teacher, "teacher", stage, ["torch fp32"], oos, args.max_length),
                   **intent_variants(student, "student", stage, ["torch fp32"], oos, args.max_length)}
        rows = measure_intents(runners, raw["test"], raw["val"], args.query, bench, whole_split=args.test_subset is None)
        student.save_pretrained(stage / "student")
        write_json(stage / "history.json", history.to_dict())
        write_json(stage / "distill_config.json", config.model_dump(mode="json"))
        _write_rows(rows, stage)
    compare(rows)
    print(f"Student (student/), history, results and metrics.png written to {Path(args.out).resolve()}")


def _recipe(args: argparse.Namespace) -> Any:
    from cleanai.recipes import load_recipe

    return load_recipe(args.recipe, _key_values(args.set, "--set"))


def _run(args: argparse.Namespace) -> None:
    from cleanai.recipes import run_recipe

    recipe = _recipe(args)
    folder = run_recipe(recipe, args.out, progress=not args.quiet)  # checks --out before any work
    print(f"Run written to {folder.resolve()}" + (f" (report.{' and report.'.join(recipe.report.formats)})"
                                                  if recipe.report.auto else ""))


def _validate(args: argparse.Namespace) -> None:
    recipe = _recipe(args)
    for name, chain in recipe.variants.items():
        print(f"{name}: " + " -> ".join(step.key_id for step in chain))
    print(f"{args.recipe}: valid ({len(recipe.variants)} variant(s))")


def _report(args: argparse.Namespace) -> None:
    from cleanai.recipes import write_report

    for path in write_report(args.run, formats=args.format):
        print(f"Report written to {path.resolve()}")


def _add_recipe_parsers(sub: Any) -> None:
    for command, func, help in (("run", _run, "run a recipe into a run folder (finished steps are skipped)"),
                                ("validate", _validate, "check a recipe without running it")):
        p = sub.add_parser(command, help=help)
        p.add_argument("recipe", type=Path, help="recipe YAML file (see recipes/digits_demo.yaml)")
        p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                       help="change a field, e.g. steps.train.epochs=2 model.name=small_cnn")
        if command == "run":
            p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<recipe name>)")
            p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=func)
    p = sub.add_parser("report", help="write report.pdf and report.html of a run folder")
    p.add_argument("run", type=Path, help="a folder `cleanai run` wrote")
    p.add_argument("--format", nargs="+", choices=("pdf", "html"), default=["pdf", "html"])
    p.set_defaults(func=_report)


def _add_distill_parser(sub: Any) -> None:
    p = sub.add_parser("distill", help="distil a fine-tuned text classifier into a smaller student and benchmark both")
    p.add_argument("--teacher", type=Path, required=True, help="a TextClassifier directory (save_pretrained)")
    p.add_argument("--student", default="layers:0,2,5",
                   help="'layers:0,2,5' (those teacher layers, its weights) or a TextClassifier directory")
    p.add_argument("--data", default="clinc150")
    p.add_argument("--data-config", default="plus", help="clinc150: full, plus, small or imbalanced")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label loss, in [0, 1]")
    p.add_argument("--temperature", type=float, default=2.0, help="softmax temperature, > 0")
    p.add_argument("--hidden-weight", type=float, default=0.0, help="weight of hidden-state matching (0: off)")
    p.add_argument("--epochs", type=_COUNT, default=3)
    p.add_argument("--lr", type=_LR, default=1e-4)
    p.add_argument("--batch-size", type=_COUNT, default=32)
    p.add_argument("--max-length", type=_number(int, 2), default=64, help="tokens per query (longer ones are truncated)")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache the teacher's logits per example here")
    p.add_argument("--train-subset", type=_COUNT, default=None, help="first N training queries (default: all)")
    p.add_argument("--test-subset", type=_COUNT, default=None, help="first N validation and test queries (default: all)")
    p.add_argument("--query", default="What is the pin number for my account?", help="the query latency is timed on")
    p.add_argument("--threads", type=_COUNT, default=1)
    p.add_argument("--runs", type=_COUNT, default=100)
    p.add_argument("--seed", type=_SEED, default=0)
    _add_out(p, Path("runs/distilled"), "run folder: student/, history, results and metrics.png")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_distill)


def _tune(args: argparse.Namespace) -> None:
    """`cleanai tune`: a search over a YAML space; each trial trains the model with the Trainer (or k folds)."""
    from cleanai.models import MODELS, create_model
    from cleanai.registry import accepted_kwargs
    from cleanai.training import TrainConfig
    from cleanai.tuning import CrossValidation, SearchSpace, TrainingSpec, TuneConfig, save_result, tune

    _check_out(args)
    space = SearchSpace.from_yaml(args.space)
    fields = _load_yaml(args.config)
    fields.update({k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None})
    base = TrainConfig.model_validate({**fields, "progress": False})
    config = TuneConfig(sampler=args.sampler, pruner=args.pruner, n_trials=args.trials, timeout=args.timeout,
                        max_steps=args.max_epochs, n_jobs=args.n_jobs, directions=args.direction, seed=args.seed,
                        run_dir=args.out, storage=args.storage, study_name=args.study, keep_models=args.keep_models,
                        heartbeat_interval=args.heartbeat, grace_period=args.grace_period, progress=not args.quiet)
    takes = accepted_kwargs(MODELS.get(args.model))
    model_params = [n for n in space.names if n.split(".")[0] not in TrainConfig.model_fields]
    unknown = [n for n in model_params if takes is not None and n not in takes]
    if unknown:
        raise ConfigError(f"parameter {unknown[0]!r} in {args.space} is neither a TrainConfig field nor an argument "
                          f"of model {args.model!r} (it takes: {', '.join(takes or [])})")
    model, splits = _model_and_data(args)  # checks once that the model takes this data
    classes = _class_count(args.model, splits)

    def build(hp: Any) -> Any:
        return create_model(args.model, pretrained=args.weights, **classes, **{n: hp[n] for n in model_params if n in hp})

    if args.folds is None:
        loaders = _loaders(model, splits, args.batch_size, base.seed)
        spec: Any = TrainingSpec(build, loaders.train, loaders.val, base, args.metric)
    else:
        if splits.task == "text":
            raise ConfigError("--folds cross-validates image datasets; for text, tune on the validation split")
        spec = CrossValidation(build, splits.train, folds=args.folds, config=base, batch_size=args.batch_size,
                               metric=args.metric.removeprefix("val_"), seed=args.seed or 0)
    result = tune(spec, space, config)
    files = save_result(result, args.out)
    print(files["summary"].read_text(encoding="utf-8"), end="")
    print(f"Study, trials.csv, best.json, summary.txt, plots/ and the best models' weights (models/) in "
          f"{Path(args.out).resolve()}")


def _add_tune_parser(sub: Any) -> None:
    p = sub.add_parser("tune", help="search hyperparameters (grid, random, TPE, ...; Hyperband pruning) with the Trainer")
    _add_model_data(p)
    p.add_argument("--space", type=Path, required=True,
                   help="YAML search space; names of TrainConfig fields (lr, optimizer, epochs, optimizer_kwargs.momentum) "
                        "set the training run, other names are arguments of the model")
    p.add_argument("--config", type=Path, default=None, help="YAML file of TrainConfig fields every trial starts from")
    p.add_argument("--epochs", type=_COUNT, help="epochs per trial (the resource Hyperband and SHA allot)")
    p.add_argument("--metric", default="val_accuracy", help="what a trial scores (a History key, e.g. val_loss)")
    p.add_argument("--direction", choices=("maximize", "minimize"), default=None,
                   help="default: minimize a loss, maximize anything else")
    p.add_argument("--sampler", default="tpe", help="grid, random, tpe, gp, cmaes, nsga2 or qmc")
    p.add_argument("--pruner", default="none", help="none, median, sha or hyperband")
    p.add_argument("--trials", type=_COUNT, default=20, help="finished trials the study should hold")
    p.add_argument("--timeout", type=_number(float, 0, low_open=True), default=None, help="seconds for this run")
    p.add_argument("--max-epochs", type=_COUNT, default=None,
                   help="epoch budget of the whole search: the trials together train at most this many epochs")
    p.add_argument("--n-jobs", type=_COUNT, default=1, help="trials run in parallel threads of this process")
    p.add_argument("--folds", type=_number(int, 2), default=None,
                   help="k-fold cross-validation on the training split instead of scoring on the validation split")
    p.add_argument("--batch-size", type=_COUNT, default=64)
    p.add_argument("--keep-models", type=_number(int, 0), default=3, help="weights of this many best trials are kept")
    p.add_argument("--storage", default=None,
                   help="shared study URL, e.g. postgresql://user:pass@host/db (default: <out>/study.db, SQLite)")
    p.add_argument("--study", default="cleanai", help="study name (workers with the same URL and name share it)")
    p.add_argument("--heartbeat", type=_COUNT, default=30, help="seconds between a running trial's heartbeats")
    p.add_argument("--grace-period", type=_COUNT, default=None,
                   help="seconds without a heartbeat after which a dead worker's trial is failed and retried "
                        "(default: twice --heartbeat)")
    p.add_argument("--seed", type=_SEED, default=None)
    _add_out(p, Path("runs/tune"), "run folder: study.db (an existing one is resumed), models/, trials.csv, best.json, "
                                   "summary.txt, plots/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_tune)


def _optimize(args: argparse.Namespace) -> None:
    """`cleanai optimize`: search prune x distill x fold x quantize pipelines within an accuracy budget."""
    from cleanai.io import check_destination
    from cleanai.optimize import OptimizeConfig, optimize
    from cleanai.recipes import DataSpec, ModelSpec

    check_destination(args.out, option="--out")  # a new, empty or CleanAI-written folder (a search there resumes)
    if args.vocab_fallback is not None and not args.vocab_keep_first:
        raise ConfigError(f"--vocab-fallback {args.vocab_fallback} picks the rows of tokens a pruned vocabulary drops, "
                          "and this search prunes no vocabulary; add --vocab-keep-first N, or drop --vocab-fallback")
    fields = {k: v for k, v in (("n_trials", args.trials), ("timeout", args.timeout),
                                ("time_budget", args.time_budget), ("threads", args.threads),
                                ("storage", args.storage), ("seed", args.seed), ("final_epochs", args.final_epochs),
                                ("depths", args.depths), ("vocab_keep_first", args.vocab_keep_first),
                                ("finetune_lrs", args.lrs), ("near_miss_margin", args.near_miss_margin),
                                ("max_near_misses", args.max_near_misses), ("kd_augment", args.kd_augment),
                                ("vocab_fallback", args.vocab_fallback))
              if v is not None}
    fields.update(max_accuracy_drop=args.max_drop, objective=args.objective, out=args.out,
                  target_latency_ms=args.target_latency, target_size_mb=args.target_size, progress=not args.quiet)
    config = OptimizeConfig.quick(**fields) if args.quick else OptimizeConfig(**fields)
    model = ModelSpec(name=args.model, weights=args.weights)
    _model_and_data(args)  # refuses a model that cannot take this data, before any work
    data = DataSpec(name=args.data, root=None if args.data_dir is None else str(args.data_dir),
                    batch_size=args.batch_size,
                    subset=_subsets(args))
    result = optimize(model, data, config)
    print(result.summary())
    print(f"Study, trials.json, pareto_front.png, recipe.yaml, final/, artifact/ and report.pdf/html in "
          f"{Path(args.out).resolve()}")


def _add_optimize_parser(sub: Any) -> None:
    p = sub.add_parser("optimize", help="search pruning, KD, BN folding and int8 pipelines for the fastest artifact "
                                        "within an accuracy budget")
    _add_model_data(p)
    p.add_argument("--max-drop", type=_points, default=1.0, metavar="POINTS",
                   help="accuracy points the artifact may lose on the validation split (default 1.0)")
    p.add_argument("--objective", choices=("latency", "size", "pareto"), default="latency",
                   help="among candidates within budget: lowest batch-1 latency, smallest artifact, or lowest "
                        "latency x size")
    p.add_argument("--target-latency", type=_number(float, 0, low_open=True), default=None, metavar="MS",
                   help="also require at most this batch-1 latency")
    p.add_argument("--target-size", type=_number(float, 0, low_open=True), default=None, metavar="MB",
                   help="also require at most this artifact size")
    p.add_argument("--quick", action="store_true", help="a first look: 6 trials, short fine-tuning")
    p.add_argument("--trials", type=_COUNT, default=None, help="finished trials the study should hold")
    p.add_argument("--timeout", type=_number(float, 0, low_open=True), default=None,
                   help="seconds for the trials (no trial starts after it)")
    p.add_argument("--time-budget", type=_number(float, 0, low_open=True), default=None, metavar="SECONDS",
                   help="seconds for the whole command: a trial starts only while it and the final rerun are "
                        "expected to end within it")
    p.add_argument("--threads", type=_COUNT, default=None, help="threads latency is measured on (default 1)")
    p.add_argument("--final-epochs", type=_number(int, 0), default=None,
                   help="fine-tuning epochs of the chosen pipeline's final run")
    p.add_argument("--near-miss-margin", type=_points, default=None, metavar="POINTS",
                   help="rerun candidates that missed the floor by at most this many points in the search, and beat "
                        "the choice, with the final fine-tune first, best first; the first that then meets the floor "
                        "is chosen (default 0: off)")
    p.add_argument("--max-near-misses", type=_number(int, 0), default=None, metavar="N",
                   help="at most this many near misses are rerun (default 3)")
    p.add_argument("--lrs", type=_LR, nargs="+", default=None, metavar="LR",
                   help="learning rates the search samples for every fine-tune, e.g. --lrs 1e-4 2e-4 (default: the "
                        "fine-tune's own, 1e-3)")
    p.add_argument("--depths", type=_COUNT, nargs="+", default=None, metavar="N",
                   help="text models: also try a student of N encoder layers (kept evenly spread, trained like a "
                        "pruned candidate), e.g. --depths 3 4")
    p.add_argument("--vocab-keep-first", type=_number(int, 0), nargs="+", default=None, metavar="N",
                   help="text models: also try keeping only the embedding rows of the training texts' tokens and the "
                        "tokenizer's first N ids, e.g. --vocab-keep-first 8000 12000")
    p.add_argument("--vocab-fallback", choices=("nearest", "prefix"), default=None,
                   help="with --vocab-keep-first: the kept row a dropped token reads: the nearest in the original "
                        "embedding (default) or its longest kept prefix's")
    p.add_argument("--kd-augment", type=_number(int, 0), default=None, metavar="N",
                   help="text models: KD fine-tunes also read N edited, unlabelled variants of each training text "
                        "(default 0)")
    _add_subset_options(p, "for the search and the final run", "the choices are made on")
    p.add_argument("--batch-size", type=_COUNT, default=64)
    p.add_argument("--storage", default=None,
                   help="shared study URL, e.g. postgresql://user:pass@host/db (default: <out>/study/study.db)")
    p.add_argument("--seed", type=_SEED, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/optimize"),
                   help="run folder: study/, trials.json, pareto_front.png, recipe.yaml, final/, artifact/, "
                        "report.pdf/html; an earlier search there is resumed, a folder CleanAI did not write is refused")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_optimize)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cleanai", description="Make trained networks smaller and faster, "
                     "and prove it with honest numbers.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the whole loop on the embedded digits data: train a CNN, prune it with every "
                       "criterion, distil, export, int8, benchmark, report.pdf + report.html (recipe digits_demo.yaml)")
    _add_out(p, Path("runs/demo"), "run folder (a rerun skips the finished steps; --overwrite starts afresh)")
    p.add_argument("--epochs", type=_COUNT, default=None,
                   help="training epochs of the CNN (default: the recipe's 20); distillation runs a quarter as long")
    p.add_argument("--threads", type=_COUNT, default=None, help="torch threads of every step and of the timing")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="change a field of the recipe, as `cleanai run` does, e.g. steps.benchmark.runs=20")
    p.add_argument("--seed", type=_SEED, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)

    p = sub.add_parser("train", help="train or fine-tune a model on a dataset")
    _add_model_data(p)
    p.add_argument("--config", type=Path, default=None, help="YAML file of TrainConfig fields")
    p.add_argument("--epochs", type=_COUNT)
    p.add_argument("--lr", type=_LR)
    p.add_argument("--optimizer")
    p.add_argument("--scheduler")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU)")
    p.add_argument("--batch-size", type=_COUNT, default=64)
    _add_subset_options(p, "to train on", "to validate on each epoch")
    p.add_argument("--seed", type=_SEED)
    p.add_argument("--checkpoint-every", type=_COUNT)
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>.checkpoints/last.pt (or from `resume: <file>` in --config)")
    p.add_argument("--nproc", type=_COUNT, default=1,
                   help="data-parallel processes (torchrun + DistributedDataParallel; --batch-size is the global "
                        "batch, each process takes batch-size/N)")
    _add_out(p, Path("runs/train"), "run folder: model.safetensors, history and metrics (replaced whole at the end)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train)

    p = sub.add_parser("benchmark", help="measure accuracy, size, latency, throughput, params and MACs")
    _add_model_data(p)
    p.add_argument("--onnx", type=Path, default=None, help="also benchmark this ONNX file with ONNX Runtime")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    _add_measure_options(p)
    _add_out(p, None, "folder for results.json/csv and metrics.png")
    p.set_defaults(func=_benchmark)

    p = sub.add_parser("export", help="export a model to one ONNX file, checked against torch")
    _add_model_data(p)
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    p.add_argument("--optimize", choices=("basic", "extended", "all"), default=None,
                   help="also save ONNX Runtime's optimised graph as <out>.opt.onnx")
    _add_out(p, Path("runs/model.onnx"), "the .onnx file to write")
    p.set_defaults(func=_export)

    p = sub.add_parser("quantize", help="quantize to int8 (ONNX Runtime, OpenVINO or torch) and benchmark against fp32")
    _add_model_data(p)
    p.add_argument("--mode", choices=("dynamic", "static", "qat", "weight_only", "fp16", "bf16"), default="static")
    p.add_argument("--backend", choices=("onnxruntime", "torch", "openvino"), default="onnxruntime")
    p.add_argument("--runtime", choices=("auto",), default=None,
                   help="auto: build torch, ONNX Runtime and OpenVINO candidates (fp32, bf16 where the CPU has it, "
                        "int8 with these calibration settings), check each against fp32, time them at --batch-size and "
                        "--threads, keep the fastest that passes; runtime.txt holds the table of all")
    p.add_argument("--preset", default=None, help="CPU preset: auto, avx2, avx512_vnni, arm64")
    p.add_argument("--calibration", choices=("minmax", "entropy", "percentile"), default=None)
    p.add_argument("--per-tensor", action="store_true", help="one scale per tensor instead of per channel")
    p.add_argument("--calib-batches", type=_COUNT, default=8)
    p.add_argument("--calib-batch-size", type=_COUNT, default=32)
    p.add_argument("--config", type=Path, default=None, help="YAML file of QuantConfig fields")
    p.add_argument("--max-drop", type=_points, default=None, metavar="POINTS",
                   help="search calibrations, granularities and fp32 fallbacks until validation accuracy drops by at "
                        "most POINTS (e.g. 1.0); writes search.json / search.txt")
    p.add_argument("--no-benchmark", action="store_true")
    _add_measure_options(p)
    _add_out(p, Path("runs/quantized"), "run folder for the artifact, its config and the results")
    p.set_defaults(func=_quantize)

    p = sub.add_parser("prune", help="structurally prune a model (optionally iterative, with fine-tuning)")
    _add_model_data(p)
    p.add_argument("--criterion", default="magnitude", help="pruning criterion (magnitude, taylor, wanda, coverage, "
                   "adaptive, hybrid, random)")
    p.add_argument("--criterion-arg", nargs="+", default=[], metavar="KEY=VALUE",
                   help="criterion options, e.g. position=output metric=frequency (coverage) or p=1 (magnitude)")
    p.add_argument("--ratio", type=float, default=0.3, help="fraction of channels removed, in [0, 1)")
    p.add_argument("--ratio-dict", nargs="+", default=[], metavar="MODULE=RATIO",
                   help="ratios of the groups inside named modules, e.g. layer1=0.1 conv1=0 (any module name)")
    p.add_argument("--scope", choices=("local", "global"), default="local")
    p.add_argument("--steps", type=_COUNT, default=1, help="iterative steps reaching the ratio")
    p.add_argument("--finetune-epochs", type=_number(int, 0), default=0,
                   help="fine-tune epochs after each step (0: none)")
    p.add_argument("--calib-batches", type=_COUNT, default=8, help="calibration batches for data-driven criteria")
    p.add_argument("--recalibrate-bn", action="store_true",
                   help="after each step, re-estimate BatchNorm statistics on the calibration batches")
    p.add_argument("--ignored-layers", nargs="+", default=[], metavar="LAYER", help="modules never pruned")
    p.add_argument("--round-to", type=_COUNT, default=None,
                   help="kept channels: the nearest multiple of this (a layer may stay whole)")
    p.add_argument("--max-layer-ratio", type=float, default=1.0, help="no layer loses more than this fraction")
    p.add_argument("--config", type=Path, default=None, help="YAML file of TrainConfig fields for fine-tuning")
    p.add_argument("--lr", type=_LR)
    p.add_argument("--optimizer")
    p.add_argument("--batch-size", type=_COUNT, default=64)
    p.add_argument("--seed", type=_SEED, default=0)
    _add_out(p, Path("runs/pruned"), "run folder: manifest.json + model.safetensors and reports")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_prune)

    _add_distill_parser(sub)
    _add_tune_parser(sub)
    _add_optimize_parser(sub)
    _add_recipe_parsers(sub)

    p = sub.add_parser("list", help="list registered names")
    p.add_argument("what", choices=("models", "datasets", "optimizers", "losses", "schedulers", "metrics", "criteria",
                                    "presets", "samplers", "pruners"))
    p.set_defaults(func=_list)
    return parser


def one_line(exc: BaseException) -> str:
    """An error as one line: a pydantic error as `Config: field: message (got value)`, others joined."""
    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            field = ".".join(str(x) for x in e["loc"])
            got = "" if e["type"] == "value_error" and not field else f" (got {e['input']!r})"
            parts.append(f"{field + ': ' if field else ''}{e['msg'].removeprefix('Value error, ')}{got}")
        return f"{exc.title}: " + "; ".join(parts)
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; an error CleanAI raises on purpose (or a config's validation error) becomes one line on
    stderr and exit code 2; anything else is a bug and keeps its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
    except SystemExit as exc:  # a usage error (one line, printed by _Parser.error) or --help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        args.func(args)
    except (CleanAIError, ValidationError, FileNotFoundError, PermissionError) as exc:
        from cleanai.recipes import RecipeError  # its problems go one per line

        lines = exc.problems if isinstance(exc, RecipeError) else [one_line(exc)]
        print("\n".join(f"cleanai {args.command}: error: {line}" for line in lines), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cleanai {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
