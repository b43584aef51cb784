"""The steps a recipe chains: each one a config (the public API's config plus `type`/`id`) and a `run` that calls
the public function and writes its artifacts into a folder.

Model steps (train, finetune, tune, prune, distill, keep_layers, vocabulary, fuse) pass a torch model on; export and quantize write a
deployable artifact from the current model; benchmark measures every variant at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from cleanai.benchmark import BenchmarkConfig, OrtRunner, compare_runners, plot_metrics, save_rows
from cleanai.data import texts_of
from cleanai.distillation import DistillConfig, distill, keep_layers, prune_vocabulary
from cleanai.errors import ConfigError
from cleanai.export import export_onnx, optimize_onnx
from cleanai.fusion import fuse_conv_bn
from cleanai.io import load_weights, save_safetensors, write_json
from cleanai.metrics import METRICS
from cleanai.models import TextClassifier
from cleanai.pruning import PruneConfig, prune_and_finetune
from cleanai.quantization import PRESETS, QuantCheck, QuantConfig, quantize
from cleanai.registry import Registry
from cleanai.runtime import Runner
from cleanai.training import TrainConfig, Trainer, seed_everything
from cleanai.tuning import SearchSpace, TrainingSpec, TuneConfig, save_result, train_config_for, tune

if TYPE_CHECKING:
    from cleanai.recipes.runner import StepContext

MODEL_STEPS = ("train", "finetune", "tune", "prune", "distill", "keep_layers", "vocabulary", "fuse")
SOURCE_MODEL = "model"  # what a teacher or baseline field names to mean the recipe's own model (before any step)
_RUNNER_SET = ("log_dir", "checkpoint_dir", "resume", "progress")  # TrainConfig fields the runner decides


class StepConfig(BaseModel):
    """Fields every step has: its `type` and an optional `id` (default: the type) other steps refer to."""

    model_config = ConfigDict(extra="forbid")
    untracked: ClassVar[tuple[str, ...]] = ("id", "progress")  # fields that do not change what a step computes

    type: str
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")  # a folder name and a --set key part

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value == SOURCE_MODEL:
            raise ConfigError(f"id {SOURCE_MODEL!r} is reserved: a teacher or baseline naming it means the recipe's "
                              "own model; choose another id")
        return value

    @property
    def key_id(self) -> str:
        return self.id or self.type

    def references(self) -> dict[str, str | None]:
        """Fields naming an earlier model step (a teacher, a baseline), or `model`: the recipe's own model."""
        return {}

    def settings(self) -> dict[str, Any]:
        """What the step's hash covers: its JSON config without fields that do not change its result."""
        return self.model_dump(mode="json", exclude=set(self.untracked))

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        """Do the step, write its files into `out`, return a short summary (stored in step.json)."""
        raise NotImplementedError

    def load_model(self, out: Path, ctx: StepContext) -> nn.Module:
        """The model a model step wrote into `out`."""
        return ctx.load_saved_model(out)

    def artifact(self, out: Path, name: str) -> Runner:
        """The deployable runner an export or quantize step wrote into `out`."""
        raise NotImplementedError


def _train_config(fields: TrainConfig, ctx: StepContext, out: Path) -> TrainConfig:
    """A step's TrainConfig with what the runner decides: TensorBoard logs in the step folder, no checkpoints."""
    return fields.model_copy(update={"log_dir": out / "tensorboard", "checkpoint_dir": None, "resume": False,
                                     "progress": ctx.progress})


def _refuse_runner_fields(config: TrainConfig, where: str) -> None:
    given = sorted(set(_RUNNER_SET) & config.model_fields_set - {"progress"})
    if given:
        raise ConfigError(f"{', '.join(given)} in {where} are set by the recipe runner (TensorBoard logs and the "
                          "step's artifacts live in its folder of the run; a step reruns whole); remove them")


def _train_only(config: TrainConfig) -> TrainConfig:
    return TrainConfig.model_validate(config.model_dump(include=set(TrainConfig.model_fields)))


