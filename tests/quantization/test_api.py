"""quantize(): every mode x backend this machine runs yields a runnable artifact close to fp32; bad input is refused."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from torch import nn

from cleanai.runtime import OrtRunner, TorchRunner
from cleanai.errors import DataError
from cleanai.export import export_onnx
from cleanai.quantization import (
    ExportedModule,
    Int8SaturationWarning,
    LegacyQuantizationWarning,
    QuantConfig,
    QuantizationError,
    quantize,
)
from cleanai.quantization.api import make_quantizer


def ops(runner: OrtRunner, tmp_path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(runner.save(tmp_path))).graph.node]


def fp32_onnx_bytes(model: nn.Module, example: object, tmp_path: Path) -> int:
    result = export_onnx(model, example, tmp_path / "fp32.onnx", dynamic_sequence=isinstance(example, dict))
    return result.path.stat().st_size


# ---------------------------------------------------------------------- onnxruntime


def test_ort_static_is_qdq_per_channel_smaller_and_close(tiny_cnn: nn.Module, cnn_calib: list, tmp_path: Path,
                                                         artifact_bytes: Callable, sqnr_db: Callable) -> None:
    config = QuantConfig.avx2(ort_optimization="disable")  # the portable QDQ graph, as quantize_static wrote it
    runner = quantize(tiny_cnn, config, calib=cnn_calib, workdir=tmp_path / "work")
    assert isinstance(runner, OrtRunner)
    assert runner.name == "SmallCNN onnxruntime static uint8/int8 per-channel minmax reduce-range"
    graph = onnx.load(str(runner.save(tmp_path))).graph
    kinds = [n.op_type for n in graph.node]
    assert kinds.count("QuantizeLinear") >= 4 and kinds.count("DequantizeLinear") >= 8
    weights = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4}
    assert sorted(t.dims[0] for t in weights.values()) == [16, 32, 64]
    scales = {n.input[0]: n.input[1] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    inits = {t.name: t for t in graph.initializer}
    assert {tuple(inits[s].dims) for s in scales.values()} == {(16,), (32,), (64,)}  # one scale per output channel
    activations = [t for t in graph.initializer if t.data_type == onnx.TensorProto.UINT8]
    assert activations  # uint8 activation zero points
    assert sorted(p.name for p in (tmp_path / "work").iterdir())[:3] == [
        "calibration-minmax-all.json", "fp32-prepared.onnx", "fp32.onnx"]
    size = artifact_bytes(runner)
    assert size < fp32_onnx_bytes(tiny_cnn, cnn_calib[0][0], tmp_path) / 2.5
    x = torch.randn(5, 1, 8, 8)  # another batch size: the batch axis is dynamic
    assert sqnr_db(tiny_cnn(x), runner(x)) > 25


def test_ort_ranges_cached_by_a_build_with_excluded_layers_serve_a_build_without(
        tiny_cnn: nn.Module, cnn_calib: list, tmp_path: Path) -> None:
    """ONNX Runtime calibrates every tensor of the quantized op types, whatever nodes are excluded, so one
    cache serves every fp32-fallback variant (the cache key leaves `nodes_to_exclude` out on purpose)."""
    config = QuantConfig.avx2(ort_optimization="disable")
    cached = make_quantizer(tiny_cnn, config, cnn_calib, None, tmp_path / "cached")
    first = cached.candidates(config)[0]
    cached.build(config.model_copy(update={"nodes_to_exclude": [first]}))  # calibrates, writes the cache
    fresh = make_quantizer(tiny_cnn, config, cnn_calib, None, tmp_path / "fresh")
    x = torch.randn(6, 1, 8, 8)
    assert torch.equal(cached.build(config)(x), fresh.build(config)(x))


def test_ort_ships_the_graph_optimised_offline_smaller_with_the_same_outputs(
        tiny_cnn: nn.Module, cnn_calib: list, tmp_path: Path, artifact_bytes: Callable) -> None:
    qdq = quantize(tiny_cnn, QuantConfig.avx2(ort_optimization="disable"), calib=cnn_calib, workdir=tmp_path / "a")
    fused = quantize(tiny_cnn, QuantConfig.avx2(), calib=cnn_calib, workdir=tmp_path / "b")
    assert QuantConfig.avx2().ort_optimization == "extended"
    kinds = ops(fused, tmp_path / "fused")
    assert kinds.count("QLinearConv") == 3 and "DequantizeLinear" not in kinds[:-1]  # only the output is dequantized
    assert artifact_bytes(fused) < artifact_bytes(qdq)
    x = torch.randn(7, 1, 8, 8)
    assert torch.allclose(fused(x), qdq(x), atol=1e-6)


@pytest.mark.parametrize(("calibration", "per_channel"), [("entropy", True), ("percentile", False)])
def test_ort_static_other_calibrations_run(tiny_cnn: nn.Module, cnn_calib: list, calibration: str, per_channel: bool,
                                           sqnr_db: Callable) -> None:
    config = QuantConfig.avx2(calibration=calibration, percentile=99.99, per_channel=per_channel)
    runner = quantize(tiny_cnn, config, calib=cnn_calib)
    x = cnn_calib[0][0]
    assert sqnr_db(tiny_cnn(x), runner(x)) > 15


def test_ort_dynamic_quantizes_gemm_layers_of_an_mlp(tiny_mlp: nn.Module, mlp_calib: list, tmp_path: Path,
                                                     artifact_bytes: Callable, sqnr_db: Callable) -> None:
    runner = quantize(tiny_mlp, QuantConfig.avx2(is_static=False), example_inputs=mlp_calib[0][0])
    kinds = ops(runner, tmp_path)
    # Gemm rewritten as MatMul + Add so ORT quantizes it; shipped with each int8 MatMul fused to its quantizer
    assert kinds.count("DynamicQuantizeMatMul") == 3 and "Gemm" not in kinds
    assert artifact_bytes(runner) < fp32_onnx_bytes(tiny_mlp, mlp_calib[0][0], tmp_path) / 2
    x = mlp_calib[1][0]
    assert sqnr_db(tiny_mlp(x), runner(x)) > 25


def test_ort_dynamic_on_tiny_bert_takes_any_sequence_length(tiny_bert: nn.Module, bert_calib: list, tmp_path: Path,
                                                            sqnr_db: Callable) -> None:
    runner = quantize(tiny_bert, QuantConfig.avx2(is_static=False, per_channel=False), calib=bert_calib)
    kinds = ops(runner, tmp_path)
    assert "DynamicQuantizeMatMul" in kinds and "MatMul" in kinds  # attention's activation x activation MatMuls stay
    for texts in (["hi"], ["a much longer question about the pin number of my account", "short"]):
        inputs = tiny_bert.encode(texts)
        assert sqnr_db(tiny_bert(**inputs), runner(inputs)) > 10


def test_ort_static_on_tiny_bert_with_chosen_op_types(tiny_bert: nn.Module, bert_calib: list, tmp_path: Path,
                                                      sqnr_db: Callable) -> None:
    runner = quantize(tiny_bert, QuantConfig.avx2(op_types=["MatMul", "Gemm"]), calib=bert_calib)
    kinds = ops(runner, tmp_path)
    assert "QuantizeLinear" in kinds and "MatMulInteger" not in kinds
    inputs = bert_calib[1][0]
    assert sqnr_db(tiny_bert(**inputs), runner(inputs)) > 10


def test_ort_static_on_tiny_bert_keeps_the_attention_mask_in_fp32(tiny_bert: nn.Module, bert_calib: list,
                                                                 tmp_path: Path, sqnr_db: Callable) -> None:
    """Padded batches give the mask tensors a calibrated range down to -inf: quantizing them gave NaN scales (the
    CLINC150 MiniLM's QDQ graph scored 0.96 % in benchmarks/runtimes.py); their nodes stay in fp32, every scale in
    the graph is finite."""
    runner = quantize(tiny_bert, QuantConfig.avx2(), calib=bert_calib)
    graph = onnx.load(str(runner.save(tmp_path))).graph
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(np.isfinite(scales[n.input[1]]).all() for n in qdq if n.input[1] in scales)
    inputs = bert_calib[0][0]
    assert bool((inputs["attention_mask"] == 0).any())  # the batch is padded: the mask is in play
    assert sqnr_db(tiny_bert(**inputs), runner(inputs)) > 10


def test_ort_qat_trains_then_exports_a_qdq_graph(tiny_cnn: nn.Module, cnn_calib: list, tmp_path: Path,
                                                 sqnr_db: Callable) -> None:
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    runner = quantize(tiny_cnn, QuantConfig(mode="qat", reduce_range=True), calib=cnn_calib)
    kinds = ops(runner, tmp_path)
    assert "QuantizeLinear" in kinds and "DequantizeLinear" in kinds and "BatchNormalization" not in kinds
    x = cnn_calib[0][0]
    assert sqnr_db(tiny_cnn(x), runner(x)) > 15
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())  # the caller's model is untouched


# ---------------------------------------------------------------------- torch


def test_torch_legacy_dynamic_reissues_the_deprecation_with_context(tiny_mlp: nn.Module, mlp_calib: list,
                                                                    sqnr_db: Callable) -> None:
    with pytest.warns(LegacyQuantizationWarning, match=r"quantize_dynamic.*deprecates.*torch_api='torchao'"):
        runner = quantize(tiny_mlp, QuantConfig(backend="torch", mode="dynamic"), calib=mlp_calib)
    assert isinstance(runner, TorchRunner)
    dynamic = [m for m in runner.model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
    assert [type(m).__name__ for m in dynamic] == ["Linear"] * 3
    assert type(tiny_mlp[0]) is nn.Linear  # a copy was quantized
    x = mlp_calib[0][0]
    assert sqnr_db(tiny_mlp(x), runner(x)) > 25


def test_torch_legacy_dynamic_quantizes_lstm(sqnr_db: Callable) -> None:
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(8, 16, batch_first=True)
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.lstm(x)[0][:, -1])

    torch.manual_seed(0)
    model = Tagger().eval()
    with pytest.warns(LegacyQuantizationWarning):
        runner = quantize(model, QuantConfig(backend="torch", mode="dynamic", torch_api="legacy",
                                             op_types=["LSTM"], nodes_to_exclude=["head"]),
                          example_inputs=torch.randn(4, 5, 8))
    assert type(runner.model.lstm).__name__ == "LSTM" and runner.model.lstm.__module__.startswith("torch.ao.nn")
    assert type(runner.model.head) is nn.Linear
    x = torch.randn(4, 5, 8)
    assert sqnr_db(model(x), runner(x)) > 20


@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_torchao_modes_on_tiny_bert(tiny_bert: nn.Module, bert_calib: list, mode: str, artifact_bytes: Callable,
                                    sqnr_db: Callable) -> None:
    config = QuantConfig(backend="torch", mode=mode, **({"torch_api": "torchao"} if mode == "dynamic" else {}))
    runner = quantize(tiny_bert, config, calib=bert_calib)
    quantized = [m for m in runner.model.modules() if isinstance(m, nn.Linear)]
    assert quantized and all(type(m.weight).__module__.startswith("torchao") for m in quantized)
    inputs = bert_calib[0][0]
    assert sqnr_db(tiny_bert(**inputs), runner(inputs)) > 10
    assert artifact_bytes(runner) < artifact_bytes(TorchRunner(tiny_bert))


def test_torch_static_pt2e_is_int8_smaller_and_close(tiny_cnn: nn.Module, cnn_calib: list, artifact_bytes: Callable,
                                                     sqnr_db: Callable) -> None:
    runner = quantize(tiny_cnn, QuantConfig(backend="torch", mode="static", compile=False), calib=cnn_calib)
    assert isinstance(runner.model, ExportedModule)
    state = runner.model.state_dict()
    assert sum(t.dtype == torch.int8 for t in state.values()) == 4
    assert not any(t.dtype == torch.float32 and t.dim() == 4 for t in state.values())  # float kernels dropped
    assert artifact_bytes(runner) < artifact_bytes(TorchRunner(tiny_cnn)) / 2.5
    x = torch.randn(3, 1, 8, 8)
    assert sqnr_db(tiny_cnn(x), runner(x)) > 25


def test_torch_qat_fine_tunes_with_the_trainer(tiny_mlp: nn.Module, mlp_calib: list, sqnr_db: Callable) -> None:
    config = QuantConfig(backend="torch", mode="qat", compile=False)
    runner = quantize(tiny_mlp, config, train_data=mlp_calib)
    graph = runner.model.graph_module.graph
    assert sum("quantize_per_tensor" in str(n.target) for n in graph.nodes) >= 3
    x = mlp_calib[0][0]
    assert sqnr_db(tiny_mlp(x), runner(x)) > 15


@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_dtype_casts_halve_the_artifact_and_return_float32(tiny_bert: nn.Module, bert_calib: list, mode: str,
                                                          artifact_bytes: Callable, sqnr_db: Callable) -> None:
    runner = quantize(tiny_bert, QuantConfig(backend="torch", mode=mode), calib=bert_calib)
    dtype = torch.float16 if mode == "fp16" else torch.bfloat16
    assert {p.dtype for p in runner.model.parameters()} == {dtype}
    inputs = bert_calib[0][0]
    out = runner(inputs)
    assert out.dtype == torch.float32
    assert sqnr_db(tiny_bert(**inputs), out) > (30 if mode == "fp16" else 15)
    assert artifact_bytes(runner) < 0.55 * artifact_bytes(TorchRunner(tiny_bert))
    assert next(tiny_bert.parameters()).dtype == torch.float32


# ---------------------------------------------------------------------- bad input


def test_static_needs_a_non_empty_calibration_set(tiny_cnn: nn.Module) -> None:
    with pytest.raises(DataError, match="needs calibration data, but calib yielded no batch"):
        quantize(tiny_cnn, QuantConfig.avx2(), calib=[])
    with pytest.raises(DataError, match="needs calibration data: pass calib="):
        quantize(tiny_cnn, QuantConfig(backend="torch", mode="static"))
    with pytest.raises(DataError, match="calib yielded no batch"):
        quantize(tiny_cnn, QuantConfig.avx2(is_static=False), calib=iter([]))


def test_model_without_quantizable_layers_says_so() -> None:
    with pytest.raises(QuantizationError, match="has no quantizable layers.*holds only Flatten, ReLU"):
        quantize(nn.Sequential(nn.ReLU(), nn.Flatten()), QuantConfig.avx2(is_static=False))


def test_full_range_uint8_x_int8_warns_on_a_cpu_without_vnni(tiny_mlp: nn.Module, mlp_calib: list,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from cleanai.quantization import api

    monkeypatch.setattr(api, "has_int8_dot", lambda: False)
    with pytest.warns(Int8SaturationWarning, match=r"no VNNI/AMX.*int16.*QuantConfig.avx2\(\)"):
        quantize(tiny_mlp, QuantConfig(mode="dynamic"), calib=mlp_calib)
    monkeypatch.setattr(api, "has_int8_dot", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Int8SaturationWarning)
        quantize(tiny_mlp, QuantConfig(mode="dynamic"), calib=mlp_calib)
        quantize(tiny_mlp, QuantConfig.avx2(is_static=False), calib=mlp_calib)


def test_excluding_every_layer_leaves_nothing_to_quantize(tiny_mlp: nn.Module, mlp_calib: list, tmp_path: Path) -> None:
    exported = export_onnx(tiny_mlp, mlp_calib[0][0], tmp_path / "mlp.onnx").path
    names = [n.name for n in onnx.load(str(exported)).graph.node if n.op_type == "Gemm"]
    with pytest.raises(QuantizationError, match="no quantizable layers left.*nodes_to_exclude keeps 3"):
        quantize(tiny_mlp, QuantConfig.avx2(is_static=False, nodes_to_exclude=names), calib=mlp_calib)
    with pytest.raises(QuantizationError, match="torchao quantizes nn.Linear layers and none was left"):
        quantize(tiny_mlp, QuantConfig(backend="torch", mode="weight_only", nodes_to_exclude=["0", "2", "4"]))


def test_unknown_torch_layer_names_list_the_real_ones(tiny_mlp: nn.Module) -> None:
    with pytest.raises(QuantizationError, match=r"\['fc1'\] are not modules of Sequential.*layers are: 0, 2, 4"):
        quantize(tiny_mlp, QuantConfig(backend="torch", mode="weight_only", nodes_to_exclude=["fc1"]))


def test_raw_text_calibration_points_to_text_collate(tiny_bert: nn.Module) -> None:
    with pytest.raises(QuantizationError, match="text_collate"):
        quantize(tiny_bert, QuantConfig.avx2(), calib=[(["some text"], torch.tensor([0]))])


def test_pt2e_names_a_module_called_twice(cnn_calib: list) -> None:
    class SharedReLU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.relu(self.conv2(self.relu(self.conv1(x)))).mean((2, 3)))

    with pytest.raises(QuantizationError, match=r"'relu' \(ReLU, 2 calls\).*Give each call its own module"):
        quantize(SharedReLU().eval(), QuantConfig(backend="torch", mode="static", compile=False), calib=cnn_calib)


def test_qat_needs_labelled_batches(tiny_mlp: nn.Module) -> None:
    with pytest.raises(QuantizationError, match="needs \\(inputs, targets\\) training batches"):
        quantize(tiny_mlp, QuantConfig(backend="torch", mode="qat", compile=False), calib=[torch.randn(8, 16)])


def test_not_a_module_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="needs a torch.nn.Module, got str"):
        quantize("model.onnx", QuantConfig())  # type: ignore[arg-type]


def test_compiled_pt2e_module_runs_the_compiled_graph(tiny_cnn: nn.Module, cnn_calib: list) -> None:
    runner = quantize(tiny_cnn, QuantConfig(backend="torch", mode="static", compile=False), calib=cnn_calib)
    x = cnn_calib[1][0]
    eager = runner(x)
    runner.model.compile_graph(backend="eager")  # inductor (the default) lowers to int8 kernels; eager keeps this fast
    assert runner.model.__dict__["_compiled"] is not None
    assert torch.allclose(runner(x), eager)


@pytest.mark.parametrize("config", [QuantConfig(), QuantConfig(backend="torch", mode="dynamic")],
                         ids=["ort-static", "torch-dynamic"])
def test_non_finite_calibration_data_is_a_data_error_naming_the_batch(tiny_cnn: nn.Module, cnn_calib: list,
                                                                      config: QuantConfig) -> None:
    """ONNX Runtime's calibrator used to fail on it with `AssertionError: scale issue`."""
    poisoned = [(x.clone(), y) for x, y in cnn_calib]
    poisoned[1][0][0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match=r"the calibration batches hold NaN or inf: batch 1 \(1 of 1024 values nan\)"):
        quantize(tiny_cnn, config, calib=poisoned)


# ---------------------------------------------------------------------- HF Conv1D (GPT-2's linear layers)
def tiny_gpt2() -> tuple[nn.Module, list]:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=16, num_labels=3,
                        pad_token_id=0, use_cache=False)
    calib = [({"input_ids": torch.randint(1, 100, (4, 8))}, torch.randint(0, 3, (4,))) for _ in range(2)]
    return GPT2ForSequenceClassification(config).eval(), calib


