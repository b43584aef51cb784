"""Each criterion computes what its paper defines, and coverage keeps the active channels."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch_pruning as tp
from torch import nn

from cleanai.errors import CleanAIError, UnknownNameError
from cleanai.pruning import (
    CRITERIA,
    CoverageCriterion,
    MagnitudeCriterion,
    PruneConfig,
    Requirements,
    TaylorCriterion,
    WandaCriterion,
    create_criterion,
    list_criteria,
    prune,
    register_criterion,
    requirements,
)

DEAD = [1, 4, 6]


def _group(model: nn.Module, example: torch.Tensor, layer: nn.Module) -> tp.dependency.Group:
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    fn = tp.prune_linear_out_channels if isinstance(layer, nn.Linear) else tp.prune_conv_out_channels
    width = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return dg.get_pruning_group(layer, fn, list(range(width)))


def dead_channel_model() -> nn.Module:
    """conv(3->8) -> BN -> ReLU -> conv(8->4) -> BN -> ReLU -> pool -> linear, where channels DEAD of the first
    conv have the largest weights and raw outputs but a BN shift that ReLU turns into exact zeros."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1),
                          nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[0].weight.abs_()
        model[0].weight[DEAD] *= 5
        model[1].bias[DEAD] = -1e3
    return model


def positive_batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(6, 3, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


def _lowest(scores: torch.Tensor, k: int) -> set[int]:
    return set(torch.argsort(scores, stable=True)[:k].tolist())


# ---- registry -------------------------------------------------------------------------------------
def test_registry_lists_every_criterion_and_rejects_bad_names_and_arguments() -> None:
    assert list_criteria() == ["adaptive", "coverage", "hybrid", "magnitude", "random", "taylor", "wanda"]
    with pytest.raises(UnknownNameError, match="coverage, hybrid"):
        create_criterion("covrage")
    with pytest.raises(CleanAIError, match="'magnitude' does not accept.*p, normalizer"):
        create_criterion("magnitude", q=3)
    with pytest.raises(ValueError, match="metric must be one of normalized_mean, frequency"):
        create_criterion("coverage", metric="median")
    with pytest.raises(ValueError, match="normalizer must be one of"):
        create_criterion("wanda", normalizer="zscore")


@pytest.fixture()
def user_criterion() -> Iterator[str]:
    name = "test_negative_magnitude"

    @register_criterion(name)
    class NegativeMagnitude(MagnitudeCriterion):
        def group_scores(self, group):  # noqa: ANN001, ANN202
            return -super().group_scores(group)

    yield name
    CRITERIA._items.pop(name)


def test_a_registered_user_criterion_is_usable_by_name(user_criterion: str) -> None:
    """A user criterion plugs into PruneConfig; this one removes the largest-norm channels."""
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(6.0)[:, None].repeat(1, 4) + 1)
    pruned, _ = prune(model, torch.randn(2, 4), PruneConfig(criterion=user_criterion, ratio=0.5))
    torch.testing.assert_close(pruned[0].weight[:, 0], torch.tensor([1.0, 2.0, 3.0]))


# ---- definitions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2])
def test_magnitude_equals_torch_pruning_group_magnitude(p: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3)).eval()
    nn.init.uniform_(model[1].weight, 0.1, 2.0)
    group = _group(model, torch.randn(1, 3, 8, 8), model[0])
    ours = MagnitudeCriterion(p=p)(group)
    theirs = tp.importance.GroupMagnitudeImportance(p=p)(group)
    torch.testing.assert_close(ours, theirs.float())


def _mlp_and_batches() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    return model, [(torch.randn(5, 4), torch.randint(0, 2, (5,))) for _ in range(2)]


def test_taylor_accumulates_abs_weight_times_gradient_over_batches() -> None:
    model, batches = _mlp_and_batches()
    crit = TaylorCriterion(normalizer="none")
    crit.prepare(model, batches)
    w0, w2 = model[0].weight, model[2].weight
    sal0, sal2 = torch.zeros_like(w0), torch.zeros_like(w2)
    for x, y in batches:
        g0, g2 = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), [w0, w2])
        sal0 += (w0 * g0).abs().detach()
        sal2 += (w2 * g2).abs().detach()
    expected = (sal0.sum(1) + sal2.sum(0)) / 2
    torch.testing.assert_close(crit(_group(model, torch.randn(1, 4), model[0])), expected)
    assert w0.grad is None and w0.requires_grad  # the model's own gradients are left alone


