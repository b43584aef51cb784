"""torch backend: torchao `quantize_`, PT2E with X86InductorQuantizer (static and QAT), legacy dynamic, dtype casts.

Which API runs which mode:
- dynamic: `torch.ao.quantization.quantize_dynamic` (`torch_api="legacy"`, also `"auto"` while this
  torch ships it), or torchao `quantize_(Int8DynamicActivationInt8WeightConfig())` (`"torchao"`).
- weight_only: torchao `quantize_(Int8WeightOnlyConfig())`.
- static / qat: torch.export, then torchao's PT2E `prepare_pt2e` / `prepare_qat_pt2e` with
  X86InductorQuantizer, calibration (or fine-tuning with the Trainer), `convert_pt2e`, and
  `torch.compile` (inductor lowers the q/dq pattern to int8 kernels; without it the reference
  kernels run, correct but slow).
- fp16 / bf16: the weights cast, inputs cast on the way in and logits back to float32.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from cleanai._hf import HFConv1D, conv1d_to_linear, no_kv_cache
from cleanai.runtime import TorchRunner
from cleanai._batches import call_model, dynamic_dims, is_tensor_tuple, map_inputs, split_batch
from cleanai.quantization._common import Inputs
from cleanai.quantization.check import Probe
from cleanai.quantization.config import QuantConfig, QuantizationError


class LegacyQuantizationWarning(FutureWarning):
    """CleanAI used a torch.ao.quantization API that torch deprecates; the message says why and what replaces it."""


def _require_torchao() -> None:
    """Import torchao quietly: on a CPU build it logs that its CUDA-only kernels (mxfp8, cutlass) cannot load."""
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise QuantizationError("this mode needs the package 'torchao' (pip install 'torchao>=0.10'); "
                                "backend='onnxruntime' works without it") from None
    finally:
        log.setLevel(level)


def check_layer_names(model: nn.Module, names: Iterable[str]) -> None:
    """Refuse `nodes_to_exclude` entries that are not module names of `model`, listing some valid ones."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        layers = [n for n, m in modules.items() if n and isinstance(m, (nn.Linear, nn.modules.conv._ConvNd, HFConv1D))]
        shown = ", ".join(layers[:20]) + (" ..." if len(layers) > 20 else "")
        raise QuantizationError(f"nodes_to_exclude names {unknown} are not modules of {type(model).__name__}; "
                                f"its quantizable layers are: {shown}")


# ---------------------------------------------------------------------- dtype casting


