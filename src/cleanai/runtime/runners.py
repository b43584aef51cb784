"""Runners: anything that maps a batch to logits, so every variant is run and measured by the same code.

A runner also knows how to save the artifact that would be deployed (its size is what the
benchmark reports), how to fix its thread count, and how to count its parameters and MACs.
Compression returns runners, the benchmark measures them, and they are what a user deploys.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from cleanai._batches import call_model, is_tensor_tuple, logits_of
from cleanai.errors import CleanAIError, InputError
from cleanai.export import ExportError, export_onnx
from cleanai.export.session import create_session
from cleanai.io import atomic_path, save_safetensors
from cleanai.registry import accepted_kwargs
from cleanai.runtime.flops import count_macs, count_onnx_macs

Inputs = torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...] | list[str]


class BenchmarkError(CleanAIError, RuntimeError):
    """A runner misbehaved (wrong output type or batch size) or cannot be measured as asked."""


@runtime_checkable
class Runner(Protocol):
    """What the benchmark needs from a model variant, whatever engine runs it."""

    name: str
    backend: str
    provider: str | None

    def __call__(self, inputs: Any) -> torch.Tensor:
        """Logits for one batch of inputs."""

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the deployable artifact into `directory` and return its path."""

    def set_threads(self, n: int) -> None:
        """Use `n` intra-op threads from now on."""

    def num_params(self) -> int | None:
        """Number of weights, or None when it cannot be known."""

    def macs(self, example_inputs: Any) -> int | None:
        """MACs of one forward pass on `example_inputs`, or None when it cannot be counted."""


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _as_logits(out: Any, name: str) -> torch.Tensor:
    try:
        return logits_of(out)
    except TypeError:
        raise BenchmarkError(f"runner {name!r} returned a {type(out).__name__}; expected a logits Tensor") from None


def graph_feed(name: str, kind: str, input_names: Sequence[str], inputs: Inputs) -> dict[str, Any]:
    """The inputs of a graph with `input_names`, by name: from a dict, a tuple in graph order, or one Tensor."""
    if is_tensor_tuple(inputs) and len(inputs) == len(input_names):
        inputs = dict(zip(input_names, inputs))  # positional inputs, in the graph's input order
    if isinstance(inputs, Mapping):
        missing = [n for n in input_names if n not in inputs]
        if missing:
            raise InputError(
                f"runner {name!r}: inputs lack {missing}; the {kind} graph takes {list(input_names)}, "
                f"got {list(inputs)}"
            )
        return {n: inputs[n] for n in input_names}
    if len(input_names) == 1:
        return {input_names[0]: inputs}
    raise InputError(
        f"runner {name!r}: the {kind} graph takes {list(input_names)}; pass a dict with those "
        f"names or a tuple of {len(input_names)} Tensors in that order, not "
        + (f"{len(inputs)} values" if isinstance(inputs, (tuple, list)) else f"a single {type(inputs).__name__}")
    )


