"""`PruneConfig`: everything structured pruning needs besides the model and data, validated at load time.

See `cleanai.pruning.structured` for what `ratio`, `scope` and `iterative_steps` mean.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from cleanai.pruning.criteria import CRITERIA, create_criterion
from cleanai.errors import ConfigError


def _check_ratio(value: float, what: str) -> float:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{what} must be in [0, 1) (the fraction of channels removed; 1 would remove all), "
                         f"got {value!r}")
    return value


class PruneConfig(BaseModel):
    """Everything `prune()` needs besides the model and data (`ratio`: see `cleanai.pruning.structured`)."""

    model_config = ConfigDict(extra="forbid")

    criterion: Annotated[str, AfterValidator(CRITERIA.known)] = "magnitude"
    criterion_kwargs: dict[str, Any] = Field(default_factory=dict)
    ratio: float = 0.3
    head_ratio: float | None = None  # attention heads removed (default: `ratio`)
    num_heads: dict[str, int] = Field(default_factory=dict)  # attention module name -> heads, for unrecognised models
    scope: Literal["local", "global"] = "local"
    iterative_steps: int = Field(1, ge=1)
    ratio_dict: dict[str, float] = Field(default_factory=dict)  # module name -> ratio for the groups inside it
    max_layer_ratio: float = 1.0  # no group loses more than this fraction of its channels
    residual: Literal["prune", "keep"] = "prune"  # "keep": leave channels that pass through residual additions whole
    ignored_layers: list[str] = Field(default_factory=list)
    round_to: int | None = Field(None, ge=1)  # kept channels: the nearest multiple of this (a layer may stay whole)
    calib_batches: int = Field(8, ge=1)  # calibration batches read by data-driven criteria (and recalibrate_bn)
    recalibrate_bn: bool = False  # after each step, re-estimate BatchNorm statistics on the calibration batches
    seed: int = 0
    inplace: bool = False

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        return _check_ratio(value, "ratio")

    @field_validator("head_ratio")
    @classmethod
    def _head_ratio(cls, value: float | None) -> float | None:
        return None if value is None else _check_ratio(value, "head_ratio")

    @field_validator("num_heads")
    @classmethod
    def _num_heads(cls, value: dict[str, int]) -> dict[str, int]:
        for name, heads in value.items():
            if not name:
                raise ConfigError("num_heads keys name attention modules (model.named_modules()); got an empty name")
            if isinstance(heads, bool) or heads < 2:
                raise ConfigError(f"num_heads[{name!r}] must be the module's head count, an integer >= 2 (one head "
                                 f"cannot be pruned whole), got {heads!r}")
        return value

    @field_validator("ratio_dict")
    @classmethod
    def _ratio_dict(cls, value: dict[str, float]) -> dict[str, float]:
        for name, ratio in value.items():
            _check_ratio(ratio, f"ratio_dict[{name!r}]")
        return value

    @model_validator(mode="after")
    def _criterion_kwargs(self) -> PruneConfig:
        try:  # building a criterion is cheap (no data): bad options fail here, at load time, with their name
            create_criterion(self.criterion, **self.criterion_kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"criterion_kwargs {self.criterion_kwargs!r} for criterion {self.criterion!r}: {exc}") from exc
        return self

    @field_validator("max_layer_ratio")
    @classmethod
    def _max_layer_ratio(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"max_layer_ratio must be in (0, 1], got {value!r}")
        return value