class TrainStep(StepConfig, TrainConfig):
    """`train` / `finetune`: `Trainer.fit` on the current model (TrainConfig fields), then the test split scored."""

    type: Literal["train", "finetune"]

    @model_validator(mode="after")
    def _runner_fields(self) -> TrainStep:
        _refuse_runner_fields(self, f"a {self.type} step")
        return self

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        model = ctx.input_model()
        seed_everything(ctx.seed)
        trainer = Trainer(model, config=_train_config(_train_only(self), ctx, out))
        history = trainer.fit(ctx.loaders.train, ctx.loaders.val)
        scores = trainer.evaluate(ctx.loaders.test)
        ctx.save_model(model, out)
        write_json(out / "history.json", history.to_dict())
        write_json(out / "test_metrics.json", scores)
        return {"test": scores}


class TuneStep(StepConfig, TuneConfig):
    """`tune`: `tune()` the training of the current model (TuneConfig fields; `space` names TrainConfig fields,
    every trial trains a fresh copy from `train`), then train it once more with the best parameters: the step's
    model. The study, trials.csv, best.json, summary.txt and plots/ stay in the step's folder."""

    type: Literal["tune"]
    space: dict[str, Any]
    train: TrainConfig = Field(default_factory=TrainConfig)  # what every trial starts from
    metric: str = "val_accuracy"  # a History key, reported each epoch (pruners stop bad trials on it)

    @field_validator("space")
    @classmethod
    def _train_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        SearchSpace.from_dict(value)  # names the first bad parameter
        other = [name for name in value if name.split(".")[0] not in TrainConfig.model_fields]
        if other:
            raise ConfigError(f"{', '.join(map(repr, other))} are not TrainConfig fields; a recipe's tune step "
                              "searches how the current model is trained (lr, optimizer, epochs, "
                              "optimizer_kwargs.momentum, ...); search model arguments with `cleanai tune`")
        return value

    @field_validator("train")
    @classmethod
    def _runner_fields(cls, value: TrainConfig) -> TrainConfig:
        _refuse_runner_fields(value, "tune.train")
        return value

    @model_validator(mode="after")
    def _study_in_step(self) -> TuneStep:
        given = sorted({"run_dir", "storage", "keep_models"} & self.model_fields_set)
        if given:
            raise ConfigError(f"{', '.join(given)} are set by the recipe runner (the study lives in the step's "
                              "folder and the best parameters are trained again as its model); remove them")
        return self

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        base = _train_only(self.train).model_copy(update={"seed": ctx.seed if self.train.seed is None
                                                          else self.train.seed, "progress": False})
        fields = self.model_dump(include=set(TuneConfig.model_fields) & self.model_fields_set)
        config = TuneConfig.model_validate({**fields, "run_dir": out / "study", "keep_models": 0,
                                            "seed": ctx.seed if self.seed is None else self.seed,
                                            "progress": ctx.progress})
        spec = TrainingSpec(lambda hp: ctx.input_model(), ctx.loaders.train, ctx.loaders.val, base, self.metric)
        result = tune(spec, self.space, config)
        save_result(result, out)
        model = ctx.input_model()
        seed_everything(base.seed)
        refit = _train_config(train_config_for(base, result.best_params), ctx, out)
        trainer = Trainer(model, config=refit)
        history = trainer.fit(ctx.loaders.train, ctx.loaders.val)
        scores = trainer.evaluate(ctx.loaders.test)
        ctx.save_model(model, out)
        write_json(out / "history.json", history.to_dict())
        write_json(out / "test_metrics.json", scores)
        return {"test": scores, "best_params": result.best_params, "best_value": result.best_value,
                "trials": len(result.trials)}


