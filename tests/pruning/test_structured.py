"""prune(): ratio semantics, scopes, caps, iterative steps, BERT heads, reports and every bad-input path."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from pydantic import ValidationError
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from cleanai.errors import CleanAIError, DataError, UnknownNameError
from cleanai.models import CifarResNet
from cleanai.pruning import PruneConfig, PruneReport, prunable_groups, prune


def chain_cnn() -> nn.Module:
    """conv(3->16) BN ReLU conv(16->32) BN ReLU conv(32->24) BN ReLU pool flatten linear(24->5)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for cin, cout in ((3, 16), (16, 32), (32, 24)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5)).eval()


X = torch.randn(2, 3, 8, 8)
CALIB = [(torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))) for _ in range(2)]


def widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


# ---- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 1.0}, r"ratio must be in \[0, 1\).*got 1.0"),
    ({"ratio": -0.1}, r"ratio must be in \[0, 1\)"),
    ({"ratio_dict": {"0": 1.5}}, r"ratio_dict\['0'\] must be in \[0, 1\)"),
    ({"head_ratio": 1}, r"head_ratio must be in \[0, 1\)"),
    ({"max_layer_ratio": 0}, r"max_layer_ratio must be in \(0, 1\]"),
    ({"criterion": "coverag"}, r"unknown criterion 'coverag'.*Did you mean 'coverage'"),
    ({"scope": "layer"}, r"scope"),
    ({"iterative_steps": 0}, r"iterative_steps"),
    ({"ratios": 0.3}, r"ratios"),
    ({"criterion_kwargs": {"bogus": 1}}, r"criterion 'magnitude' does not accept 'bogus'; it accepts: p, normalizer"),
    ({"criterion": "coverage", "criterion_kwargs": {"metric": "mean"}}, r"coverage: metric must be one of"),
])
def test_bad_config_values_fail_at_load_time_naming_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PruneConfig(**kwargs)


def test_ratio_dict_and_ignored_layers_must_name_existing_modules() -> None:
    with pytest.raises(CleanAIError, match=r"ratio_dict names module\(s\) \['3.conv'\].*layer names: 0, 3, 6, 11"):
        prune(chain_cnn(), X, PruneConfig(ratio_dict={"3.conv": 0.5}))
    with pytest.raises(CleanAIError, match=r"ignored_layers names module\(s\) \['conv1'\]"):
        prune(chain_cnn(), X, PruneConfig(ignored_layers=["conv1"]))


@pytest.mark.parametrize("name", ["taylor", "wanda", "coverage", "adaptive", "hybrid"])
def test_data_driven_criteria_refuse_missing_or_empty_calibration(name: str) -> None:
    with pytest.raises(DataError, match=f"criterion '{name}' needs calibration data: pass calib="):
        prune(chain_cnn(), X, PruneConfig(criterion=name))
    with pytest.raises(DataError, match="calib yielded no batch"):
        prune(chain_cnn(), X, PruneConfig(criterion=name), calib=iter([]))


def test_recalibrate_bn_needs_calibration_data_even_for_magnitude() -> None:
    with pytest.raises(DataError, match="recalibrate_bn=True needs calibration data: pass calib="):
        prune(chain_cnn(), X, PruneConfig(recalibrate_bn=True))


def test_recalibrated_batchnorm_holds_the_statistics_of_the_pruned_model_on_the_calibration_data() -> None:
    model = chain_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, _ = prune(model, X, PruneConfig(ratio=0.5, recalibrate_bn=True), calib=CALIB)
    first = pruned[1]  # its inputs do not depend on other BatchNorms' statistics
    with torch.no_grad():
        batch_means = [pruned[0](x).mean((0, 2, 3)) for x, _ in CALIB]
    assert first.num_features == 8  # the pruned width
    assert torch.allclose(first.running_mean, torch.stack(batch_means).mean(0), atol=1e-6)  # equal batches
    for bn in (m for m in pruned.modules() if isinstance(m, nn.BatchNorm2d)):
        assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == len(CALIB)
    assert not pruned.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model untouched


