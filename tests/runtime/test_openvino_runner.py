"""OpenVINO runner: same logits as torch, IR save/reload, int8 from a QDQ graph, and the refusal paths."""

from __future__ import annotations

import warnings

import pytest
import torch
from onnx import TensorProto, helper

from cleanai.benchmark import BenchmarkConfig, benchmark
from cleanai.errors import InputError
from cleanai.models import create_model
from cleanai.quantization import QuantConfig, quantize
from cleanai.runtime import (
    OpenVinoError,
    OpenVinoRunner,
    OpenVinoUnavailableError,
    OrtRunner,
    Runner,
    TextClassifierRunner,
    TorchRunner,
    artifact_bytes,
    openvino_available,
)
from cleanai.runtime import openvino_runner


def test_openvino_runner_from_onnx_matches_torch(cnn, cnn_onnx, cnn_data):
    x = cnn_data.tensors[0]
    runner = OpenVinoRunner(cnn_onnx, threads=1)
    assert isinstance(runner, Runner)
    assert runner.precision == "f32" and runner.provider == "CPU f32"
    assert torch.allclose(runner(x), TorchRunner(cnn)(x), atol=1e-5)
    assert runner.num_params() == sum(p.numel() for p in cnn.parameters())
    assert runner.macs(x[:1]) == OrtRunner(cnn_onnx).macs(x[:1])


def test_openvino_runner_converts_a_torch_module_and_keeps_keyword_inputs(tiny_bert, texts, tokenizer):
    encoded = tokenizer(texts[:3], padding=True, return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    runner = OpenVinoRunner.from_model(tiny_bert, inputs, name="bert ov", hint="throughput", streams=1)
    assert set(runner.input_names) == {"input_ids", "attention_mask"}
    with torch.no_grad():
        expected = tiny_bert(**inputs)
    assert torch.allclose(runner(inputs), expected, atol=1e-4)
    text_runner = TextClassifierRunner(tokenizer, runner)  # token_type_ids dropped: the graph does not take them
    assert torch.allclose(text_runner(texts[:3]), expected, atol=1e-4)
    assert text_runner.precision == "f32"


def test_openvino_runner_saves_ir_and_reloads_it(cnn_onnx, cnn_data, tmp_path):
    runner = OpenVinoRunner(cnn_onnx, name="cnn ir")
    xml = runner.save(tmp_path)
    assert xml == tmp_path / "cnn_ir.xml" and (tmp_path / "cnn_ir.bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn_ir.bin", "cnn_ir.xml"]
    assert artifact_bytes(runner) == xml.stat().st_size + (tmp_path / "cnn_ir.bin").stat().st_size
    x = cnn_data.tensors[0]
    assert torch.equal(OpenVinoRunner(xml)(x), runner(x))


def test_openvino_runner_runs_a_qdq_graph_in_int8(tmp_path, cnn_data):
    torch.manual_seed(0)
    model = create_model("small_cnn").eval()
    g = torch.Generator().manual_seed(3)
    calib = [torch.randn(16, 1, 8, 8, generator=g) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qdq = quantize(model, QuantConfig.auto(ort_optimization="disable"), calib=calib)
    runner = OpenVinoRunner(qdq.onnx_model().SerializeToString())
    assert runner.precision == "int8"
    x = calib[-1]
    with torch.no_grad():
        reference = model(x)
    assert (runner(x) - reference).abs().max() < 0.05 * reference.abs().max()
    assert (runner(x).argmax(1) == qdq(x).argmax(1)).float().mean() >= 0.9


def test_benchmark_rows_record_openvino_runtime_version_and_precision(cnn_onnx, cnn_loader):
    row = benchmark(OpenVinoRunner(cnn_onnx), cnn_loader, config=BenchmarkConfig(runs=3, warmup=1, throughput_runs=1,
                                                                                 progress=False))
    assert row.backend == "openvino" and row.precision == "f32" and row.provider == "CPU f32"
    assert row.versions["openvino"] and row.threads == 1


def test_bf16_is_refused_naming_the_cpu_flags_it_lacks(cnn_onnx, monkeypatch):
    monkeypatch.setattr(openvino_runner, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))
    with pytest.raises(InputError, match=r"bf16.*avx512_bf16 or amx_bf16"):
        OpenVinoRunner(cnn_onnx, precision="bf16")


def test_bf16_on_this_cpu_runs_bf16_or_is_refused(cnn_onnx):
    """The real CPU: bf16 executes as bf16 where the flags exist, and is refused (not silently run as f32) elsewhere."""
    if any(f in openvino_runner.cpu_flags() for f in openvino_runner.BF16_FLAGS):
        assert OpenVinoRunner(cnn_onnx, precision="bf16").precision == "bf16"
    else:
        with pytest.raises(InputError, match="avx512_bf16 or amx_bf16"):
            OpenVinoRunner(cnn_onnx, precision="bf16")


def test_an_operator_openvino_lacks_is_named(tmp_path):
    graph = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], domain="custom.ops")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.ops", 1)])
    with pytest.raises(OpenVinoError, match=r"no conversion for the operator\(s\) custom.ops.FancyOp.*OrtRunner"):
        OpenVinoRunner(model.SerializeToString())


def test_without_the_openvino_package_the_runner_names_it_and_the_rest_works(cnn, cnn_onnx, cnn_data, monkeypatch):
    monkeypatch.setattr(openvino_runner, "PACKAGE", "openvino_not_installed_here")  # a real failed import
    assert not openvino_available()
    with pytest.raises(OpenVinoUnavailableError, match=r"'openvino_not_installed_here' package.*pip install"):
        OpenVinoRunner(cnn_onnx)
    x = cnn_data.tensors[0]
    assert torch.allclose(OrtRunner(cnn_onnx)(x), TorchRunner(cnn)(x), atol=1e-5)


def test_bad_options_are_refused(cnn_onnx, tmp_path):
    with pytest.raises(InputError, match="hint must be 'latency' or 'throughput'"):
        OpenVinoRunner(cnn_onnx, hint="fast")
    with pytest.raises(InputError, match="streams must be an integer >= 1"):
        OpenVinoRunner(cnn_onnx, streams=0)
    with pytest.raises(InputError, match="is not a file"):
        OpenVinoRunner(tmp_path / "missing.onnx")
