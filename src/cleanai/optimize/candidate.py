"""One candidate pipeline (keep encoder layers -> prune -> fine-tune -> prune the vocabulary -> fold BN -> export
or quantize) as data: the search space it is sampled from, the per-layer ratios one scale parameter derives
from the sensitivity scan, and the recipe steps that rerun it. The trials and the written recipe use these same configs, so what was measured is what reruns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cleanai._platform import channel_multiple
from cleanai.distillation import DistillConfig
from cleanai.optimize.config import OptimizeConfig
from cleanai.pruning import PruneConfig, SensitivityResult
from cleanai.quantization import QuantConfig
from cleanai.recipes.steps import SOURCE_MODEL
from cleanai.training import TrainConfig

_EPSILON = 1e-3  # floor of a layer's sensitivity, so an insensitive layer gets a finite weight
_RUNNER_FIELDS = {"log_dir", "checkpoint_dir", "resume", "progress"}  # a recipe's runner sets these


def _step(high: float, unit: float) -> float:
    """A grid step near `unit` that divides [0, high] into whole steps, rounded so Optuna's decimal check of the
    range agrees (0.6 / 12 is 0.04999... in floating point)."""
    return round(high / max(1, round(high / unit)), 9)


@dataclass(frozen=True)
class Encoder:
    """A text model's stack of transformer blocks: its module path (`hf_model.bert.encoder.layer`) and depth."""

    path: str
    depth: int

    def layers(self, depth: int) -> list[int]:
        """`depth` of the blocks, spread evenly with the first and the last kept (6 -> 3: 0, 2, 5; 6 -> 4: 0, 2,
        3, 5), as the distillation literature initialises a shallower student."""
        if depth >= self.depth:
            return list(range(self.depth))
        return [round(i * (self.depth - 1) / max(1, depth - 1)) for i in range(depth)]

    def renamed(self, ratios: dict[str, float], layers: list[int]) -> dict[str, float]:
        """Per-layer ratios named in the full model, renamed for the model cut to `layers` (block k becomes block
        `layers.index(k)`); the dropped blocks' entries go."""
        index = {k: i for i, k in enumerate(layers)}
        out = {}
        for name, ratio in ratios.items():
            if name.startswith(self.path + "."):
                block, _, rest = name[len(self.path) + 1:].partition(".")
                if int(block) not in index:
                    continue
                name = f"{self.path}.{index[int(block)]}" + (f".{rest}" if rest else "")
            out[name] = ratio
        return out


def _shallower(config: OptimizeConfig, encoder: Encoder | None) -> list[int]:
    """The depths of `config.depths` below the model's own (none for a model without an encoder)."""
    return [] if encoder is None else sorted({d for d in config.depths if d < encoder.depth}, reverse=True)


def starting_points(config: OptimizeConfig, encoder: Encoder | None = None) -> list[dict[str, Any]]:
    """The first trials of every search, so it starts where each single technique would: int8 without pruning,
    half the largest ratio spread evenly in one step, and for text models each shallower student of `depths`
    (deepest first) and the largest vocabulary of `vocab_keep_first`. A text model's combinations come right after
    int8 (a short TPE search rarely samples them, and a search cut short by its time budget has tried them): every
    technique at once (the deepest of those students with that vocabulary, pruned at the half ratio), then that
    student and vocabulary unpruned (the hand-built pipeline's combination). Trained points use KD from the
    original when the search allows it, and int8 when the search quantizes, per channel (the hand-built pipeline's
    granularity: per-tensor int8 costs accuracy and then fp32 fallbacks, which cost size)."""
    int8 = [mode for mode in config.quant_modes if mode != "none"]
    quant: dict[str, Any] = ({"quant": "static" if "static" in int8 else int8[0], "per_channel": True} if int8
                             else {"quant": "none"})
    kd = {"kd": True} if True in config.kd else {}
    depths = _shallower(config, encoder)
    vocab = config.vocab_keep_first if encoder is not None else []
    # one technique each: the text-model choices a point does not try are fixed at "none", not sampled
    full = {**({"depth": encoder.depth} if depths and encoder is not None else {}), **({"vocab": None} if vocab else {})}
    half: dict[str, Any] = {}  # half the largest ratio, every layer alike, in one step
    if config.max_ratio:
        step = _step(config.max_ratio, 0.05)
        half = {"ratio": round(round(config.max_ratio / 2 / step) * step, 9), "scale": 0.0, "steps": 1, **kd}
    cut = {**({"depth": depths[0]} if depths else {}), **({"vocab": max(vocab)} if vocab else {})}
    points: list[dict[str, Any]] = [{**full, "ratio": 0.0, **quant}] if int8 else []
    if half and cut:
        points.append({**full, **cut, **half, **quant})
    if vocab and depths:
        points.append({**cut, "ratio": 0.0, **kd, **quant})
    if half:
        points.append({**full, **half, **quant})
    points += [{**full, "depth": depth, "ratio": 0.0, **kd, **quant} for depth in depths]
    if vocab:
        points.append({**full, "ratio": 0.0, "vocab": max(vocab), **quant})
    return points


