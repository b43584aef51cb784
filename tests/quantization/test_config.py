"""QuantConfig: presets as constructors, and bad settings refused at construction with the field, value and options."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cleanai.errors import UnknownNameError
from cleanai.quantization import QuantConfig, list_presets


def test_presets_are_constructors_with_an_is_static_flag() -> None:
    vnni = QuantConfig.avx512_vnni(is_static=True)
    assert (vnni.mode, vnni.backend, vnni.per_channel) == ("static", "onnxruntime", True)
    assert (vnni.activation_dtype, vnni.weight_dtype, vnni.reduce_range) == ("uint8", "int8", False)
    assert vnni.is_static and vnni.needs_calibration
    dynamic = QuantConfig.avx512_vnni(is_static=False)
    assert dynamic.mode == "dynamic" and not dynamic.is_static and not dynamic.needs_calibration
    assert QuantConfig.avx2().reduce_range is True
    arm = QuantConfig.arm64(is_static=False, per_channel=False, nodes_to_exclude=["node_linear"])
    assert (arm.mode, arm.per_channel, arm.nodes_to_exclude) == ("dynamic", False, ["node_linear"])
    assert QuantConfig.avx2(reduce_range=False).reduce_range is False  # a preset's defaults can be overridden


def test_preset_by_name_and_unknown_preset_lists_the_valid_ones() -> None:
    assert list_presets() == ["arm64", "auto", "avx2", "avx512_vnni"]
    assert QuantConfig.preset("AVX512-VNNI", is_static=False) == QuantConfig.avx512_vnni(is_static=False)
    with pytest.raises(UnknownNameError, match="Valid quantization preset names: arm64, auto, avx2, avx512_vnni"):
        QuantConfig.preset("avx512")


def test_config_round_trips_through_json() -> None:
    config = QuantConfig(mode="static", calibration="percentile", percentile=99.9, nodes_to_exclude=["a"])
    assert QuantConfig.model_validate_json(config.model_dump_json()) == config
    assert config.describe() == "onnxruntime static uint8/int8 per-channel percentile@99.9 1 fp32"


@pytest.mark.parametrize(("settings", "message"), [
    ({"mode": "fp16"}, "mode='fp16' does not run on backend='onnxruntime'.*use backend='torch'"),
    ({"mode": "weight_only"}, "mode='weight_only' does not run on backend='onnxruntime'"),
    ({"mode": "int4"}, "mode"),
    ({"calibration": "kl"}, "calibration"),
    ({"percentile": 30.0}, r"percentile must be in \(50, 100\]"),
    ({"calibration_batches": 0}, "calibration_batches must be None"),
    ({"op_types": []}, "op_types must be None"),
    ({"backend": "torch", "mode": "static", "per_channel": False}, "X86InductorQuantizer.*'per_channel': False"),
    ({"backend": "torch", "mode": "static", "calibration": "entropy"}, "X86InductorQuantizer.*calibration"),
    ({"mode": "qat", "activation_dtype": "int8"}, "X86InductorQuantizer"),
    ({"backend": "torch", "mode": "static", "op_types": ["LSTM"]}, "quantizes torch.nn layer types Conv2d, Linear"),
    ({"backend": "torch", "mode": "dynamic", "torch_api": "torchao", "op_types": ["LSTM"]},
     "LSTM/GRU need torch_api='legacy'"),
    ({"mode": "static", "torch_api": "legacy"}, "needs backend='torch' and mode='dynamic'"),
    ({"mode": "static", "percentiles": 99.0}, "Extra inputs are not permitted"),
])
def test_bad_settings_name_the_field_and_what_is_allowed(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        QuantConfig(**settings)


def test_auto_preset_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from cleanai.quantization import config

    monkeypatch.setattr(config, "is_arm", lambda: False)
    monkeypatch.setattr(config, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert QuantConfig.auto() == QuantConfig.avx2()
    monkeypatch.setattr(config, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert QuantConfig.auto(is_static=False) == QuantConfig.avx512_vnni(is_static=False)
    monkeypatch.setattr(config, "is_arm", lambda: True)
    assert QuantConfig.preset("auto", per_channel=False) == QuantConfig.arm64(per_channel=False)
