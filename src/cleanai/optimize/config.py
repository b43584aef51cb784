"""`OptimizeConfig`: the accuracy budget, the objective and what the search may try, validated when it is built."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from cleanai.errors import CleanAIError, ConfigError
from cleanai.pruning import CRITERIA, PruneConfig
from cleanai.quantization.config import CALIBRATIONS
from cleanai.training import TrainConfig
from cleanai.tuning import SAMPLERS

QUANT_MODES = ("none", "static", "dynamic")


class OptimizeError(CleanAIError, RuntimeError):
    """The search cannot give what was asked (no trial finished, the chosen pipeline failed to rerun)."""


def _finetune_default() -> TrainConfig:
    return TrainConfig(epochs=1, optimizer="adamw", lr=1e-3, progress=False)


class OptimizeConfig(BaseModel):
    """What `optimize()` searches and how it chooses.

    - `max_accuracy_drop` (points: 1.0 = one accuracy point) below the original model's accuracy on the
      validation split; `target_latency_ms` / `target_size_mb` add limits a candidate must also meet.
    - `objective`: among the candidates within budget, the lowest batch-1 latency of the deployed artifact,
      the smallest artifact, or (`pareto`) the lowest product of both relative to the fp32 ONNX model.
    - The search (a multi-objective `tune()` study: validation accuracy, latency, size) samples the pruning
      `criteria`, an overall ratio up to `max_ratio` (0: no pruning), one `max_scale`-bounded exponent that
      spreads it over the layers by their sensitivity, 1..`max_steps` iterative steps, fine-tuning with or
      without KD from the original, BatchNorm folding, and ONNX Runtime quantization (`quant_modes`,
      `calibrations`, per-channel or not; up to `max_fp32_layers` layers kept in fp32 when the budget needs it);
      for text models, `depths` adds a shallower student: that many encoder blocks kept (`keep_layers`: spread
      evenly, first and last kept), trained like a pruned candidate; `vocab_keep_first` adds vocabulary pruning
      after training: the embedding rows of the training texts' tokens plus the tokenizer's first N ids, for
      each N given (`prune_vocabulary(remap="model")`: the tokenizer stays, other tokens read the kept row
      `vocab_fallback` picks: "nearest" in the original embedding, or their longest kept "prefix"'s);
      `kd_augment` (text models) has every KD fine-tune also read that many edited, unlabelled variants of each
      training text (`augment_texts`: only the teacher's soft targets train on them), as the hand-built
      distillation of benchmarks/clinc150.py does (`--augment`).
      Pruned layers keep a multiple of the channels the artifact's kernels work in on this CPU
      (`cleanai._platform.channel_multiple`: 16 for int8, 8 for fp32 on AVX2) unless `prune.round_to` is set.
    - Fine-tuning: `finetune` (its `epochs` after each iterative step; `finetune_lrs`, when given, are the
      learning rates the search samples for it in place of `finetune.lr`), then up to `search_epochs` more,
      granted by successive halving at epochs 1, eta, eta^2...; the chosen pipeline's rerun gets `final_epochs`.
      `near_miss_margin` (points, 0: off) lets the final fine-tune judge near misses: up to `max_near_misses`
      candidates that missed the floor by at most that much in the search, and beat the choice on the objective,
      are rerun with `final_epochs` first, best objective first, without the benchmark; the first whose artifact
      then meets the floor on the validation split becomes the choice (successive halving's last rung, at the
      full budget); when none does, the choice is rerun as without them.
      The data is what the `DataSpec` names (its `subset` of the training and validation splits bounds the search and the rerun
      alike; no choice reads the test split, which the reruns' steps and the result's benchmark score).
    - Latency: median of `latency_runs` batch-1 calls on `threads` threads, on the exported artifact; a trial's
      is timed in `latency_rounds` rounds in turn with the original model and kept as their median ratio times
      the original's (the final benchmark times its rows in as many interleaved rounds).
    - The study lives in `<out>/study/study.db` (resumed by a rerun) unless `storage` (an SQLAlchemy URL such
      as postgresql://...) names a shared one; `timeout` (seconds) bounds the trials' wall time, as Optuna does
      (no trial starts after it). `time_budget` (seconds) bounds the whole call: a trial starts only while it and
      the chosen pipeline's final rerun are expected to end within it (`cleanai.optimize.budget`).
    """

    model_config = ConfigDict(extra="forbid")

    max_accuracy_drop: float = Field(1.0, ge=0)
    objective: Literal["latency", "size", "pareto"] = "latency"
    target_latency_ms: float | None = Field(None, gt=0)
    target_size_mb: float | None = Field(None, gt=0)
    out: Path = Path("runs/optimize")
    n_trials: int | None = Field(30, ge=1)
    timeout: float | None = Field(None, gt=0)
    time_budget: float | None = Field(None, gt=0)
    sampler: Annotated[str, AfterValidator(SAMPLERS.known)] = "tpe"
    seed: int = Field(0, ge=0)
    storage: str | None = None
    study_name: str = "optimize"
    criteria: list[Annotated[str, AfterValidator(CRITERIA.known)]] = Field(default_factory=lambda: ["magnitude", "taylor", "wanda", "coverage"], min_length=1)
    max_ratio: float = Field(0.6, ge=0, lt=1)
    max_scale: float = Field(1.0, ge=0)
    max_steps: int = Field(3, ge=1)
    depths: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    vocab_keep_first: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    vocab_fallback: Literal["nearest", "prefix"] = "nearest"
    kd: list[bool] = Field(default_factory=lambda: [True, False], min_length=1)
    kd_alpha: float = Field(0.5, ge=0, le=1)
    kd_temperature: float = Field(2.0, gt=0)
    kd_augment: int = Field(0, ge=0)
    fold_bn: list[bool] = Field(default_factory=lambda: [True, False], min_length=1)
    quant_modes: list[Literal["none", "static", "dynamic"]] = Field(default_factory=lambda: list(QUANT_MODES),
                                                                     min_length=1)
    calibrations: list[Literal["minmax", "entropy", "percentile"]] = Field(
        default_factory=lambda: list(CALIBRATIONS), min_length=1)
    calibration_batches: int = Field(8, ge=1)
    max_fp32_layers: int = Field(3, ge=0)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    sensitivity_ratios: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75], min_length=1)
    sensitivity_batches: int = Field(4, ge=1)
    max_layer_ratio: float = Field(0.8, gt=0, lt=1)
    finetune: TrainConfig = Field(default_factory=_finetune_default)
    finetune_lrs: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list)
    search_epochs: int = Field(3, ge=0)
    eta: int = Field(3, ge=2)
    final_epochs: int = Field(6, ge=0)
    near_miss_margin: float = Field(0.0, ge=0)
    max_near_misses: int = Field(3, ge=0)
    threads: int = Field(1, ge=1)
    latency_runs: int = Field(100, ge=5)
    latency_rounds: int = Field(5, ge=1)
    progress: bool = True

    @classmethod
    def quick(cls, **fields: Any) -> OptimizeConfig:
        """A first look in minutes: 6 trials, two criteria, at most 2 steps, one search epoch, one final epoch."""
        preset: dict[str, Any] = {"n_trials": 6, "criteria": ["magnitude", "taylor"], "max_steps": 2,
                                  "search_epochs": 1, "final_epochs": 1, "latency_runs": 20, "latency_rounds": 3,
                                  "sensitivity_ratios": [0.3, 0.6], "sensitivity_batches": 2, "max_fp32_layers": 1,
                                  "calibrations": ["minmax", "percentile"]}
        return cls.model_validate({**preset, **fields})

    @field_validator("sensitivity_ratios")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < r < 1 for r in value):
            raise ConfigError(f"sensitivity_ratios must be fractions in (0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OptimizeConfig:
        if self.n_trials is None and self.timeout is None and self.time_budget is None:
            raise ConfigError("n_trials, timeout and time_budget are all unset, so the search would never end; set "
                              "one of them")
        if self.final_epochs < self.search_epochs:
            raise ConfigError(f"final_epochs ({self.final_epochs}) is below search_epochs ({self.search_epochs}): the "
                              "chosen pipeline's final fine-tune must be at least as long as a trial's")
        return self

    @property
    def accuracy_budget(self) -> float:
        """The budget as a fraction of accuracy (1.0 point -> 0.01)."""
        return self.max_accuracy_drop / 100.0
