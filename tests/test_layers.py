"""The package's layering holds: no module imports a layer above its own (DESIGN.md, "Dependencies run one way")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cleanai"

# Bottom to top. Top-level private modules (`cleanai._batches`, `cleanai._platform`, ...) are utilities of layer 0.
LAYERS: list[set[str]] = [
    {"errors", "registry", "io"},
    {"data", "models", "metrics"},
    {"export"},  # torch -> ONNX with a parity check in an ONNX Runtime session
    {"runtime"},  # deployable runners (built from exported graphs), evaluate()
    {"training", "pruning", "quantization", "distillation", "fusion"},
    {"tuning", "benchmark", "reporting"},
    {"recipes"},  # recipes compose every capability
    {"optimize"},  # searches pipelines, writes the choice as a recipe and reruns it
    {"cli", "demo"},  # the CLI runs them
]


def layer_of(top: str) -> int:
    """Layer of a top-level name of the package (`pruning` for cleanai.pruning.structured)."""
    if top.startswith("_"):
        return 0
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"cleanai.{top} is in no layer: add it to LAYERS in tests/test_layers.py (and to the "
                         "package map in README.md)")


def imported_tops(module: str, source: str) -> set[str]:
    """Top-level cleanai names a module imports anywhere (module level, functions, TYPE_CHECKING blocks)."""
    package = module.split(".")[:-1]  # "cleanai.runtime.runners" and "cleanai.runtime.__init__" -> cleanai.runtime
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if base == "cleanai" else base for alias in node.names]
        else:
            continue
        found |= {t.split(".")[1] for t in targets if t.startswith("cleanai.")}
    return found


def upward_imports(module: str, source: str) -> list[str]:
    """`imported (layer k) from module (layer j)` for every import of a higher layer."""
    own = module.split(".")[1]
    return [f"cleanai.{top} (layer {layer_of(top)}) imported by {module} (layer {layer_of(own)})"
            for top in sorted(imported_tops(module, source)) if layer_of(top) > layer_of(own)]


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts != ("cleanai", "__init__"):  # the top package re-exports lazily from every layer
            found.append((".".join(parts), path))
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_no_module_imports_a_layer_above_its_own(module: str, path: Path) -> None:
    assert upward_imports(module, path.read_text(encoding="utf-8")) == []


def test_the_check_sees_imports_in_functions_and_relative_ones() -> None:
    source = "def f():\n    from cleanai.benchmark import benchmark\nfrom ..training import Trainer\n"
    assert upward_imports("cleanai.runtime.runners", source) == [
        "cleanai.benchmark (layer 5) imported by cleanai.runtime.runners (layer 3)",
        "cleanai.training (layer 4) imported by cleanai.runtime.runners (layer 3)",
    ]
    assert upward_imports("cleanai.quantization.api", "from cleanai import runtime, errors\n") == []
    assert upward_imports("cleanai.metrics", "import cleanai.pruning.structured\n") == [
        "cleanai.pruning (layer 4) imported by cleanai.metrics (layer 1)"]