def test_recalibrating_batchnorm_recovers_accuracy_lost_right_after_pruning(trained_cnn, loaders, accuracy) -> None:
    x, y = next(iter(loaders.test))
    calib = list(loaders.train)[:8]
    plain, _ = prune(trained_cnn, x[:1], PruneConfig(ratio=0.5))
    recalibrated, _ = prune(trained_cnn, x[:1], PruneConfig(ratio=0.5, recalibrate_bn=True), calib=calib)
    assert accuracy(recalibrated, x, y) > accuracy(plain, x, y) + 0.05


def test_taylor_needs_targets() -> None:
    with pytest.raises(DataError, match="taylor needs \\(inputs, targets\\)"):
        prune(chain_cnn(), X, PruneConfig(criterion="taylor"), calib=[X])


def test_a_raw_torch_pruning_taylor_importance_gets_the_gradients_it_reads() -> None:
    model = chain_cnn()
    reference = copy.deepcopy(model)  # gradients filled by hand, the way Torch-Pruning's examples do
    for x, y in CALIB:
        F.cross_entropy(reference(x), y).backward()
    dg = tp.DependencyGraph().build_dependency(reference, example_inputs=X)
    group = dg.get_pruning_group(reference[0], tp.prune_conv_out_channels, list(range(16)))
    expected = sorted(torch.argsort(tp.importance.GroupTaylorImportance()(group), descending=True)[:8].tolist())
    pruned, report = prune(model, X, PruneConfig(ratio=0.5), calib=CALIB,
                           criterion=tp.importance.GroupTaylorImportance())
    assert report.criterion == "GroupTaylorImportance" and widths(pruned) == [8, 16, 12]
    assert torch.equal(pruned[0].weight, model[0].weight[expected])  # the channels Taylor ranks highest
    assert all(p.grad is None for p in [*pruned.parameters(), *model.parameters()])  # no gradients left behind


def test_criteria_whose_needs_prune_cannot_meet_are_refused_by_name() -> None:
    with pytest.raises(DataError, match="criterion 'GroupTaylorImportance' needs calibration data: pass calib="):
        prune(chain_cnn(), X, PruneConfig(), criterion=tp.importance.GroupTaylorImportance())
    with pytest.raises(DataError, match="criterion 'GroupTaylorImportance' needs gradients of a loss: calib batch 0 "
                                        "has no targets"):
        prune(chain_cnn(), X, PruneConfig(), calib=[X], criterion=tp.importance.GroupTaylorImportance())
    with pytest.raises(CleanAIError, match="criterion GroupHessianImportance .* needs its own accumulation procedure"):
        prune(chain_cnn(), X, PruneConfig(), calib=CALIB, criterion=tp.importance.GroupHessianImportance())


# ---- ratio semantics --------------------------------------------------------------------------------
def test_local_ratio_removes_that_fraction_of_every_group_but_never_the_outputs() -> None:
    model = chain_cnn()
    pruned, report = prune(model, X, PruneConfig(ratio=0.3))
    assert widths(pruned) == [math.floor(c * 0.7) for c in (16, 32, 24)] == [11, 22, 16]
    assert pruned[-1].out_features == 5 and pruned(X).shape == (2, 5)
    assert report.skipped_groups == {"11": "output layer: its channels are the model's outputs"}
    # each inner conv keeps 0.7 of its inputs and outputs: MACs fall by about 1 - 0.7**2
    assert 0.7**2 - 0.02 < report.macs_ratio < 0.7


def test_global_ratio_counts_all_channels_together() -> None:
    pruned, report = prune(chain_cnn(), X, PruneConfig(ratio=0.5, scope="global"))
    assert sum(widths(pruned)) == math.floor(72 * 0.5)
    assert widths(pruned) != [8, 16, 12]  # ranked across layers, not per layer
    assert report.layers[0].before == 16 and report.layers[0].after == widths(pruned)[0]


def test_ratio_dict_overrides_per_module_the_most_specific_name_winning() -> None:
    pruned, _ = prune(chain_cnn(), X, PruneConfig(ratio=0.0, ratio_dict={"": 0.5, "3": 0.25}))
    assert widths(pruned) == [8, 24, 12]


