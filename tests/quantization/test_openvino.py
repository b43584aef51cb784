"""backend="openvino": int8 executed by OpenVINO from CleanAI's QDQ graph or NNCF, checked against fp32 like every result."""

from __future__ import annotations

import warnings

import pytest
import torch

from pydantic import ValidationError
from cleanai.quantization import QuantConfig, quantize, quantize_with_accuracy_budget
from cleanai.runtime import OpenVinoRunner, TorchRunner, evaluate


@pytest.mark.parametrize("method", ["qdq", "nncf"])
def test_openvino_backend_returns_an_int8_openvino_artifact_close_to_fp32(digits, method, tmp_path):
    model, loaders = digits
    config = QuantConfig.auto(backend="openvino", openvino_method=method, calibration_batches=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a result far from fp32 would warn
        runner = quantize(model, config, calib=loaders.train)
    assert isinstance(runner, OpenVinoRunner) and runner.precision == "int8"
    assert runner.quant_check.held_out and runner.quant_check.top1_agreement >= 0.95
    fp32 = evaluate(TorchRunner(model), loaders.test).metrics["accuracy"]
    assert evaluate(runner, loaders.test).metrics["accuracy"] >= fp32 - 0.03
    xml = runner.save(tmp_path)
    x = next(iter(loaders.test))[0]
    assert torch.equal(OpenVinoRunner(xml)(x), runner(x))
    assert (method in runner.name) == (method == "nncf")


def test_openvino_int8_from_qdq_matches_onnx_runtime_on_the_same_graph(digits):
    model, loaders = digits
    calib = list(loaders.train)[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov = quantize(model, QuantConfig.auto(backend="openvino"), calib=calib)
        ort = quantize(model, QuantConfig.auto(ort_optimization="disable"), calib=calib)
    x = next(iter(loaders.test))[0]
    assert (ov(x).argmax(1) == ort(x).argmax(1)).float().mean() >= 0.97
    assert (ov(x) - ort(x)).abs().max() < 0.1 * ort(x).abs().max()


def test_accuracy_budget_search_runs_on_the_openvino_backend(digits):
    model, loaders = digits
    result = quantize_with_accuracy_budget(model, QuantConfig.auto(backend="openvino", calibration_batches=4),
                                           loaders.train, loaders.val, max_drop=0.02)
    assert result.baseline_backend == "openvino" and result.met
    assert isinstance(result.runner, OpenVinoRunner) and result.runner.precision == "int8"
    assert result.chosen.drop <= 0.02 and result.chosen.config.backend == "openvino"


def test_auto_route_takes_nncf_for_a_transformer_and_the_qdq_graph_for_a_cnn(digits, tiny_bert, bert_calib):
    model, loaders = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cnn = quantize(model, QuantConfig.auto(backend="openvino", calibration_batches=4), calib=loaders.train)
        bert = quantize(tiny_bert, QuantConfig.auto(backend="openvino"), calib=bert_calib)
        pinned = quantize(tiny_bert, QuantConfig.auto(backend="openvino", per_channel=False), calib=bert_calib)
    assert QuantConfig(backend="openvino").openvino_method == "auto"
    assert "nncf" not in cnn.name and "nncf" in bert.name and bert.precision == "int8"
    assert "nncf" not in pinned.name and "per-tensor" in pinned.name  # a setting NNCF fixes keeps the QDQ graph


def _activation_ranges(runner: OpenVinoRunner) -> list[tuple[float, float]]:
    """(input_low, input_high) of each FakeQuantize on an activation (not on a constant weight) of NNCF's graph."""
    ranges = []
    for op in runner.model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() not in (
                "Constant", "Convert"):
            low, high = (float(op.input_value(i).get_node().get_data().ravel()[0]) for i in (1, 2))
            ranges.append((low, high))
    return ranges


def test_activation_symmetric_picks_nncfs_preset_and_unset_takes_the_symmetric_one(tiny_bert, bert_calib):
    """NNCF's own default for a transformer (MIXED) is asymmetric activations; the config's `activation_symmetric`
    chooses instead, so the artifact is what the config says, and unset takes PERFORMANCE (symmetric: what measured
    faster on the MiniLM), on the route `auto` takes for a transformer too."""
    def symmetric(low: float, high: float) -> bool:  # 256 levels: [-128, 127] * scale, or [0, 255] * scale
        return low == 0 or abs(low / high + 128 / 127) < 1e-4

    settings = {"asymmetric": {"openvino_method": "nncf", "activation_symmetric": False},
                "symmetric": {"openvino_method": "nncf", "activation_symmetric": True},
                "unset": {"openvino_method": "nncf"}, "auto route": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = {name: quantize(tiny_bert, QuantConfig.auto(backend="openvino", **fields), calib=bert_calib)
                 for name, fields in settings.items()}
    for name in ("symmetric", "unset", "auto route"):
        assert _activation_ranges(built[name]) and all(symmetric(*r) for r in _activation_ranges(built[name]))
        assert "nncf symmetric" in built[name].name and built[name].precision == "int8"
    assert not all(symmetric(*r) for r in _activation_ranges(built["asymmetric"]))
    assert "symmetric" not in built["asymmetric"].name and built["asymmetric"].precision == "int8"
    assert QuantConfig().activations_symmetric() is False  # unset means asymmetric on ONNX Runtime


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "openvino", "mode": "dynamic"}, "does not run on backend='openvino'"),
        ({"backend": "onnxruntime", "openvino_method": "nncf"}, "chooses how backend='openvino' quantizes"),
        ({"backend": "openvino", "openvino_method": "nncf", "calibration": "entropy"}, "NNCF's own settings"),
    ],
)
def test_openvino_configs_that_cannot_apply_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        QuantConfig(**fields)