def search_space(config: OptimizeConfig, encoder: Encoder | None = None) -> dict[str, Any]:
    """The tune() space: encoder depth and vocabulary (text models with `depths` / `vocab_keep_first`), pruning,
    fine-tuning, folding and quantization choices (quantization options only when a quantization mode is
    sampled)."""
    space: dict[str, Any] = {
        "criterion": {"type": "categorical", "choices": list(config.criteria)},
        "ratio": {"type": "float", "low": 0.0, "high": config.max_ratio,
                  "step": _step(config.max_ratio, 0.05) if config.max_ratio else None},
        "scale": {"type": "float", "low": 0.0, "high": config.max_scale,
                  "step": round(config.max_scale / 8, 9) if config.max_scale else None},
        "steps": {"type": "int", "low": 1, "high": config.max_steps},
        "kd": {"type": "categorical", "choices": list(config.kd)},
        "fold_bn": {"type": "categorical", "choices": list(config.fold_bn)},
        "quant": {"type": "categorical", "choices": list(config.quant_modes)},
    }
    depths = _shallower(config, encoder)
    if depths and encoder is not None:
        space["depth"] = {"type": "categorical", "choices": [encoder.depth, *depths]}
    if config.finetune_lrs:
        space["lr"] = {"type": "categorical", "choices": sorted(set(config.finetune_lrs))}
    if config.vocab_keep_first and encoder is not None:  # None: the whole vocabulary
        space["vocab"] = {"type": "categorical", "choices": [None, *sorted(set(config.vocab_keep_first))]}
    if config.max_ratio == 0:
        space["ratio"] = {"type": "categorical", "choices": [0.0]}
    if config.max_scale == 0:
        space["scale"] = {"type": "categorical", "choices": [0.0]}
    if "static" in config.quant_modes:
        space["calibration"] = {"type": "categorical", "choices": list(config.calibrations),
                                "when": {"quant": ["static"]}}
    quantized = [m for m in config.quant_modes if m != "none"]
    if quantized:
        space["per_channel"] = {"type": "categorical", "choices": [True, False], "when": {"quant": quantized}}
    return space


def layer_ratios(scan: SensitivityResult | None, ratio: float, scale: float, cap: float) -> dict[str, float]:
    """Per-layer ratios around `ratio`: layer l gets ratio * w_l / mean(w), w_l = sensitivity_l ** -scale.

    A layer's sensitivity is its mean accuracy drop over the scanned ratios, floored at a tenth of the layers'
    mean (so one layer that measured no drop does not take all the pruning); scale 0 prunes every layer alike
    and a larger scale moves pruning from sensitive layers to robust ones; no layer exceeds `cap`. Without a
    scan (or at ratio 0) there is no per-layer split: {}.
    """
    if scan is None or ratio == 0 or not scan.layers:
        return {}
    drops = {layer.name: sum(max(0.0, p.drop) for p in layer.points) / len(layer.points) for layer in scan.layers}
    floor = max(_EPSILON, sum(drops.values()) / len(drops) / 10)
    weights = {name: max(floor, s) ** -scale for name, s in drops.items()}
    mean = sum(weights.values()) / len(weights)
    return {name: round(min(cap, ratio * w / mean), 4) for name, w in weights.items()}


