"""save_pruned / load_pruned: exact round trips (residual, depthwise, BERT) and clear refusals of misfits."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cleanai.errors import CheckpointError
from cleanai.distillation import prune_vocabulary
from cleanai.models import PadShortcut, VocabularyEmbedding, create_model
from cleanai.pruning import ChannelSelect, PruneConfig, load_pruned, prune, read_manifest, save_pruned

IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
DIGITS = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
BERT_KWARGS = {"num_labels": 3, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "intermediate_size": 128}


def _outputs(model: nn.Module, inputs: object) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs) if isinstance(inputs, dict) else model.eval()(inputs)


def _pruned_small_cnn(ratio: float = 0.3) -> nn.Module:
    torch.manual_seed(0)
    pruned, _ = prune(create_model("small_cnn"), DIGITS, PruneConfig(ratio=ratio))
    return pruned


def test_pruned_resnet20_reloads_from_its_definition_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    pruned, report = prune(create_model("resnet20").eval(), IMAGES, PruneConfig(ratio=0.3, scope="global"))
    save_pruned(pruned, tmp_path, base="resnet20", base_kwargs={"num_classes": 10})

    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model.safetensors"]
    manifest = read_manifest(tmp_path)
    assert manifest["base"] == {"name": "resnet20", "kwargs": {"num_classes": 10}}
    assert manifest["shortcuts"] == ["layer2.0.shortcut", "layer3.0.shortcut"] == report.rewritten_modules
    assert manifest["modules"]["layer2.0.shortcut"]["tensors"]["selection"][:2] != [32, 16]  # shrunk with the block
    assert load_file(str(tmp_path / "model.safetensors"))["conv1.weight"].shape[0] < 16

    reloaded = load_pruned(tmp_path)
    assert not reloaded.training
    assert isinstance(reloaded.layer2[0].shortcut, ChannelSelect)
    assert torch.equal(_outputs(reloaded, IMAGES), _outputs(pruned, IMAGES))
    assert sum(p.numel() for p in reloaded.parameters()) == report.params_after


def test_pruned_mobilenet_v2_keeps_its_depthwise_groups_after_reload(tmp_path):
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "width_mult": 0.25, "small_input": True}
    pruned, _ = prune(create_model("mobilenet_v2", **kwargs).eval(), IMAGES[:1], PruneConfig(ratio=0.4))
    save_pruned(pruned, tmp_path, base="mobilenet_v2", base_kwargs=kwargs)
    reloaded = load_pruned(tmp_path)

    depthwise = [(m.groups, m.in_channels, m.out_channels) for m in reloaded.modules()
                 if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise == [(m.groups, m.in_channels, m.out_channels) for m in pruned.modules()
                         if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert all(g == i == o for g, i, o in depthwise)
    assert any(g < full.groups for (g, _, _), full in zip(depthwise, (
        m for m in create_model("mobilenet_v2", **kwargs).modules() if isinstance(m, nn.Conv2d) and m.groups > 1)))
    assert torch.equal(_outputs(reloaded, IMAGES), _outputs(pruned, IMAGES))


def test_a_base_module_is_copied_not_modified(zoo, tmp_path):
    build, example, _ = zoo["depthwise_cnn"]
    base = build()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    pruned, _ = prune(base, example, PruneConfig(ratio=0.5))
    save_pruned(pruned, tmp_path)  # a model outside the registry: no base name recorded
    reloaded = load_pruned(tmp_path, base=base)

    assert torch.equal(_outputs(reloaded, example), _outputs(pruned, example))
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    with pytest.raises(CheckpointError, match="records no base model name"):
        load_pruned(tmp_path)


def test_pruned_tiny_bert_reloads_its_heads_ffn_and_config(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny_bert_classifier", **BERT_KWARGS).eval()
    ids = torch.randint(5, 60, (2, 8), generator=torch.Generator().manual_seed(3))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    pruned, _ = prune(model, inputs, PruneConfig(ratio=0.5))
    save_pruned(pruned, tmp_path, base="tiny_bert_classifier", base_kwargs=BERT_KWARGS)
    reloaded = load_pruned(tmp_path)

    for layer, original in zip(reloaded.hf_model.bert.encoder.layer, pruned.hf_model.bert.encoder.layer):
        assert layer.attention.self.num_attention_heads == original.attention.self.num_attention_heads == 2
        assert layer.attention.self.all_head_size == 32
        assert layer.intermediate.dense.out_features == original.intermediate.dense.out_features == 64
    assert reloaded.config.cleanai_pruned_widths == pruned.config.cleanai_pruned_widths
    assert reloaded.config.cleanai_pruned_widths["bert.encoder.layer.0.attention.self"] == 2
    assert torch.equal(_outputs(reloaded, inputs), _outputs(pruned, inputs))


def test_a_tiny_bert_cut_pruned_and_vocabulary_pruned_reloads_from_the_full_base_by_name(tmp_path):
    torch.manual_seed(0)
    kwargs = {**BERT_KWARGS, "num_hidden_layers": 3}
    model = create_model("tiny_bert_classifier", **kwargs).eval()
    inputs = model.encode(["what is my balance", "book a flight", "xyz 42"])
    cut = model.cut_layers([0, 2])  # the last block's weights become block 1
    pruned, _ = prune(cut, inputs, PruneConfig(ratio=0.5))
    small = prune_vocabulary(pruned, ["what is my balance", "book a flight"], remap="model")
    save_pruned(small, tmp_path, base="tiny_bert_classifier", base_kwargs=kwargs, example_inputs=inputs)
    reloaded = load_pruned(tmp_path)

    manifest = read_manifest(tmp_path)
    assert manifest["encoder_layers"] == 2 and list(manifest["vocabulary"]) == ["hf_model.bert.embeddings.word_embeddings"]
    assert reloaded.config.num_hidden_layers == len(reloaded.hf_model.bert.encoder.layer) == 2
    embedding = reloaded.hf_model.get_input_embeddings()
    assert isinstance(embedding, VocabularyEmbedding) and embedding.num_embeddings < model.config.vocab_size
    assert torch.equal(_outputs(reloaded, inputs), _outputs(small, inputs))


def test_a_wider_layer_than_the_base_is_refused_naming_it(tmp_path):
    save_pruned(_pruned_small_cnn(), tmp_path, base="small_cnn")
    with pytest.raises(CheckpointError, match=r"layer 'features.0.0' \(Conv2d\): the manifest has out_channels=11 "
                                              r"but the base model has 8"):
        load_pruned(tmp_path, base="small_cnn", channels=[8, 16, 32])


def test_a_base_of_another_depth_is_refused_naming_the_extra_layer(tmp_path):
    torch.manual_seed(0)
    pruned, _ = prune(create_model("resnet20"), IMAGES[:1], PruneConfig(ratio=0.2))
    save_pruned(pruned, tmp_path, base="resnet20")
    with pytest.raises(CheckpointError, match=r"base model layer 'layer1.3.conv1' \(Conv2d\) is not in the manifest"):
        load_pruned(tmp_path, base="resnet32")
    with pytest.raises(CheckpointError, match="saved from a CifarResNet but the base model is a SmallCNN"):
        load_pruned(tmp_path, base="small_cnn")


def test_an_edited_manifest_naming_a_missing_layer_or_shortcut_is_refused(tmp_path):
    save_pruned(_pruned_small_cnn(), tmp_path, base="small_cnn")
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["modules"]["features.9.0"] = manifest["modules"].pop("features.0.0")
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"manifest layer 'features.9.0' \(Conv2d\) does not exist"):
        load_pruned(tmp_path)
    manifest["shortcuts"] = ["features.1"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"manifest shortcut 'features.1' .* is a ConvBNAct"):
        load_pruned(tmp_path)


@pytest.mark.parametrize("layer, attr", [("features.0.0", "out_channels"), ("features.1.0", "in_channels"),
                                         ("features.0.1", "num_features"), ("classifier", "in_features")])
def test_a_manifest_width_that_disagrees_with_its_stored_tensors_is_refused_naming_the_layer(tmp_path, layer, attr):
    """The widths are checked against the tensors' shapes: an edited width (22 -> 20) loads no model that lies."""
    save_pruned(_pruned_small_cnn(), tmp_path, base="small_cnn")
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    widths = manifest["modules"][layer]["widths"]
    widths[attr] -= 2
    path.write_text(json.dumps(manifest))
    stored = load_file(str(tmp_path / "model.safetensors"))[f"{layer}.weight"]
    with pytest.raises(CheckpointError, match=rf"layer '{layer}' .*{attr}.* but the stored tensor is "
                                              + re.escape(str(list(stored.shape)))):
        load_pruned(tmp_path)