def as_numpy(value: Any, dtype: Any) -> np.ndarray:
    """`value` (a Tensor or array-like) as a numpy array of `dtype` (None: as it is)."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return array if dtype is None or array.dtype == dtype else array.astype(dtype)


class CompileError(CleanAIError, RuntimeError):
    """`torch.compile` could not compile the model (an operator inductor lacks, no C++ compiler)."""


class TorchRunner:
    """Runs an `nn.Module` in eval mode under `torch.inference_mode`; deploys as safetensors.

    The module is put in eval mode (its training flag is the only thing changed). A module whose
    state holds quantized tensors, tensor subclasses or packed parameters, which safetensors cannot
    store, is saved with `torch.save(state_dict)` instead, as a `.pt` file. `compile=True` runs it
    through `torch.compile` (inductor, provider `inductor`), compiled on the first call; its kernels
    read the thread count at run time, so `set_threads` still applies (inductor fixes it at
    compile time by default).
    """

    backend = "torch"
    provider: str | None = None

    def __init__(self, model: nn.Module, name: str = "torch", compile: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"TorchRunner needs a torch.nn.Module, got {type(model).__name__}")
        self.model = model.eval()
        self.name = name
        accepted = accepted_kwargs(model.forward)
        self.input_names = None if accepted is None else tuple(accepted)
        self._forward: nn.Module = self.model
        self._compile_errors: tuple[type[Exception], ...] = ()  # caught as a CompileError; none when eager
        if compile:
            self._forward = torch.compile(self.model, options={"cpp.dynamic_threads": True})
            self._compile_errors = (torch._dynamo.exc.TorchDynamoException,)
            self.provider = "inductor"

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        try:
            with torch.inference_mode():
                out = call_model(self._forward, inputs)
        except self._compile_errors as exc:
            cause = getattr(exc, "inner_exception", None) or exc  # a backend failure wraps the compiler's error
            first = next((line for line in str(cause).splitlines() if line.strip()), "")
            raise CompileError(f"runner {self.name!r}: torch.compile (inductor) failed: {type(cause).__name__}: "
                               f"{first}. Inductor needs a working C++ compiler for CPU code; otherwise run the model "
                               "eagerly (TorchRunner(model)) or export it (OrtRunner, OpenVinoRunner)") from exc
        return _as_logits(out, self.name)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        state = self.model.state_dict()
        if all(type(t) in (torch.Tensor, nn.Parameter) and not t.is_quantized for t in state.values()):
            return save_safetensors(state, Path(directory) / f"{_file_stem(self.name)}.safetensors")
        path = Path(directory) / f"{_file_stem(self.name)}.pt"
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def set_threads(self, n: int) -> None:
        torch.set_num_threads(n)

    def num_params(self) -> int:
        """Elements of `parameters()`, plus the packed weights of quantized modules (`weight()` methods)."""
        total = sum(p.numel() for p in self.model.parameters())
        for module in self.model.modules():
            if callable(getattr(module, "weight", None)) and not isinstance(module.weight, torch.Tensor):
                total += module.weight().numel()
                bias = module.bias() if callable(getattr(module, "bias", None)) else None
                total += bias.numel() if isinstance(bias, torch.Tensor) else 0
        return total

    def macs(self, example_inputs: torch.Tensor | Mapping[str, torch.Tensor]) -> int | None:
        return count_macs(self.model, example_inputs)


_ONNX_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class OrtRunner:
    """Runs an ONNX model in an ONNX Runtime `InferenceSession`; deploys as one self-contained .onnx file."""

    backend = "onnxruntime"

    def __init__(
        self,
        path_or_bytes: str | os.PathLike[str] | bytes,
        name: str = "onnxruntime",
        threads: int | None = None,
        graph_optimization: str = "all",
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self._source: Path | bytes = (bytes(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray))
                                      else Path(path_or_bytes))
        self.name = name
        self.graph_optimization = graph_optimization
        self.providers = tuple(providers)
        self.threads = threads
        self._session = self._make_session()
        self.provider: str | None = self._session.get_providers()[0]
        self._inputs = {i.name: _ONNX_TO_NUMPY.get(i.type) for i in self._session.get_inputs()}
        self.input_names = tuple(self._inputs)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        example_inputs: torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...],
        name: str = "onnxruntime",
        threads: int | None = None,
        graph_optimization: str = "all",
        providers: Sequence[str] = ("CPUExecutionProvider",),
        **export_kwargs: Any,
    ) -> OrtRunner:
        """Export `model` with `export_onnx` (parity-checked against torch on `example_inputs`) and run the graph.

        The graph is held in memory (no file is left behind); `export_kwargs` go to `export_onnx`
        (`dynamic_sequence=True` for text models, `opset`, `atol`, ...).
        """
        with tempfile.TemporaryDirectory(prefix="cleanai-ort-") as tmp:
            exported = export_onnx(model, example_inputs, Path(tmp) / "model.onnx", **export_kwargs)
            if exported.data_path is not None:
                raise ExportError(f"{type(model).__name__} keeps its weights in a side file (over 2 GiB); export it "
                                     "with export_onnx(...) and pass the .onnx path to OrtRunner instead")
            graph = exported.path.read_bytes()
        return cls(graph, name=name, threads=threads, graph_optimization=graph_optimization, providers=providers)

    def _make_session(self) -> Any:
        return create_session(self._source, threads=self.threads, graph_optimization=self.graph_optimization,
                              providers=self.providers)

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        feed = graph_feed(self.name, "ONNX", self.input_names, inputs)
        arrays = {n: as_numpy(v, self._inputs[n]) for n, v in feed.items()}
        return torch.from_numpy(self._session.run(None, arrays)[0])

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Copy the model into `directory` as one file; weights kept as external data are folded in."""
        import onnx
        from onnx.external_data_helper import uses_external_data

        path = Path(directory) / f"{_file_stem(self.name)}.onnx"
        with atomic_path(path) as tmp:
            if isinstance(self._source, bytes):
                tmp.write_bytes(self._source)
            elif any(uses_external_data(t) for t in self._graph().initializer):
                onnx.save_model(self.onnx_model(), str(tmp), save_as_external_data=False)
            else:
                shutil.copyfile(self._source, tmp)
        return path

    def onnx_model(self) -> Any:
        """The ONNX model this runner runs (an `onnx.ModelProto`, weights included)."""
        import onnx

        return onnx.load_from_string(self._source) if isinstance(self._source, bytes) else onnx.load(str(self._source))

    def _graph(self) -> Any:
        import onnx

        if isinstance(self._source, bytes):
            return onnx.load_from_string(self._source).graph
        return onnx.load(str(self._source), load_external_data=False).graph

    def set_threads(self, n: int) -> None:
        """Rebuild the session with `n` intra-op threads (and one inter-op thread); kept when it has them already,
        so a benchmark that sets the threads before every timing round does not build a session each round."""
        if n != self.threads:
            self.threads = n
            self._session = self._make_session()

    def num_params(self) -> int:
        """Elements of the graph's initializers, except int32/int64 ones (shapes and indices, not weights).

        Quantized graphs also count their scales and zero points, a negligible overcount.
        """
        import onnx

        skip = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
        return sum(math.prod(t.dims) for t in self._graph().initializer if t.data_type not in skip)

    def macs(self, example_inputs: torch.Tensor | Mapping[str, torch.Tensor]) -> int | None:
        """MACs of the graph itself (not of the model it came from), sized by one run on `example_inputs`."""
        return count_onnx_macs(self.onnx_model(), example_inputs)


