"""The affine maths reproduce torch's observers and quantize/dequantize kernels exactly; errors are measured right."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from cleanai.quantization import affine

# torch.ao observers and torch.quantize_per_* are the reference here; torch warns that they are deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*deprecated:UserWarning")

TORCH_DTYPE = {"int8": torch.qint8, "uint8": torch.quint8}
CASES = [(dtype, symmetric, reduce_range) for dtype in ("int8", "uint8") for symmetric in (False, True)
         for reduce_range in (False, True) if not (dtype == "uint8" and symmetric and reduce_range)]


def samples(n: int = 40) -> list[torch.Tensor]:
    """Tensors of many scales and offsets (ties of round-half-to-even occur among these)."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(32, 17, generator=g) * float(torch.rand(1, generator=g)) * 5
            + float(torch.randn(1, generator=g)) for _ in range(n)]


@pytest.mark.parametrize(("dtype", "symmetric", "reduce_range"), CASES)
def test_per_tensor_qparams_and_integers_equal_torch(dtype: str, symmetric: bool, reduce_range: bool) -> None:
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    for x in samples():
        observer = MinMaxObserver(dtype=TORCH_DTYPE[dtype], qscheme=qscheme, reduce_range=reduce_range)
        observer(x)
        scale_ref, zp_ref = observer.calculate_qparams()
        scale, zp = affine.qparams(*affine.tensor_range(x), dtype, symmetric, reduce_range)
        assert scale.item() == scale_ref.item() and zp.item() == zp_ref.item()
        q_ref = torch.quantize_per_tensor(x, scale_ref.item(), int(zp_ref), TORCH_DTYPE[dtype])
        q = affine.quantize(x, scale, zp, dtype)
        assert q.dtype == (torch.int8 if dtype == "int8" else torch.uint8)
        assert torch.equal(q, q_ref.int_repr())
        assert torch.equal(affine.dequantize(q, scale, zp), q_ref.dequantize())


@pytest.mark.parametrize(("dtype", "symmetric", "reduce_range"), CASES)
def test_per_channel_qparams_and_integers_equal_torch(dtype: str, symmetric: bool, reduce_range: bool) -> None:
    qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    for axis in (0, 1):
        for x in samples(20):
            observer = PerChannelMinMaxObserver(ch_axis=axis, dtype=TORCH_DTYPE[dtype], qscheme=qscheme,
                                                reduce_range=reduce_range)
            observer(x)
            scale_ref, zp_ref = observer.calculate_qparams()
            scale, zp = affine.qparams(*affine.tensor_range(x, axis), dtype, symmetric, reduce_range)
            assert torch.equal(scale, scale_ref.float()) and torch.equal(zp, zp_ref.long())
            q_ref = torch.quantize_per_channel(x, scale_ref.double(), zp_ref.long(), axis, TORCH_DTYPE[dtype])
            q = affine.quantize(x, scale, zp, dtype, axis=axis)
            assert torch.equal(q, q_ref.int_repr())
            assert torch.equal(affine.dequantize(q, scale, zp, axis=axis), q_ref.dequantize())


def test_ties_round_half_to_even_like_torch() -> None:
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 300.0, -300.0])
    assert affine.quantize(x, 1.0, 0, "int8").tolist() == [-2, -2, 0, 0, 2, 2, 127, -128]
    assert torch.equal(affine.quantize(x, 1.0, 0, "int8"), torch.quantize_per_tensor(x, 1.0, 0, torch.qint8).int_repr())


def test_ranges_include_zero_and_symmetric_centres_uint8() -> None:
    scale, zp = affine.qparams(2.0, 6.0, "uint8")  # all-positive range widened to [0, 6]: zero is exact
    assert zp.item() == 0 and scale.item() == pytest.approx(6 / 255)
    scale, zp = affine.qparams(-1.0, 3.0, "uint8", symmetric=True)
    assert zp.item() == 128 and scale.item() == pytest.approx(3 / 127.5)
    assert affine.qrange("int8", reduce_range=True) == (-64, 63)
    assert affine.qrange("uint8", reduce_range=True) == (0, 127)


def test_fake_quantize_error_is_bounded_by_half_a_step() -> None:
    x = samples(1)[0]
    scale, _ = affine.qparams(*affine.tensor_range(x), "uint8")
    err = affine.quantization_error(x, affine.fake_quantize(x, "uint8"))
    assert 0 < err.max_abs <= scale.item() / 2 + 1e-6
    assert err.sqnr_db > 30


def test_error_statistics_on_known_values() -> None:
    x = torch.tensor([3.0, 4.0])
    err = affine.quantization_error(x, torch.tensor([3.0, 3.0]))
    assert err.max_abs == 1.0 and err.mse == 0.5
    assert err.sqnr_db == pytest.approx(10 * math.log10(25 / 1))
    assert affine.quantization_error(x, x.clone()).sqnr_db == math.inf


