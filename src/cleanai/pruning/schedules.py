"""Sparsity schedules (TF-MOT's ConstantSparsity and PolynomialDecay): how sparse a model should be at each step.

Shared by magnitude (`cleanai.pruning.unstructured`) and movement (`cleanai.pruning.movement`) pruning.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cleanai.errors import ConfigError


def check_sparsity(value: float, what: str = "sparsity") -> float:
    """Raise unless `value` is in [0, 1): the fraction of weights set to zero."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{what} must be in [0, 1) (the fraction of weights set to zero; 1 would remove them all), "
                         f"got {value!r}")
    return value

class ConstantSparsity(BaseModel):
    """TF-MOT's ConstantSparsity: prune to the target at `begin_step`, then re-apply it every `frequency` steps
    until `end_step` (None: until training ends)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["constant"] = "constant"
    begin_step: int = Field(0, ge=0)
    end_step: int | None = Field(None, ge=0)
    frequency: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ConstantSparsity:
        if self.end_step is not None and self.end_step < self.begin_step:
            raise ConfigError(f"end_step ({self.end_step}) must be >= begin_step ({self.begin_step}), "
                             "or None to keep pruning until training ends")
        return self

    def sparsity_at(self, step: int, target: float) -> float:
        """The sparsity the schedule asks for at `step` (the target, whatever the step)."""
        return target

    def should_update(self, step: int) -> bool:
        """True on the steps where masks are recomputed: begin_step, then every `frequency` steps."""
        in_range = step >= self.begin_step and (self.end_step is None or step <= self.end_step)
        return in_range and (step - self.begin_step) % self.frequency == 0


class PolynomialDecay(BaseModel):
    """TF-MOT's PolynomialDecay (Zhu & Gupta 2017), from `initial_sparsity` to the target:

        s(t) = s_final + (s_initial - s_final) * (1 - p)^power
        p    = clip((t - begin_step) / (end_step - begin_step), 0, 1)

    Masks are updated at begin_step and every `frequency` steps up to end_step, as in TF-MOT, and also at end_step
    itself (TF-MOT skips it when end_step - begin_step is not a multiple of `frequency`, never reaching the target).
    With power=3 and frequency=1 this is the cubic schedule of movement pruning, begin_step being its warm-up.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["polynomial"] = "polynomial"
    initial_sparsity: float = 0.0
    begin_step: int = Field(0, ge=0)
    end_step: int = Field(..., ge=1)
    power: float = Field(3.0, gt=0)
    frequency: int = Field(100, ge=1)

    @field_validator("initial_sparsity")
    @classmethod
    def _initial(cls, value: float) -> float:
        return check_sparsity(value, "initial_sparsity")

    @model_validator(mode="after")
    def _ordered(self) -> PolynomialDecay:
        if self.end_step <= self.begin_step:
            raise ConfigError(f"end_step ({self.end_step}) must be greater than begin_step ({self.begin_step}): "
                             "the sparsity rises from initial_sparsity to the target between them")
        return self

    def sparsity_at(self, step: int, target: float) -> float:
        """s(t) of the formula above, `target` being the final sparsity."""
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return target + (self.initial_sparsity - target) * (1.0 - p) ** self.power

    def should_update(self, step: int) -> bool:
        """True at begin_step, every `frequency` steps after it, and at end_step."""
        if not self.begin_step <= step <= self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step


Schedule = Annotated[ConstantSparsity | PolynomialDecay, Field(discriminator="kind")]
