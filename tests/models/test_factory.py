"""create_model / list_models: the contract every vision model meets, and the checkpoint error paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cleanai.errors import CheckpointError, UnknownNameError
from cleanai.io import save_safetensors
from cleanai.models import MODELS, create_model, list_models

TEXT_MODELS = {"text_classifier", "tiny_bert_classifier"}
VISION_MODELS = [n for n in list_models() if n not in TEXT_MODELS]


def test_list_models_names_every_architecture() -> None:
    assert set(list_models()) == {
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet18", "resnet34", "resnet50",
        "small_cnn", "mobilenet_v2", "text_classifier", "tiny_bert_classifier",
    }
    assert list_models() == MODELS.names()


@pytest.mark.parametrize("name", VISION_MODELS)
def test_vision_model_contract_input_size_shape_and_no_reused_modules(name: str) -> None:
    """Every vision model takes `input_size` inputs, returns (batch, num_classes) and calls each leaf module once."""
    model = create_model(name, num_classes=7).eval()
    assert len(model.input_size) == 3
    calls: dict[str, int] = {}
    for mod_name, mod in model.named_modules():
        if not list(mod.children()):
            mod.register_forward_hook(lambda m, i, o, key=mod_name: calls.__setitem__(key, calls.get(key, 0) + 1))
    with torch.no_grad():
        out = model(torch.randn(1, *model.input_size))
    assert out.shape == (1, 7)
    assert torch.isfinite(out).all()
    reused = {k: v for k, v in calls.items() if v != 1}
    assert not reused, f"modules not called exactly once (breaks PT2E quantizers): {reused}"


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="resnet20") as info:
        create_model("resnet21")
    assert "small_cnn" in str(info.value) and "mobilenet_v2" in str(info.value)


def test_unknown_argument_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"num_clases.*accepts: num_classes, in_channels"):
        create_model("resnet20", num_clases=10)


def test_bad_argument_values_name_the_argument() -> None:
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        create_model("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="width_mult must be a positive number"):
        create_model("mobilenet_v2", width_mult=-1)


def test_safetensors_checkpoint_roundtrip_gives_identical_outputs(tmp_path: Path) -> None:
    source = create_model("small_cnn").eval()
    path = save_safetensors(source, tmp_path / "cnn.safetensors")
    loaded = create_model("small_cnn", pretrained=path).eval()
    x = torch.randn(3, *source.input_size)
    assert torch.equal(source(x), loaded(x))


def test_mis_shaped_checkpoint_names_the_tensor(tmp_path: Path) -> None:
    path = save_safetensors(create_model("resnet20", in_channels=1), tmp_path / "r20gray.safetensors")
    with pytest.raises(CheckpointError, match=r"'conv1.weight' has shape \(16, 1, 3, 3\).*expects \(16, 3, 3, 3\)"):
        create_model("resnet20", pretrained=path)


class _Custom:
    def __init__(self) -> None:
        self.weight = torch.ones(2)


def test_pickle_needing_arbitrary_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Custom()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        create_model("small_cnn", pretrained=path)


def test_non_checkpoint_files_are_refused(tmp_path: Path) -> None:
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        create_model("small_cnn", pretrained=not_weights)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match="noise.pt"):
        create_model("small_cnn", pretrained=noise)
    bad_safetensors = tmp_path / "broken.safetensors"
    bad_safetensors.write_bytes(b"{not a header")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        create_model("small_cnn", pretrained=bad_safetensors)


def test_missing_pretrained_path_lists_named_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"does not exist.*named weights: akamaster$"):
        create_model("resnet20", pretrained=tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=r"'imagenet' for model 'small_cnn' does not exist; pass a .*\.th file$"):
        create_model("small_cnn", pretrained="imagenet")
    with pytest.raises(CheckpointError, match="is a directory"):
        create_model("small_cnn", pretrained=tmp_path)


def test_strict_loading_refuses_a_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    path = save_safetensors(nn.Linear(3, 3), tmp_path / "linear.safetensors")
    with pytest.raises(CheckpointError, match="does not fit SmallCNN"):
        create_model("small_cnn", pretrained=path)


def test_named_weights_a_model_lacks_name_the_models_that_have_them() -> None:
    with pytest.raises(CheckpointError, match=r"model 'small_cnn' has no 'akamaster' weights; the models that have "
                                              r"them: resnet110, resnet20, resnet32, resnet44, resnet56"):
        create_model("small_cnn", pretrained="akamaster")