def test_unreadable_or_foreign_directories_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="holds no manifest.json"):
        load_pruned(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        load_pruned(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other", "modules": {}}))
    with pytest.raises(CheckpointError, match="not a CleanAI pruned-model manifest"):
        load_pruned(tmp_path)


def test_saving_under_a_base_that_cannot_hold_the_model_fails_before_writing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(CheckpointError, match="saved from a SmallCNN but the base model is a CifarResNet"):
        save_pruned(_pruned_small_cnn(), target, base="resnet20")
    assert not target.exists()
    with pytest.raises(ValueError, match="base_kwargs must be JSON values"):
        save_pruned(_pruned_small_cnn(), target, base="small_cnn", base_kwargs={"channels": object()})


def test_a_pad_shortcut_base_is_rewritten_only_where_the_manifest_says(tmp_path):
    pruned, _ = prune(create_model("resnet20"), IMAGES[:1], PruneConfig(ratio=0.0))  # rewrites, prunes nothing
    save_pruned(pruned, tmp_path, base="resnet20")
    reloaded = load_pruned(tmp_path)
    assert not any(isinstance(m, PadShortcut) for m in reloaded.modules())
    assert torch.equal(_outputs(reloaded, IMAGES), _outputs(pruned, IMAGES))


# ---- free parameters and norms CleanAI has no width rule for: rebuilt by shape, round trip checked at save
class LayerScaleBlock(nn.Module):
    """ConvNeXt-like: depthwise 7x7, LayerNorm, MLP, a layer-scale `gamma` Parameter, residual add."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(torch.relu(self.pw1(self.norm(self.dw(x).permute(0, 2, 3, 1))))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block, self.head = nn.Conv2d(3, 16, 2, stride=2), LayerScaleBlock(), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3)))


class PositionEmbedded(nn.Module):
    """Tokens projected to 32 wide, plus a learned position-embedding Parameter, an MLP with residual, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.proj, self.pos = nn.Linear(8, 32), nn.Parameter(torch.randn(1, 6, 32))
        self.fc, self.fc2, self.head = nn.Linear(32, 64), nn.Linear(64, 32), nn.Linear(32, 3)
        self.scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) + self.pos
        return self.head((h + self.fc2(torch.relu(self.fc(h)))).mean(1) * self.scale)


def tiny_mobilebert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import MobileBertConfig, MobileBertForSequenceClassification

    torch.manual_seed(0)
    config = MobileBertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=32, embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16,
                              num_feedforward_networks=1, max_position_embeddings=32, num_labels=3)
    return MobileBertForSequenceClassification(config).eval(), {"input_ids": torch.randint(0, 100, (2, 8))}


