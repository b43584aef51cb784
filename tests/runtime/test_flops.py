"""MAC counting: an ONNX graph is counted from its own nodes, by the same definition as the torch module it came from."""

from __future__ import annotations

import copy
import warnings

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cleanai.benchmark import BenchmarkConfig, benchmark
from cleanai.runtime import OrtRunner, TorchRunner, count_macs
from cleanai.runtime.flops import count_onnx_macs
from cleanai.export import export_onnx
from cleanai.models import create_model
from cleanai.pruning import PruneConfig, prune
from cleanai.quantization import QuantConfig, quantize

DIGITS = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
FAST = BenchmarkConfig(warmup=1, runs=3, throughput_runs=0, progress=False)


@pytest.fixture(scope="module")
def small_cnn_and_pruned() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = create_model("small_cnn").eval()
    pruned, _ = prune(model, DIGITS[:1], PruneConfig(ratio=0.5))
    return model, pruned.eval()


def _graph(model: nn.Module, example: torch.Tensor, tmp_path, name: str) -> onnx.ModelProto:
    return onnx.load(str(export_onnx(model, example, tmp_path / f"{name}.onnx").path))


def test_the_definition_counts_products_only_by_hand():
    """Conv: outputs x input channels per group x kernel; Linear: outputs x in_features; BatchNorm, pooling: zero."""
    conv_bn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, 5)).eval()
    expected = 8 * 8 * 8 * 3 * 3 * 3 + 8 * 5
    assert count_macs(conv_bn, torch.randn(1, 3, 8, 8)) == expected
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=2),
         helper.make_node("GlobalAveragePool", ["y"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "b"], ["out"], transB=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor("w", TensorProto.FLOAT, [6, 2, 3, 3], [0.1] * 108),
         helper.make_tensor("b", TensorProto.FLOAT, [5, 6], [0.1] * 30)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    # batch 2: 2 x 6 x 8 x 8 outputs, each 4 / 2 groups x 3 x 3 taps; Gemm 2 x 5 outputs, each 6 long
    assert count_onnx_macs(model, torch.randn(2, 4, 8, 8)) == 2 * 6 * 8 * 8 * 2 * 3 * 3 + 2 * 5 * 6


@pytest.mark.parametrize("name, example", [("small_cnn", DIGITS[:1]),
                                           ("resnet20", torch.rand(1, 3, 32, 32))])  # option-A pads, residual adds
def test_an_exported_graph_has_the_macs_of_its_torch_model(name, example, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    macs = count_onnx_macs(_graph(model, example, tmp_path, name), example)
    assert macs == count_macs(model, example) > 0


def test_an_exported_bert_counts_its_attention_products_like_torch(tiny_bert, tiny_bert_onnx):
    ids = torch.randint(1000, 2000, (1, 12), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    macs = count_onnx_macs(onnx.load(str(tiny_bert_onnx)), inputs)
    assert macs == count_macs(tiny_bert, inputs) > 0
    longer = {k: v.repeat(1, 2) for k, v in inputs.items()}  # the graph is sized at the shape it is run with
    assert count_onnx_macs(onnx.load(str(tiny_bert_onnx)), longer) == count_macs(tiny_bert, longer) > macs


def test_a_benchmarked_pruned_graph_reports_its_own_macs(small_cnn_and_pruned, tmp_path):
    """`cleanai benchmark --model small_cnn --onnx pruned.onnx` reported the unpruned model's MACs for the graph."""
    model, pruned = small_cnn_and_pruned
    path = export_onnx(pruned, DIGITS, tmp_path / "pruned.onnx").path
    data = DataLoader(TensorDataset(DIGITS, torch.zeros(4, dtype=torch.long)), batch_size=4)
    full_row = benchmark(TorchRunner(model), data, config=FAST)
    graph_row = benchmark(OrtRunner(path), data, config=FAST)
    assert graph_row.macs == count_macs(pruned, DIGITS[:1]) < full_row.macs == count_macs(model, DIGITS[:1])


@pytest.mark.parametrize("config", [QuantConfig.auto(), QuantConfig(mode="dynamic")], ids=["static", "dynamic"])
def test_int8_graphs_with_onnx_runtime_operators_count_the_same_products(small_cnn_and_pruned, config):
    """QLinearConv, ConvInteger, QGemm, DynamicQuantizeMatMul...: int8 changes the arithmetic, not the products."""
    model, _ = small_cnn_and_pruned
    runner = quantize(model, config, calib=[(DIGITS, None)], example_inputs=DIGITS[:1])
    ops = {n.op_type for n in runner.onnx_model().graph.node}
    assert not {"Conv", "Gemm", "MatMul"} & ops  # really the quantized operators that are being counted
    assert runner.macs(DIGITS[:1]) == count_macs(model, DIGITS[:1])


def test_a_graph_with_a_product_the_counter_does_not_cover_leaves_the_column_empty_with_a_warning():
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["x", "w"], ["out"], equation="bi,io->bo")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.5] * 12)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert count_onnx_macs(model, torch.randn(1, 4)) is None
    assert any("MACs left empty" in str(w.message) and "Einsum" in str(w.message) for w in caught)


def test_hf_conv1d_layers_count_as_the_linear_they_are():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from cleanai._hf import conv1d_to_linear

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=16, num_labels=3, pad_token_id=0)
    model, ids = GPT2ForSequenceClassification(config).eval(), {"input_ids": torch.randint(1, 100, (2, 8))}
    as_linear = copy.deepcopy(model)
    assert len(conv1d_to_linear(as_linear)) == 8
    # per token: c_attn 32x96, c_proj 32x32, c_fc 32x128, mlp c_proj 128x32 in each of 2 layers
    layers = 2 * 2 * 8 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)
    assert count_macs(model, ids) == count_macs(as_linear, ids) > layers


@pytest.mark.parametrize("torch_api", ["torchao", "legacy"])
def test_torch_dynamic_int8_linears_count_as_the_linears_they_replace(torch_api):
    """torch.ao's int8 Linear (the legacy dynamic path) was invisible to thop: MACs of the head only, or none."""
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(2, 16)
    runner = quantize(model, QuantConfig(mode="dynamic", backend="torch", torch_api=torch_api), example_inputs=x)
    assert runner.macs(x) == count_macs(model, x) == 2 * (16 * 32 + 32 * 4)