@pytest.mark.parametrize("torch_api", ["legacy", "torchao"])
def test_torch_dynamic_quantizes_every_gpt2_conv1d_not_only_the_head(torch_api: str, sqnr_db: Callable) -> None:
    model, calib = tiny_gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LegacyQuantizationWarning)
        runner = quantize(model, QuantConfig(backend="torch", mode="dynamic", torch_api=torch_api), calib=calib)
    kinds = [type(m) for m in runner.model.modules()]
    assert not any(k.__name__ == "Conv1D" for k in kinds)
    quantized = ([m for m in runner.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
                 if torch_api == "legacy" else
                 [m for m in runner.model.modules() if isinstance(m, nn.Linear)
                  and type(m.weight).__module__.startswith("torchao")])
    assert len(quantized) == 9  # 4 Conv1D in each of 2 blocks + the score head
    inputs = calib[1][0]
    assert sqnr_db(model(**inputs).logits, runner(inputs)) > 15


def test_ort_dynamic_quantizes_every_gpt2_conv1d(tmp_path: Path) -> None:
    model, calib = tiny_gpt2()
    kinds = ops(quantize(model, QuantConfig(mode="dynamic"), calib=calib), tmp_path)
    # 8 Conv1D + the head as int8 products; the 4 attention products (Q·K, A·V per block) stay float
    assert kinds.count("DynamicQuantizeMatMul") + kinds.count("MatMulInteger") == 9
