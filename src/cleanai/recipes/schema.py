"""The recipe file: YAML -> validated objects; every error names the file, the line and the field.

A recipe names a model and a dataset, a chain of steps, and variants: each variant is the chain with
some step fields replaced (`variants: {wanda: {prune: {criterion: wanda}}}`). Steps are addressed by
their `id` (default: their type). `--set a.b=value` edits the loaded data before validation
(`steps.<id>.<field>`, `model.name`, `variants.<name>.<id>.<field>`). Relative paths are read from the
working directory.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from cleanai.data import DATASETS
from cleanai.errors import ConfigError
from cleanai.models import MODELS, PRETRAINED
from cleanai.recipes.steps import MODEL_STEPS, SOURCE_MODEL, STEPS, StepConfig

YamlPath = tuple[str | int, ...]


class RecipeError(ConfigError):
    """A recipe does not validate; `problems` holds one `file:line: field: message` line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ModelSpec(BaseModel):
    """The model the chain starts from: a registered name, its keyword arguments, optional weights."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(MODELS.known)]
    kwargs: dict[str, Any] = Field(default_factory=dict)  # num_classes / num_labels are filled from the data
    weights: str | None = None  # a checkpoint path, or a registered tag such as 'akamaster'


class DataSpec(BaseModel):
    """The dataset (a registered name, its folder and options) and the loaders' batch sizes."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(DATASETS.known)] = "digits"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    subset: dict[Literal["train", "val", "test"], Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    # a seeded, class-balanced part of a split (cleanai.data.subset), e.g. {train: 2000} for a short run



class ReportOptions(BaseModel):
    """What `cleanai run` writes at the end (and `cleanai report` on demand)."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    notes: str | None = None  # shown first in the report (what the numbers can and cannot say)
    formats: list[Literal["pdf", "html"]] = Field(default_factory=lambda: ["pdf", "html"])
    auto: bool = True  # write the report when a run completes


class _Top(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    threads: int | None = Field(None, ge=1)
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    steps: list[dict[str, Any]] = Field(min_length=1)
    variants: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    report: ReportOptions = Field(default_factory=ReportOptions)


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: the settings, the base chain of steps and every variant's chain."""

    path: Path
    name: str
    seed: int
    threads: int | None
    model: ModelSpec
    data: DataSpec
    steps: tuple[StepConfig, ...]
    variants: dict[str, tuple[StepConfig, ...]]  # variant name -> its chain (the base chain when none is declared)
    report: ReportOptions
    raw: dict[str, Any]  # the data after --set, as validated (saved into the run folder)

    @property
    def benchmark(self) -> StepConfig | None:
        """The closing benchmark step (run once over every variant), if the recipe has one."""
        return self.steps[-1] if self.steps[-1].type == "benchmark" else None


def _lines(node: yaml.Node, path: YamlPath, out: dict[YamlPath, int]) -> None:
    """Record the line of every mapping key and sequence item under `node`."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            out[child] = key.start_mark.line + 1
            _lines(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def _read(path: Path) -> tuple[Any, dict[YamlPath, int]]:
    if not path.is_file():
        raise RecipeError([f"{path}: {'is a folder' if path.is_dir() else 'does not exist'}; give a recipe YAML "
                           "file (see recipes/digits_demo.yaml)"])
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise RecipeError([f"{path}: not UTF-8 text"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise RecipeError([f"{where}: YAML syntax error: {getattr(exc, 'problem', None) or exc}"]) from None
    lines: dict[YamlPath, int] = {}
    if node is not None:
        _lines(node, (), lines)
    return data, lines


def _field(path: YamlPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _Problems:
    """Collects `file:line: field: message` lines; a path not in the file points at its nearest parent."""

    def __init__(self, path: Path, lines: dict[YamlPath, int], sets: Mapping[str, YamlPath]) -> None:
        self.path, self.lines, self.sets, self.items = path, lines, sets, []

    def add(self, where: YamlPath, message: str) -> None:
        for key, place in self.sets.items():  # a value given on the command line is named as such
            if where[:len(place)] == place:
                self.items.append(f"--set {key}: {_field(where)}: {message}")
                return
        probe = where
        while probe and probe not in self.lines:
            probe = probe[:-1]
        self.items.append(f"{self.path}:{self.lines.get(probe, 1)}: {_field(where)}: {message}")

    def pydantic(self, exc: ValidationError, prefix: YamlPath, rename: Mapping[str, YamlPath] | None = None) -> None:
        for e in exc.errors():
            loc = tuple(e["loc"])
            base = (rename or {}).get(str(loc[0]), prefix) if loc else prefix
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] not in ("missing", "extra_forbidden"):
                message += f" (got {e['input']!r})"
            elif e["type"] == "extra_forbidden":
                message = "unknown field"
            self.add((*base, *loc), message)


def _apply_sets(data: dict[str, Any], sets: Mapping[str, Any]) -> dict[str, YamlPath]:
    """Edit the loaded recipe: `steps.<id>.<field>` finds the step by id; other keys are nested mapping keys.
    Returns where each key landed (`steps.train.epochs` -> ("steps", 0, "epochs"))."""
    places: dict[str, YamlPath] = {}
    for key, value in sets.items():
        parts = key.split(".")
        target: Any = data
        prefix: YamlPath = ()
        if parts[0] == "steps" and len(parts) >= 3:
            steps = data.get("steps") if isinstance(data.get("steps"), list) else []
            found = [(i, step) for i, step in enumerate(steps)
                     if isinstance(step, dict) and step.get("id", step.get("type")) == parts[1]]
            if not found:
                ids = [s.get("id", s.get("type")) for s in steps if isinstance(s, dict)]
                raise RecipeError([f"--set {key}: the recipe has no step {parts[1]!r}; its steps: {', '.join(ids)}"])
            index, target = found[0]
            prefix, parts = ("steps", index), parts[2:]
        for part in parts[:-1]:
            if not isinstance(target, dict):
                raise RecipeError([f"--set {key}: {part!r} is inside a value that is not a mapping"])
            target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise RecipeError([f"--set {key}: the place it names is not a mapping"])
        target[parts[-1]] = value
        places[key] = (*prefix, *parts)
    return places


def load_recipe(path: str | os.PathLike[str], sets: Mapping[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe (after `sets`, dotted keys -> values); a `RecipeError` lists every problem."""
    path = Path(path)
    sets = dict(sets or {})
    data, lines = _read(path)
    if not isinstance(data, dict):
        raise RecipeError([f"{path}:1: the recipe must be a mapping with model, data, steps (got "
                           f"{type(data).__name__})"])
    data = copy.deepcopy(data)
    problems = _Problems(path, lines, _apply_sets(data, sets))
    try:
        top = _Top.model_validate(data)
    except ValidationError as exc:
        problems.pydantic(exc, ())
        raise RecipeError(problems.items) from None
    _check_paths(top, problems)
    steps = _steps(top.steps, problems)
    variants = {}
    if len(steps) == len(top.steps):
        for name, overrides in (top.variants or {"main": {}}).items():
            variants[name] = _variant(name, top.steps, steps, overrides, problems)
    if problems.items:
        raise RecipeError(problems.items)
    return Recipe(path=path, name=top.name or path.stem, seed=top.seed, threads=top.threads, model=top.model,
                  data=top.data, steps=tuple(steps), variants=variants, report=top.report, raw=data)


