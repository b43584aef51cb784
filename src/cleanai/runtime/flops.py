"""Multiply-accumulate counts of what is measured: a torch module (ultralytics-thop, the one counter that also
sees attention under SDPA) or an ONNX graph (its own nodes, sized by one run in ONNX Runtime).

Both count the same thing, so a torch model and its ONNX export get the same number: the products of
convolutions (output elements x input channels per group x kernel size), linear layers and matrix
products (output elements x the contracted length), and attention's Q·K and A·V products. Bias,
norms, pooling, softmax, activations, upsampling and embedding lookups count zero: they are not
multiply-accumulates, and a deployed graph folds or fuses most of them.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cleanai._batches import is_tensor_tuple
from cleanai._hf import conv1d_types

# thop rules for layers that are no multiply-accumulate products (see the module docstring): counted as zero.
_NOT_PRODUCTS = ("count_normalization", "count_prelu", "count_softmax", "count_avgpool", "count_adap_avgpool",
                 "count_upsample", "count_embedding")


def _count_linear_like(features: str) -> Any:
    """A thop rule for a Linear-like layer thop does not know (transformers' Conv1D, torch.ao's int8 Linear):
    output elements x its input features, read from the attribute `features`."""
    def rule(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        module.total_ops += torch.DoubleTensor([output.numel() * int(getattr(module, features))])
    return rule


def _int8_linears() -> tuple[type, ...]:
    """torch.ao's quantized Linear layers (dynamic and static int8), which thop does not recognise."""
    from torch.ao.nn import quantized

    return quantized.Linear, quantized.dynamic.Linear


class _KeywordCall(nn.Module):
    """Lets thop (which calls `model(*inputs)`) drive a model that takes keyword tensors."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *values: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, values)))


def count_macs(model: nn.Module, example_inputs: torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...]
               ) -> int | None:
    """MACs of one forward pass on `example_inputs` (the whole batch, not per sample), as the module docstring
    defines them.

    Counted on a deep copy, so no hook, buffer or mode change can leak into `model`; torch.ao's int8 Linear
    layers count as the Linear they replace. None when thop recognises no operation at all: not a real zero.
    """
    from thop import profile  # imported lazily: thop is only needed when MACs are asked for
    from thop.profile import register_hooks
    from thop.vision.basic_hooks import zero_ops

    clone = copy.deepcopy(model)
    if isinstance(example_inputs, Mapping):
        names = tuple(example_inputs)
        clone, args = _KeywordCall(clone, names), tuple(example_inputs[n] for n in names)
    else:
        args = tuple(example_inputs) if is_tensor_tuple(example_inputs) else (example_inputs,)
    rules = {kind: zero_ops for kind, rule in register_hooks.items() if rule.__name__ in _NOT_PRODUCTS}
    rules.update(dict.fromkeys(conv1d_types(model), _count_linear_like("nx")))
    rules.update(dict.fromkeys(_int8_linears(), _count_linear_like("in_features")))
    macs, _ = profile(clone, inputs=args, custom_ops=rules, verbose=False)
    return int(macs) or None


# ONNX operators (default and com.microsoft domains) that multiply-accumulate -> the input whose shape they need:
# a convolution's weight (out, in / groups, *kernel), a matrix product's left operand (..., contracted).
_CONVS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1, "NhwcFusedConv": 1}
_MATMULS = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0, "MatMulIntegerToFloat": 0,
            "DynamicQuantizeMatMul": 0, "FusedMatMul": 0, "Gemm": 0, "QGemm": 0}
# Products not counted in a graph (fused attention, recurrent cells, einsum...): such a graph's MACs are unknown.
_UNCOUNTED = {"ConvTranspose", "QLinearConvTranspose", "Einsum", "Attention", "MultiHeadAttention", "QAttention",
              "LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"}


def count_onnx_macs(model: Any, example_inputs: torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...]
                    ) -> int | None:
    """MACs of one run of the ONNX `model` (a ModelProto) on `example_inputs`, as the module docstring defines them.

    The shapes are those of a real run: the graph is run once in ONNX Runtime on the example with
    the products' operands exposed as outputs, so every operator ONNX Runtime runs (its fused and
    quantized ones included) is sized exactly. None, with a warning saying why, when the graph holds
    a product this counter does not cover.
    """
    import onnx

    graph = model.graph
    nodes = [n for n in graph.node if n.op_type in _CONVS or n.op_type in _MATMULS or n.op_type in _UNCOUNTED]
    uncovered = next((n for n in nodes if n.op_type in _UNCOUNTED), None)
    if uncovered is not None:
        warnings.warn(f"MACs left empty: the graph holds a {uncovered.op_type} node ({uncovered.name!r}), "
                      "which the MAC counter does not cover", stacklevel=2)
        return None
    operands = [(n.input[_CONVS.get(n.op_type, _MATMULS.get(n.op_type, 0))], n.output[0]) for n in nodes]
    shapes = _run_shapes(model, example_inputs, {name for pair in operands for name in pair})
    total = 0
    for node, names in zip(nodes, operands):
        operand, out = (shapes[name] for name in names)
        if node.op_type in _CONVS:
            total += math.prod(out) * math.prod(operand[1:])
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        total += math.prod(out) * (operand[-2] if attrs.get("transA", 0) else operand[-1])
    return total or None


def _run_shapes(model: Any, example_inputs: torch.Tensor | Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...],
                names: set[str]) -> dict[str, list[int]]:
    """The shapes of the values `names` when `model` runs on `example_inputs` (initializers read, not run)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    shapes = {t.name: list(t.dims) for t in model.graph.initializer if t.name in names}
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if isinstance(example_inputs, Mapping):
        feeds = dict(example_inputs)
    else:  # positional inputs (one tensor, or a tuple of them) in the graph's input order
        values = example_inputs if is_tensor_tuple(example_inputs) else (example_inputs,)
        feeds = {graph_input.name: value for graph_input, value in zip(inputs, values)}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    outputs = sorted(names - set(shapes) - {v.name for v in exposed.graph.output})
    exposed.graph.output.extend(onnx.ValueInfoProto(name=name) for name in outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every exposed value
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    arrays = {v.name: np.asarray(feeds[v.name].detach().cpu() if isinstance(feeds[v.name], torch.Tensor)
                                 else feeds[v.name],
                                 dtype=onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
              for v in inputs if v.name in feeds}
    wanted = [o.name for o in session.get_outputs()]
    shapes.update({name: list(value.shape) for name, value in zip(wanted, session.run(None, arrays))})
    return shapes