def test_per_channel_weights_lose_less_than_per_tensor() -> None:
    w = torch.randn(8, 16) * torch.logspace(-2, 1, 8).unsqueeze(1)  # channels of very different scales
    per_tensor = affine.quantization_error(w, affine.fake_quantize(w, "int8", symmetric=True))
    per_channel = affine.quantization_error(w, affine.fake_quantize(w, "int8", symmetric=True, axis=0))
    assert per_channel.sqnr_db > per_tensor.sqnr_db + 3


def test_layer_errors_tabulates_weights_and_input_activations(tiny_cnn: nn.Module, cnn_calib: list) -> None:
    rows = affine.layer_errors(tiny_cnn, cnn_calib)
    assert [r.layer for r in rows] == ["features.0.0", "features.1.0", "features.3.0", "classifier"]
    assert [r.type for r in rows] == ["Conv2d", "Conv2d", "Conv2d", "Linear"]
    assert rows[0].params == 16 * 9 and rows[-1].params == 64 * 10 + 10
    for row in rows:
        assert row.activation is not None and 10 < row.activation.sqnr_db < math.inf
        assert 20 < row.weight.sqnr_db < math.inf
    first = tiny_cnn.features[0][0].weight.detach()
    expected = affine.quantization_error(first, affine.fake_quantize(first, "int8", symmetric=True, axis=0))
    assert rows[0].weight == expected
    flat = rows[0].to_dict()
    assert flat["layer"] == "features.0.0" and flat["weight_sqnr_db"] == expected.sqnr_db
    assert set(flat) >= {"activation_max_abs", "activation_mse", "activation_sqnr_db"}
    assert tiny_cnn.training is False


def test_layer_errors_without_calibration_has_no_activation_rows(tiny_mlp: nn.Module) -> None:
    rows = affine.layer_errors(tiny_mlp, per_channel=False, reduce_range=True)
    assert len(rows) == 3 and all(r.activation is None for r in rows)
    assert rows[0].to_dict()["activation_sqnr_db"] is None
    w = tiny_mlp[0].weight.detach()
    assert rows[0].weight == affine.quantization_error(
        w, affine.fake_quantize(w, "int8", symmetric=True, reduce_range=True))


def test_bad_inputs_are_refused_with_the_reason(tiny_mlp: nn.Module) -> None:
    with pytest.raises(ValueError, match="min_val must be <= max_val"):
        affine.qparams(1.0, -1.0)
    with pytest.raises(ValueError, match="dtype must be one of int8, uint8"):
        affine.qrange("int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 scales given without axis"):
        affine.quantize(torch.randn(3, 2), torch.ones(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        affine.quantization_error(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="no layer of the types quantization touches"):
        affine.layer_errors(nn.Sequential(nn.ReLU()))
    with pytest.raises(Exception, match="calib yielded no batch"):
        affine.layer_errors(tiny_mlp, [])


def test_activation_errors_use_the_range_calibrated_over_all_batches_not_each_batchs_own() -> None:
    """Static quantization fixes one activation range from the calibration batches; a batch of small values is
    then quantized with the step the largest batch set. Checked against torch's own MinMaxObserver and kernels."""
    import warnings

    layer = nn.Sequential(nn.Linear(4, 2))
    g = torch.Generator().manual_seed(0)
    # three batches in [0, 1], one in [0, 100]: calibrated, all four share the coarse step of the last one
    batches = [torch.rand(8, 4, generator=g) for _ in range(3)] + [100 * torch.rand(8, 4, generator=g)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, still the independent reference
        from torch.ao.quantization import MinMaxObserver

        observer = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
        for x in batches:
            observer(x)
        scale, zero_point = observer.calculate_qparams()
    x = torch.cat(batches)
    x_hat = torch.dequantize(torch.quantize_per_tensor(x, float(scale), int(zero_point), torch.quint8))
    noise = (x.double() - x_hat.double()).square()
    row = affine.layer_errors(layer, batches)[0]
    assert row.activation.mse == pytest.approx(float(noise.mean()), rel=1e-6)
    assert row.activation.sqnr_db == pytest.approx(10 * math.log10(float(x.double().square().sum() / noise.sum())))
    # per-batch ranges would quantize the [0, 1] batches 100 times more finely: a quarter of the error
    own = torch.cat([torch.dequantize(torch.quantize_per_tensor(b, float(b.max()) / 255, 0, torch.quint8))
                     for b in batches])
    assert row.activation.mse > 2 * float((x.double() - own.double()).square().mean())