def test_max_layer_ratio_and_round_to_bound_every_group() -> None:
    with pytest.warns(UserWarning, match="every one of the 24 channels of '6'; capped to keep 12"):
        pruned, _ = prune(chain_cnn(), X, PruneConfig(ratio=0.6, scope="global", max_layer_ratio=0.5,
                                                      criterion_kwargs={"normalizer": "none"}))
    assert all(after >= before / 2 for after, before in zip(widths(pruned), (16, 32, 24), strict=True))
    pruned, _ = prune(chain_cnn(), X, PruneConfig(ratio=0.3, round_to=8))
    assert widths(pruned) == [8, 24, 16]  # 11, 22 and 16 kept by the ratio, each to the nearest multiple of 8


def test_round_to_keeps_the_nearest_multiple_not_the_one_below() -> None:
    pruned, _ = prune(chain_cnn(), X, PruneConfig(ratio=0.2, round_to=8))
    assert widths(pruned) == [16, 24, 16]  # 12 (a half: up), 25 and 19 kept by the ratio; rounding down gave [8, 24, 16]
    pruned, _ = prune(chain_cnn(), X, PruneConfig(ratio=0.2, scope="global", round_to=8))
    kept = widths(pruned)  # 57 of 72 kept by the ratio; each group then moves at most 4 to its nearest multiple
    assert all(w % 8 == 0 for w in kept) and abs(sum(kept) - 57) <= 3 * 4


def test_a_request_that_would_remove_every_channel_is_capped_and_reported() -> None:
    with pytest.warns(UserWarning, match="would remove every one of the 16 channels of '0'; capped to keep 1"):
        pruned, report = prune(chain_cnn(), X, PruneConfig(ratio=0.0, ratio_dict={"0": 0.95}))
    assert widths(pruned)[0] == 1 and report.capped_layers == ["0"] and "capped" in report.warnings[0]
    model = chain_cnn()
    with torch.no_grad():
        model[4].weight.mul_(1e-4)  # the middle group has by far the smallest weights: global ranking takes it all
        model[3].weight.mul_(1e-4)
    with pytest.warns(UserWarning, match="every one of the 32 channels of '3'"):
        config = PruneConfig(ratio=0.5, scope="global", criterion_kwargs={"normalizer": "none"})
        pruned, report = prune(model, X, config)
    assert widths(pruned)[1] == 1 and pruned(X).shape == (2, 5) and report.capped_layers == ["3"]