def test_wanda_weighs_weights_by_the_input_norm_of_their_channel() -> None:
    model, batches = _mlp_and_batches()
    crit = WandaCriterion(normalizer="none")
    crit.prepare(model, batches)
    x = torch.cat([b[0] for b in batches])
    h = model[1](model[0](x)).detach()
    w0, w2 = model[0].weight.detach().abs(), model[2].weight.detach().abs()
    expected = ((w0 * x.norm(dim=0)).sum(1) + (w2 * h.norm(dim=0)).sum(0)) / 2
    torch.testing.assert_close(crit(_group(model, torch.randn(1, 4), model[0])), expected)


def test_wanda_maps_grouped_and_depthwise_weights_to_their_input_channel() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 6, 1, groups=2))
    x = torch.randn(3, 4, 6, 6)
    crit = WandaCriterion()
    crit.prepare(model, [(x, None)])
    norm0 = x.transpose(0, 1).reshape(4, -1).norm(dim=1)
    torch.testing.assert_close(crit.saliency(model[0]), model[0].weight.abs() * norm0[:, None, None, None])
    h = model[0](x).detach()
    norm1 = h.transpose(0, 1).reshape(4, -1).norm(dim=1)
    channel = torch.tensor([[0, 1]] * 3 + [[2, 3]] * 3)  # output channels 0-2 read inputs 0-1, 3-5 read 2-3
    torch.testing.assert_close(crit.saliency(model[1]), model[1].weight.abs() * norm1[channel][..., None, None])


def test_random_is_deterministic_under_a_seed() -> None:
    model, _ = _mlp_and_batches()
    group = _group(model, torch.randn(1, 4), model[0])
    a, b, c = (create_criterion("random", seed=s)(group) for s in (3, 3, 4))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


# ---- coverage direction ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs", [
    ("coverage", {"metric": "normalized_mean"}), ("coverage", {"metric": "frequency"}),
    ("coverage", {"metric": "mean_absolute"}), ("coverage", {"metric": "combined"}),
    ("adaptive", {}), ("hybrid", {}),
])
def test_activation_coverage_removes_dead_channels_first_and_losslessly(name: str, kwargs: dict) -> None:
    """Channels that ReLU silences score lowest, and removing them leaves the function unchanged."""
    model, calib = dead_channel_model(), positive_batches()
    crit = create_criterion(name, **kwargs)
    crit.prepare(model, calib)
    assert _lowest(crit(_group(model, calib[0][0], model[0])), 3) == set(DEAD)
    config = PruneConfig(criterion=name, criterion_kwargs=kwargs, ratio=0.0, ratio_dict={"0": 3 / 8})
    pruned, report = prune(model, calib[0][0], config, calib=calib)
    assert pruned[0].out_channels == 5 and report.layers[0].after == 5
    torch.testing.assert_close(pruned(calib[1][0]), model(calib[1][0]))


def test_where_coverage_is_measured_matters_raw_output_keeps_the_dead_channels() -> None:
    """The known trap: coverage of the raw conv output ranks the silenced channels highest (as magnitude does);
    measured where activations act (after BN + ReLU) it ranks them lowest."""
    model, calib = dead_channel_model(), positive_batches()
    group = _group(model, calib[0][0], model[0])
    scores = {}
    for position in ("activation", "output"):
        crit = CoverageCriterion(position=position)
        crit.prepare(model, calib)
        scores[position] = crit(group)
    assert _lowest(scores["activation"], 3) == set(DEAD)
    assert _lowest(-scores["output"], 3) == set(DEAD)  # top-3 on the raw output
    assert _lowest(-MagnitudeCriterion()(group), 3) == set(DEAD)
    damaged = {}
    for position in ("activation", "output"):
        config = PruneConfig(criterion="coverage", criterion_kwargs={"position": position}, ratio=0.0,
                             ratio_dict={"0": 3 / 8})
        pruned, _ = prune(model, calib[0][0], config, calib=calib)
        with torch.no_grad():
            damaged[position] = float((pruned(calib[1][0]) - model(calib[1][0])).abs().max())
    assert damaged["activation"] < 1e-5 < damaged["output"]


class InvertedCoverage(CoverageCriterion):
    """The source report's first bug: coverage with the direction flipped (active channels removed)."""

    def group_scores(self, group):  # noqa: ANN001, ANN202
        scores = super().group_scores(group)
        return None if scores is None else scores.max() - scores


