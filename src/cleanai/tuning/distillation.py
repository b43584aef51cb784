"""The book's distillation search: epochs, alpha and temperature tuned over `cleanai.distillation.distill`.

The teacher's logits are cached on disk (`DistillConfig.cache_dir`, default `<run_dir>/teacher-logits`), so
only the first trial runs the teacher; later trials read its logits.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cleanai.distillation import DistillConfig, distill
from cleanai.training import TrainConfig
from cleanai.tuning.config import TuneConfig
from cleanai.tuning.objectives import MetricObjective, TrialReporter, train_config_for
from cleanai.tuning.space import HyperParameters, SearchSpace
from cleanai.tuning.tune import TuneResult, TuneTrial, tune

# As in "Natural Language Processing with Transformers", chapter 8 (its best: 10 epochs, alpha 0.1247, T 7).
DISTILLATION_SPACE: dict[str, dict[str, Any]] = {
    "epochs": {"type": "int", "low": 5, "high": 10},
    "alpha": {"type": "float", "low": 0.0, "high": 1.0},
    "temperature": {"type": "int", "low": 2, "high": 20},
}


def _default_config() -> DistillConfig:
    return DistillConfig(train=TrainConfig(progress=False))


@dataclass
class DistillationSpec(MetricObjective):
    """Distil `student` from `teacher` with the trial's `alpha`, `temperature` and TrainConfig fields (`epochs`,
    `lr`, ...) over `config`; score the student on `val` by `metric`, reported each epoch for the pruner."""

    student: nn.Module
    teacher: nn.Module
    train: Iterable[Any]
    val: Iterable[Any]
    config: DistillConfig = field(default_factory=_default_config)
    metric: str = "val_accuracy"

    def build(self, hp: HyperParameters) -> nn.Module:
        """The student's architecture (for `TuneResult.get_best_models`); its weights come from the kept file."""
        return copy.deepcopy(self.student)

    def __call__(self, trial: TuneTrial) -> float:
        config = self.config_for(trial.params, trial.run_dir / "teacher-logits")
        student, history = distill(self.student, self.teacher, self.train, self.val, config,
                                   callbacks=[TrialReporter(trial, self.metric)])
        trial.keep_model(student)
        return history.last[self.metric]

    def config_for(self, values: Mapping[str, Any], cache_dir: Any) -> DistillConfig:
        """The DistillConfig of one trial: alpha/temperature set, TrainConfig fields applied, the cache on."""
        fields = self.config.model_dump()
        fields.update({k: v for k, v in values.items() if k in ("alpha", "temperature")})
        fields["train"] = train_config_for(self.config.train, values)
        fields["cache_dir"] = self.config.cache_dir or cache_dir
        fields["inplace"] = False  # every trial starts from the same student
        return DistillConfig.model_validate(fields)


def search_distillation(student: nn.Module, teacher: nn.Module, train: Iterable[Any], val: Iterable[Any],
                        config: DistillConfig | None = None,
                        space: SearchSpace | Mapping[str, Any] | None = None,
                        tune_config: TuneConfig | Mapping[str, Any] | None = None) -> TuneResult:
    """Search epochs, alpha and temperature (default: the book's space, 20 TPE trials) for distilling `student`."""
    spec = DistillationSpec(student, teacher, train, val, config or _default_config())
    return tune(spec, space if space is not None else DISTILLATION_SPACE, tune_config or TuneConfig(n_trials=20))