class TextClassifierRunner:
    """Tokenises a list of strings and hands the tensors to an inner runner; tokenising is part of the timing.

    Only the tokenizer outputs the inner runner accepts (its `input_names`; absent or None: all)
    are passed, so `token_type_ids` is dropped for a model whose forward takes only `input_ids`
    and `attention_mask`. Queries longer than `max_length` tokens are truncated; `max_length` is
    capped at the tokenizer's `model_max_length` (None: that limit), so a long query never overruns
    the model's position embeddings.

    Out-of-scope handling, with `oos_index` (the out-of-scope class, e.g. CLINC150's "oos"): a query
    whose top softmax probability is below `oos_threshold` (see `tune_oos_threshold`) is answered
    out-of-scope, and so is an empty or whitespace-only query. The runner's logits carry that answer:
    the out-of-scope logit of such a row is raised to 1 above the row's maximum. Without `oos_index`
    an empty query is refused with a ValueError naming its position.
    """

    def __init__(self, tokenizer: Any, inner: Runner, max_length: int | None = 64, name: str | None = None,
                 oos_index: int | None = None, oos_threshold: float | None = None) -> None:
        limit = getattr(tokenizer, "model_max_length", None)
        limit = limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None
        if max_length is None and limit is None:
            raise InputError("max_length=None means the tokenizer's model_max_length, which this tokenizer does not "
                             "set; give max_length (tokens)")
        if max_length is not None and max_length < 1:
            raise InputError(f"max_length must be a positive number of tokens, got {max_length}")
        if oos_threshold is not None and oos_index is None:
            raise InputError("oos_threshold needs oos_index, the class a low-confidence query is answered with")
        self.tokenizer = tokenizer
        self.inner = inner
        self.max_length = min(v for v in (max_length, limit) if v is not None)
        self.name = name or inner.name
        self.backend = inner.backend
        self.provider = inner.provider
        self.oos_index = oos_index
        self.oos_threshold = oos_threshold
        self.quant_check = getattr(inner, "quant_check", None)  # how close a quantized inner runner is to fp32
        self.precision = getattr(inner, "precision", None)  # what the inner runtime executes (OpenVINO)

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenizer tensors for `texts`, restricted to the names the inner runner accepts."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError(
                f"runner {self.name!r} takes a list of strings, got {type(texts).__name__}"
                + (" (wrap a single text in a list)" if isinstance(texts, str) else "")
            )
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        accepted = getattr(self.inner, "input_names", None)
        return {k: v for k, v in encoded.items() if accepted is None or k in accepted}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.answer(self.inner(self.encode(texts)), texts)

    def answer(self, logits: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """The model's `logits` for `texts` with the out-of-scope rules applied (see the class docstring)."""
        empty = torch.tensor([not t.strip() for t in texts], dtype=torch.bool)
        if empty.any() and self.oos_index is None:
            raise InputError(f"runner {self.name!r}: query {int(empty.nonzero()[0])} is empty or whitespace; give "
                             f"oos_index to answer such queries out-of-scope")
        if self.oos_index is None:
            return logits
        unsure = empty
        if self.oos_threshold is not None:
            unsure = unsure | (logits.float().softmax(-1).amax(-1) < self.oos_threshold)
        if not unsure.any():
            return logits
        logits = logits.clone()
        logits[unsure, self.oos_index] = logits[unsure].amax(-1) + 1.0
        return logits

    def tune_oos_threshold(self, data: Any, candidates: Sequence[float] | None = None) -> float:
        """Set and return the `oos_threshold` with the best accuracy on `data` ((texts, labels) batches, e.g. validation).

        Candidates default to 0 and every top probability seen in `data` (so the best split of the data is
        among them); ties go to the lowest threshold. Needs `oos_index`.
        """
        if self.oos_index is None:
            raise InputError("tune_oos_threshold needs oos_index, the out-of-scope class")
        saved, self.oos_threshold = self.oos_threshold, None
        try:
            parts = [(self(texts).float().softmax(-1), torch.as_tensor(labels)) for texts, labels in data]
        finally:
            self.oos_threshold = saved
        if not parts:
            raise InputError("tune_oos_threshold got no batches")
        probs, labels = torch.cat([p for p, _ in parts]), torch.cat([y for _, y in parts])
        confidence, predicted = probs.max(-1)
        grid = (torch.tensor(list(candidates), dtype=confidence.dtype) if candidates is not None
                else torch.cat([torch.zeros(1, dtype=confidence.dtype), confidence.unique()]))
        decided = torch.where(confidence[None, :] < grid[:, None], self.oos_index % probs.shape[1], predicted[None, :])
        accuracy = (decided == labels[None, :]).float().mean(1)
        self.oos_threshold = float(grid[int(accuracy.argmax())])
        return self.oos_threshold

    def save(self, directory: str | os.PathLike[str]) -> Path:
        return self.inner.save(directory)

    def set_threads(self, n: int) -> None:
        self.inner.set_threads(n)

    def num_params(self) -> int | None:
        return self.inner.num_params()

    def macs(self, example_inputs: list[str]) -> int | None:
        return self.inner.macs(self.encode(example_inputs))


def as_runner(obj: Runner | nn.Module) -> Runner:
    """Accept a Runner as is and wrap a bare `nn.Module` in a `TorchRunner`."""
    if isinstance(obj, nn.Module):
        return TorchRunner(obj, name=type(obj).__name__)
    if not isinstance(obj, Runner):
        needed = ("name", "backend", "provider", "__call__", "save", "set_threads", "num_params", "macs")
        missing = [m for m in needed if not hasattr(obj, m)]
        raise InputError(
            f"{type(obj).__name__} is not a Runner (missing {missing}); pass an nn.Module, or wrap a model in "
            "TorchRunner or OrtRunner"
        )
    return obj


def artifact_bytes(runner: Runner) -> int:
    """Bytes of what `runner` deploys: every file its `save()` writes (one file, a folder's files, or an OpenVINO
    IR's .xml and .bin)."""
    with tempfile.TemporaryDirectory(prefix="cleanai-size-") as tmp:
        runner.save(tmp)
        return sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
