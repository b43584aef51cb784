"""`run_recipe`: execute a recipe's variants into a run folder, step by step, each step's files written atomically.

Every step has a key: the SHA-256 of its type and settings, the run's model/data/seed, and the content hashes
of what it reads (the model it starts from, a teacher, for the benchmark every variant's artifacts). Its
files land in `steps/<id>-<key>/` (written in a staging folder, renamed when complete) with `step.json`
holding the key and the hash of every file. A rerun skips a step whose folder holds the same key and
intact files, so a killed run resumes at the step it was in, and variants share the steps they have in
common. `run.json` says, after every step, which steps are done, cached, failed or still pending.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from cleanai._platform import torch_threads
from cleanai.benchmark import TorchRunner
from cleanai.data import DataSplits, Loaders, load_dataset, text_collate, texts_of
from cleanai.distillation import augment_texts
from cleanai.errors import ConfigError
from cleanai.io import RUN_MARKER, atomic_dir, atomic_open, check_destination, write_json
from cleanai.models import MODELS, create_model
from cleanai.pruning import load_pruned, save_pruned
from cleanai.recipes.schema import Recipe
from cleanai.recipes.steps import MODEL_STEPS, SOURCE_MODEL, StepConfig
from cleanai.runtime import Runner

STEP_FILE = "step.json"
RUN_FILE = "run.json"
_MARKER_TEXT = "Written by CleanAI (cleanai run): a recipe's run folder; steps/ holds one folder per step.\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` but step.json and TensorBoard logs (they hold wall-clock times)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in (STEP_FILE, RUN_MARKER) and not rel.startswith("tensorboard/"):
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            out[rel] = digest.hexdigest()
    return out


@dataclass
class Node:
    """One step of one variant's chain, with the steps it reads from."""

    step: StepConfig
    index: int
    model_input: Node | None  # the model step it starts from (None: the recipe's model)
    teacher: Node | None = None
    key: str | None = None
    folder: Path | None = None
    output_hash: str | None = None


@dataclass
class StepContext:
    """What a running step reads: the data, the model it starts from, earlier models, the run's settings."""

    run: RecipeRun
    node: Node
    variant_nodes: dict[str, list[Node]] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.run.recipe.seed

    @property
    def progress(self) -> bool:
        return self.run.progress

    @property
    def recipe_name(self) -> str:
        return self.run.recipe.name

    @property
    def loaders(self) -> Loaders:
        return self.run.loaders

    @property
    def example(self) -> Any:
        return self.run.example

    def train_loader(self, augment: int | None = None) -> DataLoader:
        """The training loader, or with `augment` the run's transfer set (`RecipeRun.train_loader`)."""
        return self.run.train_loader(augment)

    @property
    def is_text(self) -> bool:
        return self.run.splits.task == "text"

    def input_model(self) -> nn.Module:
        return self.run.model_after(self.node.model_input)

    def model_of(self, step_id: str) -> nn.Module:
        """The model an earlier step of this chain wrote (a teacher), or the recipe's own model for `model`."""
        if step_id == SOURCE_MODEL:
            return self.run.model_after(None).eval()
        assert self.node.teacher is not None and self.node.teacher.step.key_id == step_id
        return self.run.model_after(self.node.teacher).eval()

    def save_model(self, model: nn.Module, out: Path) -> None:
        self.run.save_model(model, out)

    def load_saved_model(self, out: Path) -> nn.Module:
        return load_pruned(out)

    def benchmark_runners(self) -> dict[str, Runner]:
        """The baseline's model, then per variant its final model and each artifact it made, by row name."""
        return self.run.benchmark_runners(self.node, self.variant_nodes)


