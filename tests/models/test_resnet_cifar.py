"""CIFAR ResNets: akamaster layout, real pretrained checkpoints, option-A shortcut exportable and traceable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cleanai.errors import CheckpointError
from cleanai.io import load_state_dict
from cleanai.models import CifarResNet, PadShortcut, akamaster_checkpoint, create_model

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.mark.parametrize(("name", "params"), [("resnet20", 269_722), ("resnet56", 853_018)])
def test_param_counts_match_the_paper_models(name: str, params: int) -> None:
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.input_size == (3, 32, 32)


def test_state_dict_names_follow_the_akamaster_layout() -> None:
    keys = set(create_model("resnet20").state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.bn2.bias",
            "layer3.2.conv2.weight", "linear.weight", "linear.bias"} <= keys
    assert not any("shortcut" in k for k in keys), "option A must be parameter-free"


def test_pad_shortcut_subsamples_and_zero_pads_channels_symmetrically() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    odd = PadShortcut(10, 13, stride=1)(torch.ones(1, 10, 2, 2))
    assert odd.shape == (1, 13, 2, 2) and odd.sum() == 40


def test_downsampling_blocks_use_a_named_pad_shortcut_module() -> None:
    model = create_model("resnet32")
    shortcuts = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert [(s.in_channels, s.out_channels, s.stride) for s in shortcuts] == [(16, 32, 2), (32, 64, 2)]


def test_depth_must_be_6n_plus_2() -> None:
    with pytest.raises(ValueError, match="depth must be 6n\\+2.*got 21"):
        CifarResNet(depth=21)


def test_akamaster_checkpoints_are_found_under_cleanai_models(shared_models_dir: Path) -> None:
    assert akamaster_checkpoint(20).name == "resnet20-12fca82f.th"
    assert akamaster_checkpoint(56, shared_models_dir).name == "resnet56-4bfd9763.th"


def test_missing_akamaster_checkpoint_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match=r"no akamaster checkpoint resnet110-\*\.th.*available: resnet20"):
        akamaster_checkpoint(110)
    with pytest.raises(CheckpointError, match="no akamaster checkpoint resnet20"):
        akamaster_checkpoint(20, tmp_path)
    monkeypatch.delenv("CLEANAI_MODELS")
    with pytest.raises(CheckpointError, match="set CLEANAI_MODELS"):
        create_model("resnet20", pretrained="akamaster")


@pytest.fixture(scope="module")
def cifar_subset(shared_data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every 10th test image (rows are sorted by class, so all ten classes), ImageNet-normalised."""
    data = np.load(shared_data_dir / "cifar10-jpeg" / "cifar10_test_uint8.npz")
    x = torch.from_numpy(data["x"][::10]).permute(0, 3, 1, 2).float() / 255
    return (x - IMAGENET_MEAN) / IMAGENET_STD, torch.from_numpy(data["y"][::10]).long()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "count"), [("resnet20", 1000), ("resnet56", 500)])
def test_real_akamaster_checkpoint_loads_strictly_and_classifies_cifar10(
        name: str, count: int, cifar_subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Full test split measured here: 81.0% / 83.2% (JPEG copy); a class-balanced subset must exceed 75%."""
    model = create_model(name, pretrained="akamaster").eval()
    depth = int(name.removeprefix("resnet"))
    reference = load_state_dict(akamaster_checkpoint(depth))
    assert torch.equal(model.state_dict()["layer3.0.conv2.weight"], reference["layer3.0.conv2.weight"])
    stride = len(cifar_subset[1]) // count
    x, y = cifar_subset[0][::stride], cifar_subset[1][::stride]
    assert len(y) == count and set(y.tolist()) == set(range(10))
    with torch.inference_mode():
        pred = torch.cat([model(chunk).argmax(1) for chunk in x.split(250)])
    accuracy = (pred == y).float().mean().item()
    assert accuracy > 0.75, f"{name} accuracy {accuracy:.3f} on {len(y)} CIFAR-10 test images"


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Constant folding:UserWarning")
def test_resnet20_exports_to_onnx_and_matches_in_onnxruntime(tmp_path: Path) -> None:
    """The option-A shortcut exports (TorchScript exporter here: the dynamo one also works but takes ~10 s)."""
    import onnxruntime as ort

    model = create_model("resnet20").eval()
    x = torch.randn(2, *model.input_size)
    path = tmp_path / "resnet20.onnx"
    torch.onnx.export(model, (x,), path, dynamo=False, external_data=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_resnet20_is_fx_traceable_and_the_trace_computes_the_same_logits() -> None:
    model = create_model("resnet20").eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, *model.input_size)
    assert torch.allclose(traced(x), model(x), atol=1e-6)
    assert any(n.target is torch.nn.functional.pad for n in traced.graph.nodes)