def test_coverage_keeps_a_trained_model_and_the_inverted_direction_collapses_it(
        trained_digits_mlp: nn.Module, digits: tuple[torch.Tensor, ...], accuracy: Callable) -> None:
    """Regression for the source report's bug (coverage inverted -> accuracy fell to chance)."""
    x_train, y_train, x_test, y_test = digits
    hidden = trained_digits_mlp[1](trained_digits_mlp[0](x_train)).detach()
    assert int((hidden > 0).sum(0).eq(0).sum()) > 0.45 * 256  # more than 45% of the units never fire
    calib = [(x_train[i:i + 200], y_train[i:i + 200]) for i in range(0, 400, 200)]
    config = PruneConfig(criterion="coverage", ratio=0.45)
    acc = {"unpruned": accuracy(trained_digits_mlp, x_test, y_test)}
    for label, criterion in (("coverage", None), ("inverted", InvertedCoverage()),
                             ("random", create_criterion("random"))):
        pruned, report = prune(trained_digits_mlp, x_test[:2], config, calib=calib, criterion=criterion)
        assert pruned[0].out_features == 140 and report.macs_ratio < 0.7
        acc[label] = accuracy(pruned, x_test, y_test)
    assert acc["unpruned"] > 0.95
    assert acc["coverage"] >= acc["unpruned"] - 0.01, acc  # only dead units went
    assert acc["inverted"] < 0.5 < acc["random"] < acc["coverage"], acc  # inverted loses most of it


# ---- the calibration contract -----------------------------------------------------------------------
class WidthSpy(MagnitudeCriterion):
    """Records the width of the first layer every time the pruner prepares it."""

    requires_data = True

    def __init__(self, refresh: bool) -> None:
        super().__init__()
        self.refresh_each_step = refresh
        self.seen: list[int] = []

    def prepare(self, model: nn.Module, batches: list) -> None:
        assert len(batches) == 2
        self.seen.append(model[0].out_features)


@pytest.mark.parametrize("refresh, expected", [(True, [8, 7, 6]), (False, [8])])
def test_prepare_runs_before_the_first_step_and_again_on_the_pruned_model_when_asked(
        refresh: bool, expected: list[int]) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    spy = WidthSpy(refresh)
    calib = [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))] * 5
    prune(model, torch.randn(1, 4), PruneConfig(ratio=0.3, iterative_steps=3, calib_batches=2), calib=calib,
          criterion=spy)
    assert spy.seen == expected


def test_requirements_are_declared_and_gradients_imply_data() -> None:
    assert requirements(create_criterion("magnitude")) == Requirements(data=False, gradients=False)
    assert requirements(create_criterion("wanda")) == Requirements(data=True, gradients=False)
    assert requirements(tp.importance.GroupTaylorImportance()) == Requirements(data=True, gradients=True)
    assert requirements(tp.importance.GroupMagnitudeImportance()) == Requirements(data=False, gradients=False)
    assert requirements(GradientSpy()) == Requirements(data=True, gradients=True)
    with pytest.raises(CleanAIError, match="OBDCImportance .* needs its own accumulation procedure"):
        requirements(tp.importance.OBDCImportance())


class GradientSpy(MagnitudeCriterion):
    """Declares that it reads gradients and records whether every layer it scores has them."""

    requires_gradients = True

    def __init__(self) -> None:
        super().__init__()
        self.had_grad: list[bool] = []

    def saliency(self, layer: nn.Module) -> torch.Tensor | None:
        self.had_grad.append(layer.weight.grad is not None)
        return super().saliency(layer)


def test_a_criterion_declaring_gradients_scores_with_them_on_every_step() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    spy = GradientSpy()
    calib = [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))] * 2
    pruned, _ = prune(model, torch.randn(1, 4), PruneConfig(ratio=0.5, iterative_steps=2), calib=calib, criterion=spy)
    assert spy.had_grad and all(spy.had_grad) and pruned[0].out_features == 4
    assert all(p.grad is None for p in pruned.parameters())


def test_coverage_statistics_follow_the_surgery_between_steps() -> None:
    """Non-adaptive coverage is measured once; its cached statistics shrink with each pruned group."""
    model, calib = dead_channel_model(), positive_batches()
    crit = CoverageCriterion()
    pruned, _ = prune(model, calib[0][0], PruneConfig(ratio=0.5, iterative_steps=2), calib=calib, criterion=crit)
    assert crit.inputs[pruned[3]].channels == pruned[3].in_channels == 4
    assert crit.outputs[pruned[0]].channels == pruned[0].out_channels == 4