class RecipeRun:
    """One execution of a recipe into a run folder (see the module docstring)."""

    def __init__(self, recipe: Recipe, out: Path, *, progress: bool = True, overwrite: bool = False) -> None:
        self.recipe, self.out, self.progress, self.overwrite = recipe, out, progress, overwrite
        self.status: dict[str, Any] = {}
        self._transfer: dict[int, DataLoader] = {}

    @cached_property
    def splits(self) -> DataSplits:
        data = self.recipe.data
        return load_dataset(data.name, root=data.root, **data.options).subsets(data.subset, seed=self.recipe.seed)

    @cached_property
    def base_kwargs(self) -> dict[str, Any]:
        """The model's keyword arguments, with its class count taken from the data unless the recipe sets it."""
        import inspect

        params = inspect.signature(MODELS.get(self.recipe.model.name)).parameters
        key = "num_labels" if "num_labels" in params else "num_classes"
        return {key: len(self.splits.label_names), **self.recipe.model.kwargs}

    @cached_property
    def source_model(self) -> nn.Module:
        spec = self.recipe.model
        torch.manual_seed(self.recipe.seed)  # the initial weights of a model trained from scratch
        return create_model(spec.name, pretrained=spec.weights, **self.base_kwargs)

    @cached_property
    def loaders(self) -> Loaders:
        return self._loaders(self.splits)

    def _loaders(self, splits: DataSplits) -> Loaders:
        """`splits`' loaders at the recipe's batch sizes and seed (text: token tensors of the model's tokenizer)."""
        data = self.recipe.data
        collate = text_collate(self.source_model.tokenizer) if splits.task == "text" else None
        return splits.loaders(batch_size=data.batch_size, eval_batch_size=data.eval_batch_size, collate_fn=collate,
                              seed=self.recipe.seed)

    def train_loader(self, augment: int | None = None) -> DataLoader:
        """The training loader; with `augment`, the KD transfer set: the training split plus that many edited,
        unlabelled variants of each training text (`augment_texts`, seeded by the recipe: only a teacher's soft
        targets train on them), loaded as the training split is. Built once per `augment`."""
        if augment is None:
            return self.loaders.train
        if self.splits.task != "text":
            raise ConfigError(f"augment {augment} adds edited variants of training texts; the data "
                              f"{self.recipe.data.name!r} is not text: remove augment")
        if augment not in self._transfer:
            extra = augment_texts(texts_of(self.splits.train), augment, seed=self.recipe.seed)
            transfer = replace(self.splits, train=ConcatDataset([self.splits.train, extra]))
            self._transfer[augment] = self._loaders(transfer).train
        return self._transfer[augment]

    @cached_property
    def example(self) -> Any:
        """One validation sample as the model takes it, drawn without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            inputs = next(iter(self.loaders.val))[0]
        return {k: v[:1] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:1]

    @cached_property
    def context_hash(self) -> str:
        """What every step depends on: the model, its weights' content, the data and the seed."""
        spec = self.recipe.model.model_dump(mode="json")
        weights = spec["weights"]
        if weights is not None and Path(weights).is_file():
            spec["weights_sha256"] = _sha256(Path(weights).read_bytes())
        return _sha256(json.dumps({"model": spec, "data": self.recipe.data.model_dump(mode="json"),
                                   "seed": self.recipe.seed}, sort_keys=True).encode())

    def save_model(self, model: nn.Module, out: Path) -> None:
        save_pruned(model, out, base=self.recipe.model.name, base_kwargs=self.base_kwargs,
                    example_inputs=self.example)

    def model_after(self, node: Node | None) -> nn.Module:
        """A fresh copy of the model `node` wrote (the recipe's model for None), read from its files."""
        if node is None:
            import copy

            return copy.deepcopy(self.source_model)
        assert node.folder is not None
        return node.step.load_model(node.folder, StepContext(self, node))

    # ------------------------------------------------------------------ planning

    def chains(self) -> dict[str, list[Node]]:
        """Each variant's steps (without the closing benchmark), linked to the steps they read."""
        out = {}
        for name, steps in self.recipe.variants.items():
            nodes: list[Node] = []
            current: Node | None = None
            for i, step in enumerate(steps):
                if step.type == "benchmark":
                    continue
                teacher_id = step.references().get("teacher")
                teacher = next((n for n in nodes if n.step.key_id == teacher_id), None)
                node = Node(step, i, current, teacher)
                nodes.append(node)
                if step.type in MODEL_STEPS:
                    current = node
            out[name] = nodes
        return out

    def _key(self, node: Node, inputs: list[Node | None]) -> str:
        hashes = [self.context_hash if n is None else n.output_hash for n in inputs]
        return _sha256(json.dumps({"type": node.step.type, "settings": node.step.settings(), "context":
                                   self.context_hash, "inputs": hashes}, sort_keys=True).encode())[:16]

    # ------------------------------------------------------------------ execution

    def execute(self) -> Path:
        """Run every step not already done; return the run folder."""
        check_destination(self.out, option="--out", overwrite=self.overwrite)
        if self.overwrite and self.out.is_dir():  # start from scratch: nothing of what was there is reused
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        _remove_staging(self.out / "steps")
        if not (self.out / RUN_MARKER).is_file():
            (self.out / RUN_MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        with torch_threads(self.recipe.threads):  # the whole run's; the caller's come back at the end
            return self._execute()

    def _execute(self) -> Path:
        with atomic_open(self.out / "recipe.yaml", "w", encoding="utf-8") as fh:
            fh.write(self.recipe.path.read_text(encoding="utf-8"))
        write_json(self.out / "recipe.json", self.recipe.raw)
        chains = self.chains()
        bench = self.recipe.benchmark
        self.status = {
            "recipe": self.recipe.name, "recipe_file": str(self.recipe.path), "started": _now(), "finished": None,
            "threads": torch.get_num_threads(),  # what the steps trained and evaluated on
            "variants": {name: [self._entry(n) for n in nodes] for name, nodes in chains.items()},
            "benchmark": None if bench is None else {"id": bench.key_id, "type": "benchmark", "status": "pending"},
        }
        self._save_status()
        for name, nodes in chains.items():
            for position, node in enumerate(nodes):
                self._run_node(node, [node.model_input, node.teacher], self.status["variants"][name][position])
        if bench is not None:
            node = Node(bench, len(self.recipe.steps) - 1, None)
            inputs = [self._baseline(chains, bench)] + [n for nodes in chains.values() for n in nodes
                                                        if n is self._final(nodes) or n.step.type in
                                                        ("export", "quantize")]
            self._run_node(node, inputs, self.status["benchmark"], chains)
        self.status["finished"] = _now()
        self._save_status()
        return self.out

    def _entry(self, node: Node) -> dict[str, Any]:
        return {"id": node.step.key_id, "type": node.step.type, "status": "pending"}

    def _run_node(self, node: Node, inputs: list[Node | None], entry: dict[str, Any],
                  chains: dict[str, list[Node]] | None = None) -> None:
        node.key = self._key(node, inputs)
        folder = self.out / "steps" / f"{node.step.key_id}-{node.key}"
        node.folder = folder
        entry.update(key=node.key, folder=folder.relative_to(self.out).as_posix())
        record = _intact(folder, node.key)
        if record is not None:
            node.output_hash = record["output_hash"]
            entry.update(status="cached", seconds=record["seconds"])
            self._save_status()
            return
        entry["status"] = "running"
        self._save_status()
        start = time.perf_counter()
        try:
            with atomic_dir(folder) as stage:
                summary = node.step.run(StepContext(self, node, chains or {}), stage)
                files = _file_hashes(stage)
                output_hash = _sha256(json.dumps(files, sort_keys=True).encode())
                write_json(stage / STEP_FILE, {
                    "key": node.key, "id": node.step.key_id, "type": node.step.type,
                    "settings": node.step.settings(), "inputs": [None if n is None else n.key for n in inputs],
                    "files": files, "output_hash": output_hash, "seconds": time.perf_counter() - start,
                    "finished": _now(), "summary": summary})
        except BaseException as exc:
            entry.update(status="failed", error="".join(traceback.format_exception_only(exc)).strip())
            self._save_status()
            raise
        node.output_hash = output_hash
        entry.update(status="done", seconds=time.perf_counter() - start)
        self._save_status()

    def _save_status(self) -> None:
        write_json(self.out / RUN_FILE, self.status)

    @staticmethod
    def _final(nodes: list[Node]) -> Node | None:
        return next((n for n in reversed(nodes) if n.step.type in MODEL_STEPS), None)

    def _baseline(self, chains: dict[str, list[Node]], bench: StepConfig) -> Node | None:
        first = next(iter(chains.values()))
        wanted = bench.references()["baseline"]
        if wanted == SOURCE_MODEL:
            return None
        models = [n for n in first if n.step.type in MODEL_STEPS]
        return next((n for n in models if n.step.key_id == wanted), models[0] if models else None)

    def benchmark_runners(self, node: Node, chains: dict[str, list[Node]]) -> dict[str, Runner]:
        """Rows of the benchmark: the baseline model, then each variant's final model and its artifacts."""
        assert self.recipe.benchmark is not None
        baseline = self._baseline(chains, self.recipe.benchmark)
        label = "recipe model" if baseline is None else baseline.step.key_id
        runners: dict[str, Runner] = {f"baseline ({label})": TorchRunner(self.model_after(baseline).eval(),
                                                                        name=f"baseline ({label})")}
        for name, nodes in chains.items():
            final = self._final(nodes)
            if final is not None and (baseline is None or final.key != baseline.key):
                runners[f"{name} (torch)"] = TorchRunner(self.model_after(final).eval(), name=f"{name} (torch)")
            for n in nodes:
                if n.step.type in ("export", "quantize"):
                    assert n.folder is not None
                    row = f"{name} {n.step.key_id}"
                    runners[row] = n.step.artifact(n.folder, row)
        return runners


def _remove_staging(steps: Path) -> None:
    """Remove the staging folders a killed run left (hidden, `.tmp`, holding the marker), whatever step they were."""
    for entry in steps.glob(".*.tmp") if steps.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink() and (entry / RUN_MARKER).is_file():
            shutil.rmtree(entry, ignore_errors=True)


def _intact(folder: Path, key: str) -> dict[str, Any] | None:
    """The step.json of a finished step with this key whose files are all as it recorded, else None."""
    try:
        record = json.loads((folder / STEP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("key") != key or _file_hashes(folder) != record.get("files"):
        return None
    return record


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_recipe(recipe: Recipe, out: str | Path | None = None, *, progress: bool = True,
               overwrite: bool = False) -> Path:
    """Execute `recipe` into `out` (default `runs/<recipe name>`), skipping the steps already done there;
    write its report at the end when `recipe.report.auto`. Returns the run folder. `overwrite`: whatever
    folder is at `out` (also one CleanAI did not write) is removed first and every step runs again."""
    folder = RecipeRun(recipe, Path(out) if out is not None else Path("runs") / recipe.name,
                       progress=progress, overwrite=overwrite).execute()
    if recipe.report.auto:
        from cleanai.recipes.report import write_report

        write_report(folder, formats=recipe.report.formats)
    return folder


def read_status(run_dir: str | Path) -> Mapping[str, Any]:
    """The run.json of a run folder."""
    return json.loads((Path(run_dir) / RUN_FILE).read_text(encoding="utf-8"))