def test_residual_keep_prunes_a_resnet_inside_its_blocks_only() -> None:
    model = CifarResNet(depth=8).eval()
    pruned, report = prune(model, torch.randn(2, 3, 32, 32), PruneConfig(ratio=0.5, residual="keep"))
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    after = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    inside = {f"layer{i}.0.conv1" for i in (1, 2, 3)}  # conv1 -> bn1 -> relu -> conv2: no addition on the way
    assert {n: after[n] for n in inside} == {n: before[n] // 2 for n in inside}
    assert all(after[n] == before[n] for n in before if n not in inside)  # the residual stream stays whole
    assert {"conv1", "layer2.0.conv2", "layer3.0.conv2"} <= {
        n for n, why in report.skipped_groups.items() if why.startswith("residual stream")}
    everywhere, _ = prune(model, torch.randn(2, 3, 32, 32), PruneConfig(ratio=0.5))
    assert everywhere.conv1.out_channels == before["conv1"] // 2  # the default prunes the stream too


def test_ignored_layers_keep_their_width() -> None:
    pruned, _ = prune(chain_cnn(), X, PruneConfig(ratio=0.5, ignored_layers=["3"]))
    assert widths(pruned) == [8, 32, 12]


# ---- the caller's model, iterative steps, reports ---------------------------------------------------------
def test_the_callers_model_is_untouched_unless_inplace() -> None:
    model = chain_cnn().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, _ = prune(model, X, PruneConfig(criterion="coverage", ratio=0.5), calib=CALIB)
    assert widths(model) == [16, 32, 24] and pruned is not model and pruned.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    same, _ = prune(model, X, PruneConfig(ratio=0.5, inplace=True))
    assert same is model and widths(model) == [8, 16, 12]


def test_ratio_zero_changes_nothing_not_even_batchnorm_statistics() -> None:
    model = chain_cnn()
    pruned, report = prune(model, X, PruneConfig(criterion="taylor", ratio=0.0), calib=CALIB)
    before, after = model.state_dict(), pruned.state_dict()
    assert list(before) == list(after) and all(torch.equal(before[k], after[k]) for k in before)
    assert report.macs_after == report.macs_before and report.changed_layers() == []


def test_iterative_steps_call_back_between_steps_with_falling_macs() -> None:
    seen = []

    def callback(step: int, model: nn.Module, report: PruneReport) -> None:
        seen.append((step, widths(model), report.macs_after))

    pruned, report = prune(chain_cnn(), X, PruneConfig(criterion="adaptive", ratio=0.5, iterative_steps=3),
                           calib=CALIB, callback=callback)
    assert [s[0] for s in seen] == [1, 2, 3]
    assert [s[1][0] for s in seen] == [13, 10, 8]  # 16 * (1 - 0.5 * k/3), floored
    macs = [report.macs_before] + [s[2] for s in seen]
    assert macs == sorted(macs, reverse=True) and len(set(macs)) == 4
    assert [s.step for s in report.steps] == [1, 2, 3] and report.steps[-1].macs == report.macs_after
    assert widths(pruned) == [8, 16, 12]


def test_report_is_json_serialisable_and_prints_a_table() -> None:
    _, report = prune(chain_cnn(), X, PruneConfig(ratio=0.5))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["config"]["ratio"] == 0.5 and data["macs_ratio"] < 0.5 and data["params_after"] < data["params_before"]
    assert PruneReport.model_validate({k: v for k, v in data.items() if k in PruneReport.model_fields}) == report
    text = str(report)
    assert "MACs" in text and "3  Conv2d" in text and "50.0%" in text


# ---- layers the dependency graph cannot handle -------------------------------------------------------------
class ScaledHead(nn.Module):
    """A linear head after a per-channel scale kept in a buffer that Torch-Pruning does not know about."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 2)
        self.register_buffer("scale", torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.mean((2, 3)) * self.scale)


def test_a_surgery_that_breaks_forward_names_the_step_the_layer_and_what_to_ignore() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), ScaledHead()).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CleanAIError, match=r"step 1/2 broke the model at layer '4'.*fails at forward.*"
                                           r"ignored_layers=\['2'\] \(the caller's model is unchanged\)"):
        prune(model, X, PruneConfig(ratio=0.5, iterative_steps=2))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    pruned, _ = prune(model, X, PruneConfig(ratio=0.5, iterative_steps=2, ignored_layers=["2"]))
    assert pruned(X).shape == (2, 2) and pruned[0].out_channels == 4


class ChannelPadBlock(nn.Module):
    """conv -> relu, plus a residual path that zero-pads channels with F.pad (invisible to DepGraph)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(h) + nn.functional.pad(h, (0, 0, 0, 0, 2, 2)))
        return self.head(y.mean((2, 3)))


def test_a_group_the_dependency_graph_mis_couples_is_named_with_the_fix() -> None:
    model = ChannelPadBlock().eval()
    with pytest.raises(CleanAIError, match=r"step 1/1 broke the model at layer 'conv2'.*ignored_layers=\['conv2'\]"):
        prune(model, X, PruneConfig(ratio=0.5))
    pruned, report = prune(model, X, PruneConfig(ratio=0.5, ignored_layers=["conv2"]))
    assert pruned(X).shape == (2, 2) and report.changed_layers() == []


# ---- transformers ------------------------------------------------------------------------------------------
def tiny_hf_bert() -> nn.Module:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        vocab_size=99, max_position_embeddings=16, num_labels=3)
    return BertForSequenceClassification(config).eval()