class PruneStep(StepConfig, PruneConfig):
    """`prune`: `prune_and_finetune` (PruneConfig fields; `finetune`: fine-tuning after each step, with KD from
    `teacher` when given, weighted by `alpha`, softened by `temperature` and on `augment` edited variants of each
    training text as in a distill step)."""

    type: Literal["prune"]
    finetune: TrainConfig | None = None
    teacher: str | None = None
    alpha: float | None = None
    temperature: float | None = None
    augment: int | None = Field(None, ge=1)

    @field_validator("finetune")
    @classmethod
    def _runner_fields(cls, value: TrainConfig | None) -> TrainConfig | None:
        if value is not None:
            _refuse_runner_fields(value, "prune.finetune")
        return value

    @model_validator(mode="after")
    def _teacher_needs_finetune(self) -> PruneStep:
        if self.teacher is not None and self.finetune is None:
            raise ConfigError("teacher distils during fine-tuning, but finetune is not set; add finetune: {epochs: N}")
        kd = {name: value for name in ("alpha", "temperature", "augment") if (value := getattr(self, name)) is not None}
        if kd and self.teacher is None:
            raise ConfigError(f"{', '.join(f'{k} {v}' for k, v in kd.items())}: settings of distillation from a "
                              "teacher, but this prune step has none; add teacher: model (or an earlier step's id), or "
                              "remove them")
        self.distill_config()  # alpha or temperature out of range: refused with the reason
        return self

    def distill_config(self) -> DistillConfig | None:
        """The KD settings of the fine-tunes (None without a teacher)."""
        if self.teacher is None:
            return None
        return DistillConfig(**{name: value for name in ("alpha", "temperature")
                                if (value := getattr(self, name)) is not None})

    def references(self) -> dict[str, str | None]:
        return {"teacher": self.teacher}

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        model = ctx.input_model()
        config = PruneConfig.model_validate(self.model_dump(include=set(PruneConfig.model_fields)))
        tune = None if self.finetune is None else _train_config(self.finetune, ctx, out)
        teacher = None if self.teacher is None else ctx.model_of(self.teacher)
        seed_everything(ctx.seed)
        kd = self.distill_config()
        train = ctx.train_loader(self.augment)
        pruned, report, history = prune_and_finetune(model, ctx.example, config, train, ctx.loaders.val, tune,
                                                     calib=ctx.loaders.train, teacher=teacher, distill_config=kd)
        scores = Trainer(pruned, config=TrainConfig(progress=False)).evaluate(ctx.loaders.test)
        ctx.save_model(pruned, out)
        write_json(out / "prune_report.json", report.to_dict())
        write_json(out / "prune_history.json", history.to_dict())
        write_json(out / "test_metrics.json", scores)
        return {"test": scores, "params_ratio": report.params_ratio, "macs_ratio": report.macs_ratio,
                **({} if kd is None else {"kd": {"alpha": kd.alpha, "temperature": kd.temperature}}),
                **_transfer_size(self.augment, train)}


class DistillStep(StepConfig, DistillConfig):
    """`distill`: train the current model as the student of `teacher` (an earlier model step) with `distill`; with
    `student_layers`, the student is those encoder layers of the current model (`keep_layers`, text models); with
    `augment`, on the training split plus that many edited, unlabelled variants of each text (`augment_texts`)."""

    type: Literal["distill"]
    teacher: str
    student_layers: list[int] | None = Field(None, min_length=1)
    augment: int | None = Field(None, ge=1)

    @field_validator("train")
    @classmethod
    def _runner_fields(cls, value: TrainConfig) -> TrainConfig:
        _refuse_runner_fields(value, "distill.train")
        return value

    def references(self) -> dict[str, str | None]:
        return {"teacher": self.teacher}

    def _student(self, ctx: StepContext) -> nn.Module:
        model = ctx.input_model()
        return model if self.student_layers is None else keep_layers(model, self.student_layers)

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        student = self._student(ctx)
        teacher = ctx.model_of(self.teacher)
        fields = self.model_dump(include=set(DistillConfig.model_fields) - {"train"})
        config = DistillConfig.model_validate({**fields, "train": _train_config(self.train, ctx, out)})
        seed_everything(ctx.seed)
        train = ctx.train_loader(self.augment)
        student, history = distill(student, teacher, train, ctx.loaders.val, config)
        scores = Trainer(student, config=TrainConfig(progress=False)).evaluate(ctx.loaders.test)
        ctx.save_model(student, out)  # the manifest records a cut student's depth
        write_json(out / "history.json", history.to_dict())
        write_json(out / "test_metrics.json", scores)
        return {"test": scores, **_transfer_size(self.augment, train)}