@pytest.mark.parametrize("case", ["layer_scale", "position_embedding", "mobilebert_nonorm"])
def test_free_parameters_and_unknown_norms_save_and_reload_identically(case: str, tmp_path) -> None:
    torch.manual_seed(0)
    if case == "mobilebert_nonorm":
        model, x = tiny_mobilebert()
    else:
        model = (ConvNeXtLike() if case == "layer_scale" else PositionEmbedded()).eval()
        x = torch.randn(2, 3, 16, 16) if case == "layer_scale" else torch.randn(2, 6, 8)
    pruned, report = prune(model, x, PruneConfig(ratio=0.5 if case != "mobilebert_nonorm" else 0.3))
    assert report.params_after < report.params_before
    save_pruned(pruned, tmp_path, base=model, example_inputs=x)
    manifest = read_manifest(tmp_path)
    if case == "layer_scale":
        assert manifest["modules"]["block"]["tensors"]["gamma"] == [pruned.block.gamma.numel()] != [16]
    if case == "position_embedding":
        assert manifest["modules"][""]["tensors"]["pos"] == [1, 6, pruned.pos.shape[-1]] != [1, 6, 32]
    reloaded = load_pruned(tmp_path, base=model)
    expected, got = _outputs(pruned, x), _outputs(reloaded, x)
    expected, got = getattr(expected, "logits", expected), getattr(got, "logits", got)
    assert torch.equal(got, expected) and bool(torch.isfinite(got).all())


def test_a_model_that_would_not_read_back_is_refused_before_anything_is_written(tmp_path) -> None:
    torch.manual_seed(0)
    model, x = PositionEmbedded().eval(), torch.randn(2, 6, 8)
    pruned, _ = prune(model, x, PruneConfig(ratio=0.5))
    pruned.scale = 3.0  # state outside any tensor: the rebuilt model cannot know it
    target = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"rebuilt from the manifest gives other outputs.*nothing was written"):
        save_pruned(pruned, target, base=model, example_inputs=x)
    assert not target.exists()
