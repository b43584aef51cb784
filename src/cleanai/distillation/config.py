"""`DistillConfig`: every setting of one distillation run, validated when it is built."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cleanai.errors import CleanAIError, ConfigError
from cleanai.training import TrainConfig


class DistillationError(CleanAIError, ValueError):
    """Teacher and student cannot be distilled together (different labels, vocabularies or output widths)."""


class DistillConfig(BaseModel):
    """How `distill()` trains the student: the KD mix, optional intermediate losses, the training run, the cache.

    - `alpha` weighs the hard-label cross-entropy, `1 - alpha` the soft targets; `temperature` softens both
      distributions (the KL term is scaled by T^2 so its gradients keep their size).
    - `hidden_weight` / `attention_weight` > 0 add hidden-state / attention-map matching (transformer students,
      see `IntermediateLoss`); `layer_map[i]` is the teacher layer student layer i learns from (default:
      `uniform_layer_map`); `projection` maps student to teacher width ("learned" or "identity").
    - `cache_dir`: teacher logits are stored there per example (keyed by the example's content and the
      teacher's weights), so later epochs and later runs skip the teacher's forward. Only for logit KD, and
      only worth it without random augmentation (an augmented example is a new key every epoch).
    - `train`: the student's training run (epochs, optimizer, lr, scheduler, checkpoints, resume).
    """

    model_config = ConfigDict(extra="forbid")

    alpha: float = 0.5
    temperature: float = 2.0
    train: TrainConfig = Field(default_factory=TrainConfig)
    hidden_weight: float = Field(0.0, ge=0)
    attention_weight: float = Field(0.0, ge=0)
    layer_map: list[int] | None = None
    projection: Literal["learned", "identity"] = "learned"
    cache_dir: Path | None = None
    inplace: bool = False

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1] (the weight of the hard-label loss; 1 - alpha goes to the "
                             f"teacher's soft targets), got {value!r}")
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if not value > 0:
            raise ConfigError(f"temperature must be > 0 (1 keeps the logits as they are, 2-4 is usual), got {value!r}")
        return value

    @model_validator(mode="after")
    def _cache_only_for_logits(self) -> DistillConfig:
        if self.cache_dir is not None and self.intermediate:
            raise ConfigError("cache_dir caches teacher logits only, but hidden_weight/attention_weight also need the "
                             "teacher's hidden states every step; drop cache_dir or the intermediate losses")
        return self

    @property
    def intermediate(self) -> bool:
        """Whether hidden-state or attention matching is on."""
        return bool(self.hidden_weight or self.attention_weight)