def _transfer_size(augment: int | None, train: Any) -> dict[str, int]:
    """With `augment`, how many texts the fine-tunes read (the training split and its variants), for step.json."""
    return {} if augment is None else {"train_examples": len(train.dataset)}


def _text_model(ctx: StepContext, what: str) -> TextClassifier:
    """The step's input model, refused unless it is a text model (`what` the step does to it)."""
    model = ctx.input_model()
    if not isinstance(model, TextClassifier):
        raise ConfigError(f"{what} of a text model (TextClassifier); this recipe's model is a {type(model).__name__}")
    return model


class KeepLayersStep(StepConfig):
    """`keep_layers`: only the encoder blocks `layers` (0-based, increasing) of the current text model, weights
    copied (`keep_layers`): a shallower student for the prune, finetune or distill steps after it."""

    type: Literal["keep_layers"]
    layers: list[int] = Field(min_length=1)

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        model = _text_model(ctx, "a keep_layers step cuts the encoder blocks")
        before = model.config.num_hidden_layers
        model.cut_layers(self.layers)
        ctx.save_model(model, out)
        summary = {"layers": self.layers, "of": before, "params": sum(p.numel() for p in model.parameters())}
        write_json(out / "keep_layers.json", summary)
        return summary


class VocabularyStep(StepConfig):
    """`vocabulary`: only the embedding rows of the training split's tokens plus the tokenizer's first `keep_first`
    ids (`prune_vocabulary(remap="model")`: the tokenizer stays; other tokens read the kept row `fallback` picks:
    the nearest in the original embedding, or their longest kept prefix's); after training."""

    type: Literal["vocabulary"]
    keep_first: int = Field(0, ge=0)
    fallback: Literal["nearest", "prefix"] = "nearest"

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        model = _text_model(ctx, "a vocabulary step prunes the embedding")
        small = prune_vocabulary(model, texts_of(ctx.run.splits.train), keep_first=self.keep_first, remap="model",
                                 fallback=self.fallback)
        scores = Trainer(small, config=TrainConfig(progress=False)).evaluate(ctx.loaders.test)
        ctx.save_model(small, out)
        summary = {"tokens": small.hf_model.get_input_embeddings().num_embeddings,
                   "of": model.hf_model.get_input_embeddings().num_embeddings, "fallback": self.fallback,
                   "test": scores}
        write_json(out / "vocabulary.json", summary)
        return summary


class FuseStep(StepConfig):
    """`fuse`: fold BatchNorm into the layer before it (`fuse_conv_bn`, checked on the example inputs)."""

    type: Literal["fuse"]
    atol: float = Field(1e-5, gt=0)

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        model = ctx.input_model()
        before = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        fused = fuse_conv_bn(model, example_inputs=ctx.example, atol=self.atol)
        after = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
        save_safetensors(fused, out / "model.safetensors")
        summary = {"batchnorm_before": before, "batchnorm_after": after}
        write_json(out / "fuse.json", summary)
        return summary

    def load_model(self, out: Path, ctx: StepContext) -> nn.Module:
        """The folded structure is rebuilt from the input model, then the weights this step wrote are loaded."""
        return load_weights(fuse_conv_bn(ctx.input_model(), example_inputs=ctx.example, atol=self.atol),
                            out / "model.safetensors").eval()


class ExportStep(StepConfig):
    """`export`: the current model as one ONNX file (`export_onnx`, parity-checked), optionally ORT-optimised."""

    type: Literal["export"]
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    opset: int | None = Field(None, ge=7)
    optimize: Literal["basic", "extended", "all"] | None = None

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        result = export_onnx(ctx.input_model().eval(), ctx.example, out / "model.onnx", exporter=self.exporter,
                             opset=self.opset, dynamic_sequence=ctx.is_text)
        if self.optimize is not None:
            optimize_onnx(result.path, out / "model.opt.onnx", level=self.optimize)
        summary = {"exporter": result.exporter, "opset": result.opset, "max_abs_diff": result.max_abs_diff,
                   "seconds": result.seconds}
        write_json(out / "export.json", summary)
        return summary

    def artifact(self, out: Path, name: str) -> Runner:
        return OrtRunner(out / ("model.opt.onnx" if self.optimize is not None else "model.onnx"), name=name)


