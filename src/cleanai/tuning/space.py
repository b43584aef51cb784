"""Search spaces as data (a dict or a YAML file) and as Keras-Tuner-like calls (`hp.Int`, `hp.Float`, `hp.Choice`).

    lr:        {type: float, low: 1.0e-4, high: 0.1, log: true}
    width:     {type: int, low: 8, high: 64, step: 8}
    optimizer: {type: categorical, choices: [sgd, adamw], registry: optimizers}
    momentum:  {type: float, low: 0.0, high: 0.99, when: {optimizer: sgd}}   # only sampled when optimizer is sgd
    loss:      {type: categorical, registry: losses}                          # every registered loss

Every parameter is checked when the space is loaded; a bad one raises one `ConfigError` naming it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml

from cleanai.errors import ConfigError, UnknownNameError
from cleanai.registry import Registry

ParamType = Literal["int", "float", "categorical"]
_TYPES = {"int": "int", "float": "float", "categorical": "categorical", "choice": "categorical"}
_KEYS = {"type", "low", "high", "step", "log", "choices", "registry", "when", "default"}
_SCALARS = (type(None), bool, int, float, str)


def _registries() -> dict[str, Registry[Any]]:
    """The registries whose names may serve as categorical choices (`registry: optimizers`)."""
    from cleanai.models import MODELS
    from cleanai.pruning import CRITERIA
    from cleanai.training import LOSSES, METRICS, OPTIMIZERS, SCHEDULERS

    return {"optimizers": OPTIMIZERS, "losses": LOSSES, "schedulers": SCHEDULERS, "metrics": METRICS,
            "criteria": CRITERIA, "models": MODELS}


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its kind, range or choices, and the condition under which it is sampled."""

    name: str
    type: ParamType
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    default: Any = None

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition holds for the values sampled so far."""
        return all(values.get(other) in allowed for other, allowed in self.when.items())

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this parameter through Optuna's define-by-run API."""
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1),  # type: ignore[arg-type]
                                     log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)  # type: ignore[arg-type]
        return trial.suggest_categorical(self.name, list(self.choices))

    def first(self) -> Any:
        """The value used without a trial: `default`, else the low end or the first choice."""
        if self.default is not None:
            return self.default
        if self.type == "categorical":
            return self.choices[0]
        return int(self.low) if self.type == "int" else self.low  # type: ignore[arg-type]

    def admits(self, value: Any) -> bool:
        """Whether the sampler could give `value`: one of the choices, or a number in [low, high]."""
        if self.type == "categorical":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            self.low <= value <= self.high  # type: ignore[operator]

    def grid(self) -> list[Any]:
        """Every value a grid search tries; a float needs a step."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "float" and self.step is None:
            raise ConfigError(f"parameter {self.name!r}: the grid sampler needs a finite set of values, but this float "
                              f"has no step; add step (e.g. step: {(self.high - self.low) / 4:g}) or make it "  # type: ignore[operator]
                              f"categorical")
        step = self.step or 1
        count = int(round((self.high - self.low) / step)) + 1  # type: ignore[operator]
        values = [self.low + i * step for i in range(count)]  # type: ignore[operator]
        return [int(v) for v in values] if self.type == "int" else [round(v, 12) for v in values]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        if self.default is not None:
            out["default"] = self.default
        return out


def parse_param(name: str, spec: Any, declared: Mapping[str, Param] | None = None) -> Param:
    """Check one parameter's spec and build it; every problem is a `ConfigError` naming the parameter."""
    where = f"parameter {name!r}"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"parameter names must be non-empty strings, got {name!r}")
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping such as {{type: float, low: 0.0001, high: 0.1, log: true}} "
                          f"or a list of choices, got {spec!r}")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    kind = _TYPES.get(str(spec.get("type", "categorical" if "choices" in spec or "registry" in spec else "")))
    if kind is None:
        raise ConfigError(f"{where}: unknown type {spec.get('type')!r}; use int, float or categorical")
    when = _parse_when(where, spec.get("when"), declared or {})
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if kind == "categorical":
        choices = _parse_choices(where, spec.get("choices"), spec.get("registry"))
        extra = sorted(k for k in ("low", "high", "step", "log") if k in spec)
        if extra:
            raise ConfigError(f"{where}: a categorical parameter takes choices (or registry), not {', '.join(extra)}")
        default = spec.get("default")
        if default is not None and default not in choices:
            raise ConfigError(f"{where}: default {default!r} is not one of its choices {list(choices)}")
        return Param(name, "categorical", choices=choices, when=when, default=default)
    low, high, step = (_number(where, key, spec.get(key), kind) for key in ("low", "high", "step"))
    if low is None or high is None:
        raise ConfigError(f"{where}: {kind} parameters need low and high, got low={low!r}, high={high!r}")
    if low > high:
        raise ConfigError(f"{where}: low ({low:g}) is greater than high ({high:g})")
    if log and low <= 0:
        raise ConfigError(f"{where}: log scale needs low > 0, got low={low:g}")
    if step is not None:
        if step <= 0:
            raise ConfigError(f"{where}: step must be > 0, got {step:g}")
        if log and (kind == "float" or step != 1):
            raise ConfigError(f"{where}: log scale and a step cannot be combined; drop one of them")
    default = spec.get("default")
    if default is not None and not (isinstance(default, (int, float)) and low <= default <= high):
        raise ConfigError(f"{where}: default {default!r} is outside [{low:g}, {high:g}]")
    return Param(name, kind, low=low, high=high, step=step, log=log, when=when, default=default)  # type: ignore[arg-type]


