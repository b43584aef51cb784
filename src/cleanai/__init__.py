"""CleanAI: make trained networks smaller and faster, and prove it with honest numbers.

The public surface is the names below, one verb and one config per capability; each lives in its
subpackage (`cleanai.pruning`, `cleanai.quantization`, ...) and is imported on first use, so
`import cleanai` stays cheap and a missing optional engine fails only where it is needed.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("cleanai")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_PUBLIC = {
    "cleanai.errors": ["CleanAIError"],
    "cleanai.data": ["load_dataset", "list_datasets"],
    "cleanai.models": ["create_model", "list_models"],
    "cleanai.training": ["Trainer", "TrainConfig"],
    "cleanai.pruning": ["PruneConfig", "prune", "prune_and_finetune", "save_pruned", "load_pruned",
                        "list_criteria", "create_criterion"],
    "cleanai.quantization": ["QuantConfig", "quantize", "quantize_with_accuracy_budget"],
    "cleanai.distillation": ["DistillConfig", "distill"],
    "cleanai.fusion": ["fuse_conv_bn"],
    "cleanai.export": ["export_onnx"],
    "cleanai.runtime": ["TorchRunner", "OrtRunner", "evaluate"],
    # the verb itself is cleanai.benchmark.benchmark
    "cleanai.benchmark": ["BenchmarkConfig", "compare", "compare_runners"],
    "cleanai.tuning": ["TuneConfig", "tune"],
    # the verb itself is cleanai.optimize.optimize (the name `cleanai.optimize` is its subpackage)
    "cleanai.optimize": ["OptimizeConfig"],
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    """Import a public name's subpackage on first access (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'cleanai' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