TOKENS = {"input_ids": torch.randint(1, 99, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}


def test_bert_heads_and_ffn_neurons_are_removed_and_the_model_still_runs() -> None:
    model = tiny_hf_bert()
    pruned, report = prune(model, TOKENS, PruneConfig(ratio=0.5))
    assert pruned(**TOKENS).logits.shape == (2, 3)
    for layer in pruned.bert.encoder.layer:
        att = layer.attention.self
        assert (att.num_attention_heads, att.attention_head_size, att.all_head_size) == (2, 16, 32)
        assert att.query.out_features == att.key.out_features == att.value.out_features == 32
        assert layer.attention.output.dense.in_features == 32
        assert layer.intermediate.dense.out_features == layer.output.dense.in_features == 64
        assert layer.output.dense.out_features == 64  # the hidden size is kept
    assert pruned.config.hidden_size == 64 and pruned.bert.pooler.dense.in_features == 64
    # the pooler's features feed only the classifier: they go as FFN neurons do (its input, the hidden size, stays)
    assert pruned.bert.pooler.dense.out_features == pruned.classifier.in_features == 32
    widths_saved = pruned.config.to_dict()["cleanai_pruned_widths"]
    assert widths_saved["bert.encoder.layer.0.attention.self"] == 2
    assert widths_saved["bert.encoder.layer.1.intermediate.dense"] == 64
    heads = [c for c in report.layers if c.unit == "heads"]
    assert [(c.before, c.after) for c in heads] == [(4, 2), (4, 2)]
    assert model.bert.encoder.layer[0].attention.self.num_attention_heads == 4  # caller's model untouched


def test_bert_global_head_ranking_and_a_separate_head_ratio() -> None:
    pruned, _ = prune(tiny_hf_bert(), TOKENS, PruneConfig(ratio=0.25, head_ratio=0.5, scope="global"))
    heads = [layer.attention.self.num_attention_heads for layer in pruned.bert.encoder.layer]
    ffn = [layer.intermediate.dense.out_features for layer in pruned.bert.encoder.layer]
    pooler = pruned.bert.pooler.dense.out_features  # ranked with the FFN neurons: a quarter of all 320 goes
    assert sum(heads) == 4 and min(heads) >= 1 and sum(ffn) + pooler == 240
    assert pruned(**TOKENS).logits.shape == (2, 3)


def test_unknown_criterion_name_in_prune_lists_the_choices() -> None:
    with pytest.raises((UnknownNameError, ValidationError), match="adaptive, coverage, hybrid"):
        prune(chain_cnn(), X, {"criterion": "l1"})


def test_ignoring_a_transformer_layer_keeps_its_heads_and_ffn() -> None:
    pruned, _ = prune(tiny_hf_bert(), TOKENS, PruneConfig(ratio=0.5, ignored_layers=["bert.encoder.layer.1"]))
    first, second = pruned.bert.encoder.layer
    assert first.attention.self.num_attention_heads == 2 and first.intermediate.dense.out_features == 64
    assert second.attention.self.num_attention_heads == 4 and second.intermediate.dense.out_features == 128


def test_prunable_groups_lists_the_ratio_dict_names_without_touching_the_model() -> None:
    model = tiny_hf_bert()
    groups = prunable_groups(model, TOKENS)
    assert groups == {
        "bert.encoder.layer.0.intermediate.dense": 128, "bert.encoder.layer.1.intermediate.dense": 128,
        "bert.encoder.layer.0.attention.self": 4, "bert.encoder.layer.1.attention.self": 4,
        "bert.pooler.dense": 64,  # its features feed only the classifier
    }
    assert prunable_groups(chain_cnn(), X, PruneConfig(ignored_layers=["3"])) == {"0": 16, "6": 24}


def test_a_model_with_non_finite_weights_is_refused_naming_them():
    model = chain_cnn()
    with torch.no_grad():
        model[1].running_var[3] = float("inf")
    with pytest.raises(CleanAIError, match=r"the weights of Sequential hold NaN or inf: 1\.running_var \(1 of 16 "
                                           r"values inf\); pruning would rank channels by them"):
        prune(model, X, PruneConfig(ratio=0.5))


# ---- what is left as is, and why -------------------------------------------------------------------------
class Tempered(nn.Module):
    """A layer type no pruning rule covers: a learned temperature table read as one Python number."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.ones(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(self.table.mean())


def test_every_layer_left_as_is_is_listed_and_unknown_ones_are_warned_about() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), Tempered(), nn.Linear(16, 4)).eval()
    with pytest.warns(UserWarning, match=r"no pruning group covers the parameters of 3 \(Tempered\)"):
        pruned, report = prune(model, torch.randn(2, 8), PruneConfig(ratio=0.5, ignored_layers=["2"]))
    left = {item.name: (item.type, item.reason) for item in report.left_as_is}
    assert "2" not in left and pruned[2].in_features == 16  # ignored, yet its inputs went with layer 0
    assert left["3"][0] == "Tempered" and "no pruning rule" in left["3"][1]
    assert left["4"][1].startswith("in the group of '4', left whole: output layer")
    assert "0" not in left and pruned[0].out_features == 16
    assert "left as is: 3 (Tempered)" in str(report) and report.warnings