class CastModel(nn.Module):
    """A model cast to fp16/bf16 that takes and returns float32: float inputs are cast in, outputs cast back."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype

    def _cast(self, value: Any) -> Any:
        return value.to(self.dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.model(*(self._cast(a) for a in args), **{k: self._cast(v) for k, v in kwargs.items()})
        out = getattr(out, "logits", out)
        return out.float()


def cast(model: nn.Module, config: QuantConfig) -> nn.Module:
    """A float16 or bfloat16 copy of `model` (as `config.mode` says) behind a float32 interface."""
    dtype = torch.float16 if config.mode == "fp16" else torch.bfloat16
    return CastModel(copy.deepcopy(model), dtype).eval()


# ---------------------------------------------------------------------- dynamic and weight-only


def dynamic_api(config: QuantConfig) -> str:
    """The API `config` resolves to: `legacy` when asked for (or `auto` and torch still ships it), else `torchao`."""
    if config.mode != "dynamic" or config.torch_api == "torchao":
        return "torchao"
    legacy = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
    available = legacy is not None and any(e != "none" for e in torch.backends.quantized.supported_engines)
    if available:
        return "legacy"
    if config.torch_api == "legacy":
        raise QuantizationError(
            f"torch_api='legacy' needs torch.ao.quantization.quantize_dynamic with a quantized engine, which torch "
            f"{torch.__version__} does not provide (engines: {torch.backends.quantized.supported_engines}); "
            "use torch_api='torchao' or backend='onnxruntime'")
    return "torchao"


def dynamic_or_weight_only(model: nn.Module, config: QuantConfig) -> nn.Module:
    """An int8 copy of `model`: dynamic (legacy quantize_dynamic or torchao) or torchao weight-only."""
    check_layer_names(model, config.nodes_to_exclude)
    qmodel = copy.deepcopy(model).eval()
    conv1d_to_linear(qmodel)  # transformers' Conv1D (GPT-2) is a Linear the quantizers would not see
    if dynamic_api(config) == "legacy":
        return _legacy_dynamic(qmodel, config)
    recurrent = sorted(set(config.op_types or ()) - {"Linear"})
    if recurrent:
        raise QuantizationError(f"op_types {recurrent} need torch.ao.quantization.quantize_dynamic, which torch "
                                f"{torch.__version__} no longer ships; torchao quantizes Linear layers only")
    _require_torchao()
    from torchao.quantization import (
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
        PerTensor,
        quantize_,
    )

    granularity = PerRow() if config.per_channel else PerTensor()
    method = (Int8DynamicActivationInt8WeightConfig(granularity=granularity, set_inductor_config=False)
              if config.mode == "dynamic" else Int8WeightOnlyConfig(granularity=granularity, set_inductor_config=False))
    excluded = set(config.nodes_to_exclude)
    quantize_(qmodel, method, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn not in excluded)
    done = [n for n, m in qmodel.named_modules() if isinstance(m, nn.Linear) and type(m.weight) is not nn.Parameter]
    if not done:
        raise QuantizationError(
            f"{type(model).__name__} has no quantizable layers for {config.describe()}: torchao quantizes nn.Linear "
            "layers and none was left to quantize"
            + (f" ({len(excluded)} kept in fp32 by nodes_to_exclude)" if excluded else "")
            + "; convolutions need mode='static'")
    return qmodel


def _legacy_dynamic(qmodel: nn.Module, config: QuantConfig) -> nn.Module:
    """`torch.ao.quantization.quantize_dynamic`; torch's deprecation notices are re-issued with why it is used."""
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
    )

    qconfig = per_channel_dynamic_qconfig if config.per_channel else default_dynamic_qconfig
    types = [getattr(nn, t) for t in (config.op_types or ["Linear", "LSTM", "GRU"])]
    spec: dict[Any, Any] = {t: qconfig for t in types}
    spec.update(dict.fromkeys(config.nodes_to_exclude))  # a module name mapped to None stays float
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qmodel = torch.ao.quantization.quantize_dynamic(qmodel, spec, dtype=torch.qint8)
    notices: list[str] = []
    for w in caught:
        text = str(w.message).strip()
        if issubclass(w.category, (DeprecationWarning, FutureWarning)) or "deprecated" in text:
            first = re.split(r"(?<=\.)\s", text.splitlines()[0].strip(), maxsplit=1)[0]  # its first sentence
            if first not in notices:
                notices.append(first)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if notices:
        warnings.warn(
            "backend='torch' mode='dynamic' ran torch.ao.quantization.quantize_dynamic, which torch "
            f"{torch.__version__} deprecates ({' / '.join(repr(n) for n in notices)}). CleanAI keeps this path "
            "while torch ships it because its fbgemm int8 kernels are fast on CPUs without int8 matmul "
            "instructions (VNNI, AMX), where its successor, torchao's Int8DynamicActivationInt8WeightConfig, "
            "runs slower than fp32. Pass torch_api='torchao' to use the successor, or use backend='onnxruntime'.",
            LegacyQuantizationWarning, stacklevel=5)
    done = [n for n, m in qmodel.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
    if not done:
        kinds = ", ".join(t.__name__ for t in types)
        raise QuantizationError(f"{type(qmodel).__name__} has no quantizable layers for {config.describe()}: "
                                f"quantize_dynamic converts {kinds} layers and found none to convert"
                                + (" (nodes_to_exclude keeps some in fp32)" if config.nodes_to_exclude else ""))
    return qmodel


# ---------------------------------------------------------------------- PT2E static and QAT


class ExportedModule(nn.Module):
    """A PT2E GraphModule as a plain module: `.train()` / `.eval()` switch its dropout and BatchNorm ops
    (torchao's `allow_exported_model_train_eval`), and `compile_graph` runs it through `torch.compile`."""

    def __init__(self, graph_module: torch.fx.GraphModule) -> None:
        super().__init__()
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        self.graph_module = allow_exported_model_train_eval(graph_module)
        self.training = graph_module.training
        self.__dict__["_compiled"] = None  # not a submodule: its weights are graph_module's

    def train(self, mode: bool = True) -> ExportedModule:
        super().train(mode)  # the graph module's allowed train()/eval() switch its ops ...
        self.graph_module.training = mode  # ... but leave its flag, which exporters read
        return self

    def compile_graph(self, backend: str = "inductor", **options: Any) -> ExportedModule:
        """Run the graph through `torch.compile` from now on (inductor `options` apply); for inference only."""
        self.__dict__["_compiled"] = torch.compile(self.graph_module, backend=backend, options=options or None)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        compiled = self.__dict__["_compiled"]
        return (self.graph_module if compiled is None else compiled)(*args, **kwargs)


def _export(model: nn.Module, example: Inputs) -> torch.fx.GraphModule:
    """torch.export with dynamic batch (and, for token inputs, sequence) dimensions, as `dynamic_dims` says."""
    example = map_inputs(example, lambda t: t if t.shape[0] >= 2 else torch.cat([t, t]))  # batch 1 would be fixed

    def dims(t: torch.Tensor) -> dict[int, Any]:
        return dict.fromkeys(dynamic_dims(t), torch.export.Dim.AUTO)

    if isinstance(example, dict):
        args, kwargs = (), dict(example)
        shapes: Any = {k: dims(v) for k, v in kwargs.items()}
    else:
        args, kwargs = (tuple(example) if is_tensor_tuple(example) else (example,)), {}
        shapes = tuple(dims(t) for t in args)
    try:
        with no_kv_cache(model):
            return torch.export.export(model, args, kwargs, dynamic_shapes=shapes).module()
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types (UserError, Unsupported, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuantizationError(f"torch.export cannot capture {type(model).__name__} for PT2E quantization "
                                f"({type(exc).__name__}: {first}); backend='onnxruntime' may export it") from None


def _reused_modules(model: nn.Module, example: Inputs) -> list[str]:
    """Leaf modules that one forward pass calls more than once, as `'name' (Type, n calls)`."""
    calls: dict[str, int] = {}

    def counter(name: str) -> Any:
        def count(_module: nn.Module, _args: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
        return count

    leaves = {n: m for n, m in model.named_modules() if not list(m.children())}
    handles = [m.register_forward_pre_hook(counter(n)) for n, m in leaves.items()]
    try:
        with torch.no_grad():
            call_model(model, example)
    finally:
        for h in handles:
            h.remove()
    return [f"{n!r} ({type(leaves[n]).__name__}, {c} calls)" for n, c in calls.items() if c > 1]


def _quantizer(config: QuantConfig, qat: bool) -> Any:
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantizer import Quantizer

    qconfig = xiq.get_default_x86_inductor_quantization_config(is_qat=qat, reduce_range=config.reduce_range)
    quantizer = xiq.X86InductorQuantizer()
    if config.op_types is None:
        quantizer.set_global(qconfig)
    for kind in config.op_types or ():
        quantizer.set_module_type_qconfig(getattr(nn, kind), qconfig)
    for name in config.nodes_to_exclude:
        quantizer.set_module_name_qconfig(name, None)

    class FloatOnly(Quantizer):
        """X86InductorQuantizer, minus its annotations of integer tensors: it annotates every add and mul, also
        those on integer ids (RoBERTa's position ids), whose histogram observers fail on integers."""

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return quantizer.transform_for_annotation(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            quantizer.annotate(model)
            for node in model.graph.nodes:
                note = node.meta.get("quantization_annotation")
                if note is not None and not all(map(_is_float, [*note.input_qspec_map, node])):
                    del node.meta["quantization_annotation"]
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            quantizer.validate(model)

    return FloatOnly()


def _is_float(node: torch.fx.Node) -> bool:
    """False when the node's value (as torch.export traced it) is a Tensor that is not floating point."""
    value = node.meta.get("val")
    return not isinstance(value, torch.Tensor) or value.is_floating_point()


def pt2e(model: nn.Module, config: QuantConfig, example: Inputs, calib_inputs: list[Inputs],
         train_data: Iterable[Any] | None = None, compile_model: bool | None = None) -> ExportedModule:
    """PT2E static quantization (or QAT when `config.mode == "qat"`) with X86InductorQuantizer; a converted module."""
    qat = config.mode == "qat"
    check_layer_names(model, config.nodes_to_exclude)
    if qat:
        _check_training_data(train_data)
    _require_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import (
        convert_pt2e,
        prepare_pt2e,
        prepare_qat_pt2e,
    )

    source = _fold_batchnorm(model, example)
    conv1d_to_linear(source)  # transformers' Conv1D (GPT-2): a Linear X86InductorQuantizer would not annotate
    graph = _export(source.train(qat), example)
    try:
        prepared = (prepare_qat_pt2e if qat else prepare_pt2e)(graph, _quantizer(config, qat))
    except ValueError as exc:
        if "more than one output node" not in str(exc):
            raise
        reused = _reused_modules(source.eval(), example)
        raise QuantizationError(
            f"X86InductorQuantizer cannot annotate {type(model).__name__}: a module called more than once in "
            f"forward ({', '.join(reused) or 'a shared module'}) gives one partition several outputs. Give each "
            "call its own module (as cleanai.models do), or use backend='onnxruntime'") from None
    module = ExportedModule(prepared).train(qat)
    if qat:
        _fine_tune(module, config, train_data)  # type: ignore[arg-type]  # checked above
    else:
        with torch.no_grad():
            for x in calib_inputs:
                call_model(module, x)
    module.eval()
    converted = convert_pt2e(prepared)
    _drop_unused_tensors(converted)
    if not any("quantize" in str(n.target) for n in converted.graph.nodes if n.op == "call_function"):
        raise QuantizationError(f"{type(model).__name__} has no quantizable layers for {config.describe()}: "
                                "X86InductorQuantizer annotated no Conv2d or Linear")
    result = ExportedModule(converted).eval()
    if compile_model if compile_model is not None else config.compile:
        # Without inductor's freezing pass: with torch 2.13 and torchao 0.18 it fails on these graphs
        # ("UnsupportedOperatorException: onednn.qconv_prepack").
        result.compile_graph()
    return result


def _fold_batchnorm(model: nn.Module, example: Inputs) -> nn.Module:
    """A copy of `model` with BatchNorm folded into the layers before it (cleanai.fusion), for PT2E.

    torchao's `prepare_pt2e` would fold every BatchNorm into the convolution before it, even when
    that convolution's output also feeds another op (DenseNet: `cat([y, relu(bn(y))])`), which then
    reads normalised values: outputs off by more than their range. cleanai.fusion folds only a
    BatchNorm that alone reads its layer's output; any other becomes its frozen per-channel affine
    map, so no BatchNorm op is left for torchao to fold (or, at convert time, to re-trace over a
    hundred patterns for: minutes on a laptop CPU, whatever the model's size). QAT then trains the
    folded weights with frozen BatchNorm statistics.
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return copy.deepcopy(model)
    from cleanai.fusion import FusionError, fuse_conv_bn

    try:
        fused = fuse_conv_bn(model, example_inputs=example)
    except FusionError:  # torch.fx could trace nothing to fold: every BatchNorm runs as its affine map
        fused = copy.deepcopy(model).eval()
    for name, module in list(fused.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            parent, _, attr = name.rpartition(".")
            setattr(fused.get_submodule(parent) if parent else fused, attr, _FrozenBatchNorm(module))
    return fused


class _FrozenBatchNorm(nn.Module):
    """An eval-mode BatchNorm as the per-channel affine map it is: training leaves its statistics as they were."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        with torch.no_grad():
            scale = torch.rsqrt(bn.running_var + bn.eps)  # type: ignore[operator]
            scale = scale * bn.weight if bn.weight is not None else scale
            shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)  # type: ignore[operator]
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        # One op: X86InductorQuantizer's QAT patterns take a conv's mul + add for conv-bn-add and fail on it.
        return torch.addcmul(self.shift.view(shape), x, self.scale.view(shape))


def _check_training_data(train_data: Iterable[Any] | None) -> None:
    if train_data is None:
        raise QuantizationError("mode='qat' fine-tunes the model: pass train_data=<(inputs, targets) batches> "
                                "(or calib, which is used when train_data is not given)")
    first = next(iter(train_data), None)
    if first is None or split_batch(first)[1] is None:
        raise QuantizationError("mode='qat' needs (inputs, targets) training batches; "
                                + ("train_data yielded none" if first is None else "the first batch has no targets"))


def _fine_tune(module: ExportedModule, config: QuantConfig, train_data: Iterable[Any]) -> None:
    from cleanai.training import Trainer

    Trainer(module, config=config.qat_training).fit(train_data)


def _drop_unused_tensors(graph_module: torch.fx.GraphModule) -> None:
    """Delete parameters and buffers the converted graph no longer reads (the float weights it replaced by int8)."""
    used = {n.target for n in graph_module.graph.nodes if n.op == "get_attr"}
    for name in [n for n, _ in [*graph_module.named_parameters(), *graph_module.named_buffers()] if n not in used]:
        owner_name, _, attr = name.rpartition(".")
        owner = graph_module.get_submodule(owner_name) if owner_name else graph_module
        delattr(owner, attr)


class TorchQuantizer:
    """Builds torch-backend variants of one model; the same interface as `OrtQuantizer` for the accuracy search."""

    def __init__(self, model: nn.Module, example: Inputs | None, calib_inputs: list[Inputs], name: str | None = None,
                 train_data: Iterable[Any] | None = None, probe: Probe | None = None) -> None:
        self.model = model
        self.probe = probe  # what each result is checked on against fp32
        self.example = example
        self.calib_inputs = calib_inputs
        self.train_data = train_data
        self.name = name or type(model).__name__

    def fp32_runner(self) -> TorchRunner:
        return TorchRunner(self.model, name=f"{self.name} torch fp32")

    def candidates(self, config: QuantConfig) -> list[str]:
        """Module names `config` quantizes, in definition order: the layers that may be kept in fp32."""
        if config.mode in ("fp16", "bf16"):
            return []
        if config.mode in ("static", "qat"):
            kinds = config.op_types or ["Conv2d", "Linear"]
        elif config.mode == "dynamic" and dynamic_api(config) == "legacy":
            kinds = config.op_types or ["Linear", "LSTM", "GRU"]
        else:
            kinds = ["Linear"]
        types = tuple(getattr(nn, k) for k in kinds)
        return [n for n, m in self.model.named_modules() if n and isinstance(m, types)]

    def build(self, config: QuantConfig) -> TorchRunner:
        if config.mode in ("fp16", "bf16"):
            module = cast(self.model, config)
        elif config.mode in ("dynamic", "weight_only"):
            module = dynamic_or_weight_only(self.model, config)
        else:
            if self.example is None:
                raise QuantizationError(f"mode={config.mode!r} traces the model with torch.export: "
                                        "pass example_inputs or calib")
            module = pt2e(self.model, config, self.example, self.calib_inputs, self.train_data)
        return TorchRunner(module, name=f"{self.name} {config.describe()}")

    def close(self) -> None:
        """Nothing to clean up (the ONNX Runtime backend deletes its work directory here)."""
