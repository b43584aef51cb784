"""ONNX Runtime sessions and saved graph optimisations: the one place that turns options into a session.

`create_session` is what every ONNX Runtime user in CleanAI goes through (the benchmark's `OrtRunner`,
the export parity check, quantization), so threads, optimisation level and providers mean the same
thing everywhere. `optimize_onnx` saves an optimised graph, optionally after the transformer
optimizer's fusions (attention, skip layer norm, GELU) for BERT-like models.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cleanai.io import atomic_path
from cleanai.errors import ConfigError, MissingFileError

if TYPE_CHECKING:
    import onnxruntime as ort

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "layout", "all")
_ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
# `onnxruntime.transformers.optimizer.optimize_model(opt_level=...)` knows no separate layout level.
_TRANSFORMER_OPT_LEVELS = {"disable": 0, "basic": 1, "extended": 2, "all": 99}
_TRANSFORMER_KEYS = ("model_type", "num_heads", "hidden_size")


def _check_level(name: str, level: str, allowed: Sequence[str] = GRAPH_OPTIMIZATIONS) -> None:
    if level not in allowed:
        raise ConfigError(f"{name}={level!r} is not an ONNX Runtime optimisation level; allowed: {', '.join(allowed)}")


def create_session(
    path_or_bytes: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    graph_optimization: str = "all",
    providers: Sequence[str] = ("CPUExecutionProvider",),
    optimized_model_path: str | os.PathLike[str] | None = None,
) -> ort.InferenceSession:
    """An `InferenceSession` with `threads` intra-op threads (and one inter-op thread), the given level and providers.

    `threads=None` leaves ONNX Runtime's default (one thread per physical core). With
    `optimized_model_path`, ONNX Runtime also writes the graph it optimised to that file.
    """
    import onnxruntime as ort

    _check_level("graph_optimization", graph_optimization)
    available = ort.get_available_providers()
    unknown = [p for p in providers if p not in available]
    if not providers or unknown:
        raise ConfigError(
            f"providers={list(providers)!r}: {unknown or 'empty list'} not available in this onnxruntime; "
            f"available: {', '.join(available)}"
        )
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads={threads!r} must be a positive integer, or None for ONNX Runtime's default")
    if isinstance(path_or_bytes, (bytes, bytearray)):
        model: str | bytes = bytes(path_or_bytes)
    else:
        if not Path(path_or_bytes).is_file():
            raise MissingFileError(f"ONNX model {str(path_or_bytes)!r} does not exist (expected a .onnx file)")
        model = str(path_or_bytes)
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[graph_optimization])
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return ort.InferenceSession(model, sess_options=options, providers=list(providers))


def optimize_onnx(
    path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    level: str = "all",
    transformer: Mapping[str, Any] | None = None,
) -> Path:
    """Apply ONNX Runtime's graph optimisations at `level` and save the result to `out_path` (atomically).

    With `transformer={"model_type": "bert", "num_heads": 12, "hidden_size": 768}` the graph first goes
    through `onnxruntime.transformers.optimizer` (fused attention, skip layer norm, GELU); `num_heads`
    and `hidden_size` may be left out (or 0) for the optimizer to detect them. Attention fuses only in
    graphs of eager attention (`attn_implementation="eager"`), not SDPA; a warning says when none fused. Graphs saved at levels
    "layout" and "all" may hold CPU-specific operators: load them on the kind of machine that made them.
    """
    source, target = Path(path), Path(out_path)
    if not source.is_file():
        raise MissingFileError(f"ONNX model {str(source)!r} does not exist (expected a .onnx file)")
    if transformer is None:
        _check_level("level", level)
        with atomic_path(target) as tmp:
            create_session(source, graph_optimization=level, optimized_model_path=tmp)
        return target
    return _optimize_transformer(source, target, level, transformer)


def _optimize_transformer(source: Path, target: Path, level: str, transformer: Mapping[str, Any]) -> Path:
    from onnxruntime.transformers import optimizer

    _check_level("level", level, tuple(_TRANSFORMER_OPT_LEVELS))
    unknown = sorted(set(transformer) - set(_TRANSFORMER_KEYS))
    if unknown or "model_type" not in transformer:
        raise ConfigError(
            f"transformer={dict(transformer)!r}: " + (f"unknown key(s) {unknown}" if unknown else "'model_type' missing")
            + f"; allowed keys: {', '.join(_TRANSFORMER_KEYS)} (model_type required)"
        )
    model_type = transformer["model_type"]
    if model_type not in optimizer.MODEL_TYPES:
        raise ConfigError(f"transformer model_type={model_type!r} is not known to onnxruntime.transformers; "
                         f"allowed: {', '.join(optimizer.MODEL_TYPES)}")
    sizes = {k: transformer.get(k, 0) for k in ("num_heads", "hidden_size")}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"transformer {key}={value!r} must be a non-negative integer (0: detect from the graph)")
    optimized = optimizer.optimize_model(str(source), model_type=model_type, opt_level=_TRANSFORMER_OPT_LEVELS[level],
                                         use_gpu=False, **sizes)
    fused = optimized.get_fused_operator_statistics()
    if model_type == "bert" and not (fused.get("Attention") or fused.get("MultiHeadAttention")):
        warnings.warn(f"the transformer optimizer fused no attention in {str(source)!r}; it recognises the graph of "
                      "eager attention: export Hugging Face models built with attn_implementation='eager' (SDPA "
                      "graphs only get layer-norm and GELU fusions)", stacklevel=3)
    with atomic_path(target) as tmp:
        optimized.save_model_to_file(str(tmp), use_external_data_format=False)
    return target