class QuantizeStep(StepConfig, QuantConfig):
    """`quantize`: the current model through `quantize` (QuantConfig fields, or a CPU `preset` they override)."""

    type: Literal["quantize"]
    preset_name: Annotated[str, AfterValidator(PRESETS.known)] | None = Field(None, alias="preset")  # a field named `preset` would hide QuantConfig.preset

    @model_validator(mode="after")
    def _deployable(self) -> QuantizeStep:
        if self.backend != "onnxruntime":
            raise ConfigError(f"backend {self.backend!r}: a recipe keeps what it quantizes as a file to deploy and "
                              "measure, which is the ONNX Runtime backend's artifact; use backend: onnxruntime")
        return self

    def config(self) -> QuantConfig:
        """The QuantConfig this step applies (the preset's, with the fields the recipe sets on top)."""
        fields = self.model_dump(include=set(QuantConfig.model_fields) & self.model_fields_set)
        if self.preset_name is None:
            return QuantConfig.model_validate(fields)
        return QuantConfig.preset(self.preset_name, is_static=self.mode != "dynamic", **fields)

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        config = self.config()
        seed_everything(ctx.seed)
        runner = quantize(ctx.input_model(), config, calib=ctx.loaders.train, example_inputs=ctx.example,
                          name="model")
        os.replace(runner.save(out), out / "model.onnx")  # one name, whatever the runner's file name says
        check = getattr(runner, "quant_check", None)
        write_json(out / "quant_config.json", config.model_dump(mode="json"))
        write_json(out / "quant_check.json", None if check is None else check.to_dict())
        return {"quant_check": None if check is None else check.to_dict()}

    def artifact(self, out: Path, name: str) -> Runner:
        """The int8 ONNX file, carrying the check `quantize` made of it against fp32."""
        runner = OrtRunner(out / "model.onnx", name=name)
        check = json.loads((out / "quant_check.json").read_text(encoding="utf-8"))
        runner.quant_check = None if check is None else QuantCheck(**check)  # type: ignore[attr-defined]
        return runner


class BenchmarkStep(StepConfig, BenchmarkConfig):
    """`benchmark` (last): `compare_runners` over the baseline and every variant's model and artifacts."""

    type: Literal["benchmark"]
    baseline: str | None = None  # an earlier model step (default: the first one), or "model": the recipe's model
    repeats: int = Field(3, ge=1)
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"])

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        for name in value:
            METRICS.get(name)
        return value

    def references(self) -> dict[str, str | None]:
        return {"baseline": self.baseline}

    def run(self, ctx: StepContext, out: Path) -> dict[str, Any]:
        config = BenchmarkConfig.model_validate({**self.model_dump(include=set(BenchmarkConfig.model_fields)),
                                                 "progress": ctx.progress})
        runners = ctx.benchmark_runners()
        rows = compare_runners(runners, ctx.loaders.test, config, repeats=self.repeats, metrics=self.metrics,
                               show=False)
        save_rows(rows, out / "results.json")
        save_rows(rows, out / "results.csv")
        plot_metrics(rows, out / "metrics.png", title=f"{ctx.recipe_name}: accuracy vs latency")
        return {"rows": len(rows)}


STEPS: Registry[type[StepConfig]] = Registry("recipe step")
for _cls in (TrainStep, TuneStep, PruneStep, DistillStep, KeepLayersStep, VocabularyStep, FuseStep, ExportStep, QuantizeStep, BenchmarkStep):
    for _name in _cls.model_fields["type"].annotation.__args__:  # type: ignore[union-attr]
        STEPS.register(_name, _cls)


def list_steps() -> list[str]:
    """Step types a recipe may use."""
    return STEPS.names()