def _number(where: str, key: str, value: Any, kind: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
    if kind == "int" and float(value) != int(value):
        raise ConfigError(f"{where}: an int parameter needs whole numbers, got {key}={value!r}")
    return int(value) if kind == "int" else float(value)


def _parse_choices(where: str, choices: Any, registry: Any) -> tuple[Any, ...]:
    if registry is not None:
        known = _registries()
        if registry not in known:
            raise ConfigError(f"{where}: unknown registry {registry!r}; use one of: {', '.join(sorted(known))}")
        names = known[registry]
        if choices is None:
            choices = names.names()
        for choice in choices if isinstance(choices, list) else []:
            try:
                names.get(choice)
            except UnknownNameError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
    bad = [c for c in choices if not isinstance(c, _SCALARS)]
    if bad:
        raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null, got {bad[0]!r}")
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{where}: choices repeat a value: {choices}")
    return tuple(choices)


def _parse_when(where: str, when: Any, declared: Mapping[str, Param]) -> dict[str, tuple[Any, ...]]:
    if when is None:
        return {}
    if not isinstance(when, Mapping) or not when:
        raise ConfigError(f"{where}: when must map earlier parameters to a value or a list of values, got {when!r}")
    out = {}
    for other, allowed in when.items():
        if other not in declared:
            raise ConfigError(f"{where}: its condition names {other!r}, which is not a parameter declared before it; "
                              f"declared: {', '.join(declared) or '(none)'}")
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        parent = declared[other]
        missing = [v for v in values if parent.type == "categorical" and v not in parent.choices]
        if missing:
            raise ConfigError(f"{where}: its condition {other}={missing[0]!r} can never hold; {other!r} takes "
                              f"{list(parent.choices)}")
        out[other] = values
    return out


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of parameters; conditions refer to parameters declared earlier."""

    params: tuple[Param, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Build from `{name: spec}`; raises `ConfigError` naming the first bad parameter."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a search space is a mapping of parameter name -> spec, got {type(data).__name__}")
        if not data:
            raise ConfigError("the search space is empty; give at least one parameter, e.g. "
                              "{lr: {type: float, low: 0.0001, high: 0.1, log: true}}")
        declared: dict[str, Param] = {}
        for name, spec in data.items():
            declared[name] = parse_param(name, spec, declared)
        return cls(tuple(declared.values()))

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Read a YAML file holding the mapping (optionally under a top-level `space:` key)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"search space file {str(p)!r} does not exist; give a YAML mapping of parameters")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
            raise ConfigError(f"search space file {at}: YAML syntax error: {getattr(exc, 'problem', exc)}") from None
        if isinstance(data, Mapping) and set(data) == {"space"}:
            data = data["space"]
        return cls.from_dict(data if data is not None else {})

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every parameter whose condition holds, in declaration order."""
        values: dict[str, Any] = {}
        for param in self.params:
            if param.active(values):
                values[param.name] = param.suggest(trial)
        return values

    def check_values(self, values: Mapping[str, Any], what: str) -> None:
        """Refuse values naming no parameter of the space, or outside a parameter's range or choices."""
        params = {p.name: p for p in self.params}
        for name, value in values.items():
            param = params.get(name)
            if param is None:
                raise ConfigError(f"{what}: {name!r} is not a parameter of the space ({', '.join(params)})")
            if not param.admits(value):
                allowed = list(param.choices) if param.type == "categorical" else f"[{param.low}, {param.high}]"
                raise ConfigError(f"{what}: {name}={value!r} is outside the space; it allows {allowed}")

    def grid(self) -> dict[str, list[Any]]:
        """The grid sampler's `search_space`: every value of every parameter."""
        return {p.name: p.grid() for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        return {p.name: p.to_dict() for p in self.params}

    def fingerprint(self) -> str:
        """Canonical JSON of the space: a study remembers it and refuses a different one under its name."""
        return json.dumps(self.to_dict(), sort_keys=True)


def load_space(space: SearchSpace | Mapping[str, Any] | str | Path | None) -> SearchSpace | None:
    """A space from a SearchSpace, a dict, or a YAML path (None stays None: the objective samples itself)."""
    if space is None or isinstance(space, SearchSpace):
        return space
    if isinstance(space, (str, Path)):
        return SearchSpace.from_yaml(space)
    return SearchSpace.from_dict(space)


class HyperParameters:
    """Keras-Tuner-like hyperparameters for a model-building function: `hp.Int`, `hp.Float`, `hp.Choice`.

    Each call declares a parameter (checked like a space entry) and returns its value for this trial: the value
    already sampled from a data space or by an earlier call of the same name, else a new sample from the trial,
    else (no trial: rebuilding a model) its default. `hp.values` holds every value, `hp["units"]` reads one.
    """

    def __init__(self, trial: optuna.Trial | None = None, values: Mapping[str, Any] | None = None) -> None:
        self.trial = trial
        self.values: dict[str, Any] = dict(values or {})
        self.declared: dict[str, Param] = {}

    def Int(self, name: str, min_value: int, max_value: int, step: int | None = None,
            sampling: Literal["linear", "log"] = "linear", default: int | None = None) -> int:
        """An integer in [min_value, max_value] (`step` apart, or on a log scale)."""
        return self._value(name, {"type": "int", "low": min_value, "high": max_value, "step": step,
                                  "log": _log(name, sampling), "default": default})

    def Float(self, name: str, min_value: float, max_value: float, step: float | None = None,
              sampling: Literal["linear", "log"] = "linear", default: float | None = None) -> float:
        """A float in [min_value, max_value] (`step` apart, or on a log scale)."""
        return self._value(name, {"type": "float", "low": min_value, "high": max_value, "step": step,
                                  "log": _log(name, sampling), "default": default})

    def Choice(self, name: str, values: Sequence[Any] | None = None, *, registry: str | None = None,
               default: Any = None) -> Any:
        """One of `values`, or of a registry's names (`registry="optimizers"`)."""
        return self._value(name, {"type": "categorical", "choices": None if values is None else list(values),
                                  "registry": registry, "default": default})

    def Boolean(self, name: str, default: bool = False) -> bool:
        """True or False."""
        return self._value(name, {"type": "categorical", "choices": [False, True], "default": default})

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def __getitem__(self, name: str) -> Any:
        if name not in self.values:
            raise KeyError(f"no hyperparameter {name!r}; known: {', '.join(self.values) or '(none yet)'}")
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def _value(self, name: str, spec: dict[str, Any]) -> Any:
        param = parse_param(name, {k: v for k, v in spec.items() if v is not None and v is not False}, self.declared)
        self.declared[name] = param
        if name not in self.values:
            self.values[name] = param.suggest(self.trial) if self.trial is not None else param.first()
        return self.values[name]


def _log(name: str, sampling: str) -> bool:
    if sampling not in ("linear", "log"):
        raise ConfigError(f"parameter {name!r}: sampling must be 'linear' or 'log', got {sampling!r}")
    return sampling == "log"


ModelBuilder = Callable[[HyperParameters], Any]
