"""Every quantize() result is checked against fp32 before it is returned: close, or a warning, or (strict) refused."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from cleanai.quantization import (
    QuantConfig,
    QuantizationAccuracyWarning,
    QuantizationError,
    quantize,
)
from cleanai.quantization import _torch
from cleanai.quantization.api import make_quantizer
from cleanai.quantization.check import make_probe, measure

# percentile=60 keeps only the middle 60% of each activation's range: outputs far from fp32.
CLIPPED = QuantConfig.avx2(calibration="percentile", percentile=60.0)


@pytest.fixture(scope="module")
def densenet(densenet_pattern: nn.Module) -> tuple[nn.Module, list]:
    g = torch.Generator().manual_seed(1)
    return densenet_pattern, [(torch.randn(8, 3, 16, 16, generator=g), torch.zeros(8, dtype=torch.long))
                              for _ in range(4)]


TORCH_STATIC = QuantConfig(mode="static", backend="torch", compile=False)


def test_torch_static_keeps_the_batchnorm_of_a_shared_conv_output_and_passes(densenet: tuple) -> None:
    model, calib = densenet
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationAccuracyWarning)
        runner = quantize(model, TORCH_STATIC.model_copy(update={"strict": True}), calib=calib)
    assert runner.quant_check.sqnr_db > 25 and runner.quant_check.held_out and runner.quant_check.samples == 16
    graph = runner.model.graph_module.graph
    assert any("addcmul" in str(n.target) for n in graph.nodes)  # its own op, not folded into the conv the cat reads
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert (model(x) - runner(x)).abs().max() < 0.05 * model(x).abs().max()


def test_the_check_catches_the_wrong_fold_that_torchao_does(densenet: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    model, calib = densenet
    monkeypatch.setattr(_torch, "_fold_batchnorm", lambda m, _example: copy.deepcopy(m))  # torchao folds it, wrongly
    with pytest.warns(QuantizationAccuracyWarning, match=r"output SQNR -?\d+\.\d dB < min_sqnr_db 15"):
        runner = quantize(model, TORCH_STATIC, calib=calib)
    assert runner.quant_check.sqnr_db < 15
    with pytest.raises(QuantizationError, match=r"SQNR .* dB < min_sqnr_db 15.*backend='onnxruntime' mode='static'.*"
                                                r"nodes_to_exclude.*quantize_with_accuracy_budget.*strict=True"):
        quantize(model, TORCH_STATIC.model_copy(update={"strict": True}), calib=calib)


def test_a_clipping_calibration_warns_or_is_refused_with_its_numbers(tiny_cnn: nn.Module, cnn_calib: list) -> None:
    with pytest.warns(QuantizationAccuracyWarning, match=r"on 16 samples of 1 calibration batch\(es\) held back"):
        runner = quantize(tiny_cnn, CLIPPED, calib=cnn_calib)
    assert runner.quant_check.sqnr_db < 15
    with pytest.raises(QuantizationError, match=r"SQNR \d+\.\d dB < min_sqnr_db 15"):
        quantize(tiny_cnn, CLIPPED.model_copy(update={"strict": True}), calib=cnn_calib)
    lenient = quantize(tiny_cnn, CLIPPED.model_copy(update={"min_sqnr_db": 0.0, "min_top1_agreement": 0.0}),
                       calib=cnn_calib)
    assert lenient.quant_check.sqnr_db == pytest.approx(runner.quant_check.sqnr_db, abs=1e-6)


def test_held_back_batches_are_not_calibrated_on(tiny_cnn: nn.Module) -> None:
    calib = [(torch.full((4, 1, 8, 8), float(i)), torch.zeros(4, dtype=torch.long)) for i in range(6)]
    config = QuantConfig(mode="static", backend="torch", check_batches=2, calibration_batches=3)
    quantizer = make_quantizer(tiny_cnn, config, calib, None, None)
    assert [float(x[0, 0, 0, 0]) for x in quantizer.calib_inputs] == [0.0, 1.0, 2.0]
    assert [float(x[0, 0, 0, 0]) for x in quantizer.probe.inputs] == [3.0, 4.0]
    assert quantizer.probe.held_out
    one = make_quantizer(tiny_cnn, config, calib[:1], None, None)  # nothing to spare: checked on it, and said so
    assert not one.probe.held_out and "none could be held back" in one.probe.source


def test_a_result_that_crashes_is_refused() -> None:
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 2, 64, batch_first=True), 2).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on nested tensors and legacy quantization
        with pytest.raises(QuantizationError, match=r"the quantized model fails on the example inputs, which fp32 runs "
                                                    r"on \(AttributeError: .*\); it is not returned"):
            quantize(encoder, QuantConfig(backend="torch", mode="dynamic"), example_inputs=torch.randn(2, 5, 32))


def test_a_failing_fp32_candidate_is_named_as_itself_without_quantization_advice(tiny_mlp: nn.Module) -> None:
    probe = make_probe(tiny_mlp, [torch.randn(4, 16)], True, "the benchmark data", "choose_runtime")

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("an operator this runtime lacks")

    with pytest.raises(QuantizationError) as raised:
        measure(broken, probe, "choose_runtime", "the torch compile candidate")
    message = str(raised.value)
    assert message.startswith("choose_runtime: the torch compile candidate fails on the benchmark data, which fp32 "
                              "runs on (RuntimeError: an operator this runtime lacks); it is not returned")
    assert "quantized" not in message and "nodes_to_exclude" not in message


def test_a_model_without_logits_is_refused_before_training(tiny_mlp: nn.Module, mlp_calib: list,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"features": self.fc(x)}

    def no_training(*_args: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(_torch, "_fine_tune", no_training)
    for config in (QuantConfig(mode="qat"), QuantConfig(mode="qat", backend="torch"), QuantConfig.avx2()):
        with pytest.raises(QuantizationError, match="Features returns a dict; quantize needs a model that returns a "
                                                    "logits Tensor or an object with a .logits Tensor"):
            quantize(Features(), config, calib=mlp_calib)


def test_an_unchecked_result_warns_and_strict_refuses(tiny_mlp: nn.Module) -> None:
    config = QuantConfig(backend="torch", mode="weight_only")
    with pytest.warns(QuantizationAccuracyWarning, match="not checked against fp32.*pass calib or example_inputs"):
        runner = quantize(tiny_mlp, config)
    assert runner.quant_check is None
    with pytest.raises(QuantizationError, match="not checked against fp32"):
        quantize(tiny_mlp, config.model_copy(update={"strict": True}))


def test_roberta_pt2e_keeps_integer_ids_out_of_observers() -> None:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=40, num_labels=3, pad_token_id=1)).eval()
    g = torch.Generator().manual_seed(0)
    calib = []
    for _ in range(3):
        ids = torch.randint(3, 100, (4, 10), generator=g)
        calib.append(({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.zeros(4, dtype=torch.long)))
    runner = quantize(model, TORCH_STATIC.model_copy(update={"strict": True}), calib=calib)  # "histogram_cpu" before
    assert runner.quant_check.sqnr_db > 15