def _check_paths(top: _Top, problems: _Problems) -> None:
    weights, tags = top.model.weights, [n.partition(".")[2] for n in PRETRAINED.names()
                                        if n.partition(".")[0] == top.model.name]
    if weights is not None and weights not in tags and not Path(weights).is_file():
        problems.add(("model", "weights"), f"{weights!r} is neither a file nor a weights tag of {top.model.name} "
                     f"({', '.join(tags) or 'it has none'})")
    if top.data.root is not None and not Path(top.data.root).is_dir():
        problems.add(("data", "root"), f"{top.data.root!r} is not a folder; give the dataset's folder")


def _step(raw: Any, where: YamlPath, problems: _Problems) -> StepConfig | None:
    if not isinstance(raw, dict):
        problems.add(where, f"a step is a mapping with a type ({', '.join(STEPS.names())}), got {raw!r}")
        return None
    kind = raw.get("type")
    if kind is None:
        problems.add(where, f"the step has no type; choose one of {', '.join(STEPS.names())}")
        return None
    if kind not in STEPS.names():
        problems.add((*where, "type"), f"unknown step {kind!r}; choose one of {', '.join(STEPS.names())}")
        return None
    try:
        return STEPS.get(kind).model_validate(raw)
    except ValidationError as exc:
        problems.pydantic(exc, where)
        return None


def _steps(raws: list[dict[str, Any]], problems: _Problems) -> list[StepConfig]:
    steps = [s for i, raw in enumerate(raws) if (s := _step(raw, ("steps", i), problems)) is not None]
    if len(steps) != len(raws):
        return steps
    seen: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.key_id in seen:
            problems.add(("steps", i), f"step id {step.key_id!r} is used by steps[{seen[step.key_id]}] too; give "
                         "each step of the same type its own `id`")
        seen.setdefault(step.key_id, i)
        if step.type in MODEL_STEPS and any(s.type == "fuse" for s in steps[:i]):
            problems.add(("steps", i, "type"), "a fuse step folds BatchNorm for deployment: put model steps before it")
        if step.type == "benchmark" and i != len(steps) - 1:
            problems.add(("steps", i, "type"), "the benchmark step measures every variant at the end: put it last")
        for field, ref in step.references().items():
            earlier = [SOURCE_MODEL, *(s.key_id for s in steps[:i] if s.type in MODEL_STEPS)]
            if ref is not None and ref not in earlier:
                problems.add(("steps", i, field), f"{ref!r} is not an earlier step that makes a model; choose one "
                             f"of: {', '.join(earlier)} ({SOURCE_MODEL!r}: the recipe's own model)")
    return steps


def _variant(name: str, raws: list[dict[str, Any]], steps: list[StepConfig], overrides: dict[str, dict[str, Any]],
             problems: _Problems) -> tuple[StepConfig, ...]:
    ids = [s.key_id for s in steps]
    chain = list(steps)
    for step_id, fields in overrides.items():
        where: YamlPath = ("variants", name, step_id)
        if step_id not in ids:
            problems.add(where, f"the recipe has no step {step_id!r}; its steps: {', '.join(ids)}")
            continue
        i = ids.index(step_id)
        if steps[i].type == "benchmark":
            problems.add(where, "the benchmark step is shared by every variant; set its fields under steps")
            continue
        if not isinstance(fields, dict) or {"type", "id"} & set(fields):
            problems.add(where, "a variant replaces fields of a step: a mapping without type or id")
            continue
        merged = _deep_merge(raws[i], fields)
        try:
            chain[i] = STEPS.get(steps[i].type).model_validate(merged)
        except ValidationError as exc:
            problems.pydantic(exc, ("steps", i), rename={key: where for key in fields})
    return tuple(chain)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
