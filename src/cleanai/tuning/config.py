"""`TuneConfig`: every setting of one search, validated when it is built."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from cleanai.errors import CleanAIError, ConfigError
from cleanai.registry import check_kwargs
from cleanai.tuning.samplers import PRUNERS, SAMPLERS

Direction = Literal["minimize", "maximize"]


class TuningError(CleanAIError, RuntimeError):
    """A search cannot give what was asked (no trial finished, a storage cannot be reached, a study does not fit)."""


class TuneConfig(BaseModel):
    """How `tune()` searches.

    - `sampler` / `pruner` are names (`list_samplers()`, `list_pruners()`) with their keyword arguments in
      `sampler_kwargs` / `pruner_kwargs`; `seed` goes to the sampler.
    - `n_trials` counts the study's finished trials (complete, pruned or failed; a killed worker's trial is
      retried and counted once), across resumes and workers; `timeout` (seconds) bounds this call. One of
      them is needed. Several workers may overshoot `n_trials` by the trials they had started.
    - `max_steps`: the search's resource budget, as Hyperband counts it: the trials together report at most this
      many steps (`trial.report`; one per epoch for a training spec). The trial that reaches it is stopped
      there (pruned, `user_attrs["stopped_by"] == "max_steps"`) and no new trial starts. Single objective only;
      an objective that reports no steps is refused after its first trial (the budget would never be spent).
    - `directions`: one (`"maximize"`) or several (multi-objective; the result is a Pareto front). Unset: the
      objective's own `direction` (a training spec maximises accuracy, minimises a loss), else "minimize".
    - `run_dir`: the search's folder (study.db, kept model weights); `storage` (an SQLAlchemy URL such as
      `postgresql://user:pass@host/db`) overrides the SQLite file there, `study_name` names the study in it.
      Neither: an in-memory study and a temporary folder, removed with the result.
    - `keep_models`: weights of the best this-many trials (the Pareto front when multi-objective) stay on disk.
    - `first_trials`: parameter sets tried before the sampler's own (Optuna's `enqueue_trial`), e.g. known good
      settings to start from; parameters left out are sampled. A resumed study does not queue them again.
    - `heartbeat_interval` / `grace_period` (seconds): a running trial whose worker stopped beating for the
      grace period is failed and retried up to `max_retry` times (persistent storages only).
    """

    model_config = ConfigDict(extra="forbid")

    sampler: Annotated[str, AfterValidator(SAMPLERS.known)] = "tpe"
    sampler_kwargs: dict[str, Any] = Field(default_factory=dict)
    pruner: Annotated[str, AfterValidator(PRUNERS.known)] = "none"
    pruner_kwargs: dict[str, Any] = Field(default_factory=dict)
    n_trials: int | None = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    n_jobs: int = Field(1, ge=1)
    directions: list[Direction] | None = None
    seed: int | None = None
    run_dir: Path | None = None
    storage: str | None = None
    study_name: str = "cleanai"
    keep_models: int = Field(3, ge=0)
    heartbeat_interval: int = Field(30, ge=1)
    grace_period: int | None = Field(None, ge=1)
    max_retry: int = Field(2, ge=0)
    first_trials: list[dict[str, Any]] = Field(default_factory=list)
    progress: bool = True

    @field_validator("directions", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if value is not None and len(value) == 0:
            raise ConfigError("directions is empty; give 'minimize', 'maximize' or a list of them")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TuneConfig:
        for field, registry, name, kwargs in (("sampler_kwargs", SAMPLERS, self.sampler, self.sampler_kwargs),
                                              ("pruner_kwargs", PRUNERS, self.pruner, self.pruner_kwargs)):
            try:
                check_kwargs(registry.kind, name, registry.get(name), kwargs, complete=False)
            except TypeError as exc:
                raise ConfigError(f"{field}: {exc}") from None
        if self.n_trials is None and self.timeout is None and self.max_steps is None:
            raise ConfigError("n_trials, timeout and max_steps are all unset, so the search would never end; set one "
                             "of them")
        if self.directions is not None and len(self.directions) > 1 and self.pruner != "none":
            raise ConfigError(f"pruner {self.pruner!r} needs one objective (Optuna prunes single-objective studies "
                             f"only), but directions has {len(self.directions)}; use pruner='none'")
        if self.directions is not None and len(self.directions) > 1 and self.max_steps is not None:
            raise ConfigError(f"max_steps counts the steps trials report, which multi-objective studies do not "
                             f"record, but directions has {len(self.directions)}; use n_trials or timeout")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"grace_period ({self.grace_period}) must exceed heartbeat_interval "
                             f"({self.heartbeat_interval}), else live trials are taken for dead")
        return self