@dataclass(frozen=True)
class Candidate:
    """The choices of one trial, and the configs that carry them out."""

    criterion: str
    ratio: float
    scale: float
    steps: int
    kd: bool
    fold_bn: bool
    quant: str
    calibration: str | None = None
    per_channel: bool = True
    depth: int | None = None  # encoder blocks kept (text models); None: all of them
    vocab: int | None = None  # vocabulary pruning's keep_first (text models); None: the whole vocabulary
    lr: float | None = None  # the fine-tunes' learning rate (OptimizeConfig.finetune_lrs); None: finetune.lr

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Candidate:
        return cls(criterion=params["criterion"], ratio=round(float(params["ratio"]), 4),
                   scale=round(float(params["scale"]), 4),
                   steps=int(params["steps"]), kd=bool(params["kd"]), fold_bn=bool(params["fold_bn"]),
                   quant=params["quant"], calibration=params.get("calibration"),
                   per_channel=bool(params.get("per_channel", True)),
                   depth=None if params.get("depth") is None else int(params["depth"]),
                   vocab=None if params.get("vocab") is None else int(params["vocab"]),
                   lr=None if params.get("lr") is None else float(params["lr"]))

    @property
    def prunes(self) -> bool:
        return self.ratio > 0

    def finetune_config(self, config: OptimizeConfig) -> TrainConfig:
        """`config.finetune` at this candidate's learning rate: what every fine-tune of its trial and rerun uses."""
        return config.finetune if self.lr is None else config.finetune.model_copy(update={"lr": self.lr})

    def cut(self, encoder: Encoder | None) -> list[int] | None:
        """The encoder blocks this candidate keeps when it drops some (`Encoder.layers`), else None."""
        if encoder is None or self.depth is None or self.depth >= encoder.depth:
            return None
        return encoder.layers(self.depth)

    def describe(self, encoder: Encoder | None = None) -> str:
        """The pipeline in words; KD and the learning rate only where something trains (a cut or pruning: the
        model's own depth unpruned is not fine-tuned). Without `encoder`, a `depth` is read as a cut."""
        cuts = self.depth is not None and (encoder is None or self.cut(encoder) is not None)
        parts = [f"{self.depth} encoder layers{' (KD)' if self.kd and cuts and not self.prunes else ''}"] \
            if self.depth is not None else []
        parts += [f"prune {self.criterion} {self.ratio:.0%} (scale {self.scale:g}, {self.steps} step(s)"
                  f"{', KD' if self.kd else ''})" if self.prunes else "no pruning"]
        if self.lr is not None and (self.prunes or cuts):
            parts.append(f"fine-tune lr {self.lr:g}")
        if self.vocab is not None:
            parts.append(f"vocabulary: training tokens + first {self.vocab:,} ids")
        if self.fold_bn:
            parts.append("fold BN")
        parts.append({"none": "fp32 ONNX", "static": f"int8 static ({self.calibration}, "
                      f"{'per-channel' if self.per_channel else 'per-tensor'})",
                      "dynamic": f"int8 dynamic ({'per-channel' if self.per_channel else 'per-tensor'})"}[self.quant])
        return " -> ".join(parts)

    def prune_config(self, config: OptimizeConfig, scan: SensitivityResult | None,
                     encoder: Encoder | None = None) -> PruneConfig:
        """`config.prune` with this candidate's choices (per-layer ratios named in the model after `cut`); kept
        channels a multiple of what the artifact's kernels work in on this CPU (`channel_multiple`: 16 for
        int8, 8 for fp32 on AVX2) unless `prune.round_to` is set."""
        ratios = layer_ratios(scan, self.ratio, self.scale, config.max_layer_ratio)
        layers = self.cut(encoder)
        if layers is not None and encoder is not None:
            ratios = encoder.renamed(ratios, layers)
        round_to = config.prune.round_to or channel_multiple(int8=self.quant != "none")
        return config.prune.model_copy(update={"criterion": self.criterion, "criterion_kwargs": {},
                                               "ratio": self.ratio, "ratio_dict": ratios, "round_to": round_to,
                                               "iterative_steps": self.steps, "inplace": False})

    def distill_config(self, config: OptimizeConfig) -> DistillConfig:
        return DistillConfig(alpha=config.kd_alpha, temperature=config.kd_temperature)

    def quant_config(self, config: OptimizeConfig, fp32_layers: list[str] | None = None) -> QuantConfig | None:
        if self.quant == "none":
            return None
        fields: dict[str, Any] = {"nodes_to_exclude": list(fp32_layers or []),
                                  "calibration_batches": config.calibration_batches}  # also bounds the checks' data
        if self.quant == "static":
            fields["calibration"] = self.calibration
        # this CPU's preset: 7-bit weights where int8 dot products would saturate (AVX2 without VNNI)
        return QuantConfig.auto(self.quant == "static", per_channel=self.per_channel, **fields)

    def recipe_steps(self, config: OptimizeConfig, scan: SensitivityResult | None, *, onnx: bool,
                     fp32_layers: list[str] | None = None, encoder: Encoder | None = None) -> list[dict[str, Any]]:
        """The recipe steps that rerun this candidate with the final fine-tune (`final_epochs`), then benchmark it
        against the original model; `onnx` False: the torch model is the artifact (no export, no quantization)."""
        steps: list[dict[str, Any]] = []
        teacher = {"teacher": SOURCE_MODEL} if self.kd else {}
        layers = self.cut(encoder)

        finetune = self.finetune_config(config)

        augment = {"augment": config.kd_augment} if config.kd_augment else {}

        def train(epochs: int) -> dict[str, Any]:
            tune = {**_train(finetune), "epochs": epochs}
            return ({"type": "distill", **teacher, "alpha": config.kd_alpha, "temperature": config.kd_temperature,
                     **augment, "train": tune} if self.kd else {"type": "finetune", **tune})

        if layers is not None:
            steps.append({"type": "keep_layers", "layers": layers})
        if self.prunes:
            prune = self.prune_config(config, scan, encoder).model_dump(mode="json", exclude_defaults=True,
                                                                        exclude={"inplace"})
            kd = {"alpha": config.kd_alpha, "temperature": config.kd_temperature, **augment} if self.kd else {}
            steps.append({"type": "prune", **prune, "criterion": self.criterion, "finetune": _train(finetune),
                          **teacher, **kd})
        elif layers is not None:  # the shallower model's first fine-tune, as the trial's
            steps.append({**train(finetune.epochs), "id": "shallower"})
        if (self.prunes or layers is not None) and config.final_epochs:
            steps.append(train(config.final_epochs))
        if self.vocab is not None:
            steps.append({"type": "vocabulary", "keep_first": self.vocab, "fallback": config.vocab_fallback})
        if self.fold_bn:
            steps.append({"type": "fuse"})
        if onnx:
            steps.append({"type": "export"})
            quant = self.quant_config(config, fp32_layers)
            if quant is not None:
                steps.append({"type": "quantize", **quant.model_dump(mode="json", exclude_defaults=True)})
        steps.append({"type": "benchmark", "baseline": SOURCE_MODEL, "batch_size": 1, "threads": config.threads,
                      "runs": config.latency_runs, "throughput_runs": 0, "repeats": config.latency_rounds})
        return steps


def _train(config: TrainConfig) -> dict[str, Any]:
    """A TrainConfig as recipe fields: what differs from the defaults, without the fields the runner sets."""
    return config.model_dump(mode="json", exclude_defaults=True, exclude=_RUNNER_FIELDS)
