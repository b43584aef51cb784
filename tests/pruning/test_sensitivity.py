"""sensitivity_scan and suggest_ratios on real digits: drops per layer, MAC targets met, sensitive layers spared."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cleanai.errors import CleanAIError, DataError
from cleanai.pruning import PruneConfig, prunable_groups, prune, sensitivity_scan, suggest_ratios


@pytest.fixture(scope="module")
def scan(trained_cnn, loaders):
    example = next(iter(loaders.val))[0][:1]
    return example, sensitivity_scan(trained_cnn, example, loaders.val, ratios=(0.25, 0.5, 0.75), max_batches=2)


class TwoBranch(nn.Module):
    """Two parallel 32-unit hidden layers of equal cost, concatenated into the head. `dead` never fires."""

    def __init__(self) -> None:
        super().__init__()
        self.live, self.dead, self.head = nn.Linear(64, 32), nn.Linear(64, 32), nn.Linear(64, 10)
        nn.init.zeros_(self.dead.weight)
        nn.init.constant_(self.dead.bias, -1.0)  # ReLU(-1) = 0 for every input, and no gradient ever reaches it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(torch.cat([self.live(x), self.dead(x)], 1)))


def test_scan_prunes_each_layer_alone_at_each_ratio(scan, trained_cnn):
    example, result = scan
    assert [layer.name for layer in result.layers] == list(prunable_groups(trained_cnn, example))
    assert result.ratios == [0.25, 0.5, 0.75] and result.eval_batches == 2 and result.metric == "accuracy"
    assert result.baseline > 0.8
    for layer in result.layers:
        assert [p.width for p in layer.points] == [layer.width - int(layer.width * r) for r in result.ratios]
        macs = [p.macs for p in layer.points]
        assert result.macs_before > macs[0] > macs[1] > macs[2]
        assert all(p.drop == pytest.approx(result.baseline - p.score) for p in layer.points)
    # the 8-filter first conv is far more sensitive than the 32-filter last one, which tolerates a quarter
    assert result.drop("features.0.0", 0.25) > result.drop("features.3.0", 0.25) + 0.2
    assert result.drop("features.3.0", 0.75) > result.drop("features.3.0", 0.25) + 0.1
    assert str(result).splitlines()[1].split() == ["layer", "width", "drop@0.25", "drop@0.5", "drop@0.75"]


def test_suggested_ratios_reach_the_mac_target_on_the_really_pruned_model(scan, trained_cnn):
    example, result = scan
    for target in (0.3, 0.5):
        ratios = suggest_ratios(result, target, model=trained_cnn, example_inputs=example)
        assert set(ratios) == {layer.name for layer in result.layers}
        assert set(ratios.values()) <= {0.0, *result.ratios}
        _, report = prune(trained_cnn, example, PruneConfig(ratio=0.0, ratio_dict=ratios))
        assert 1 - report.macs_ratio >= target
        assert 1 - report.macs_ratio < target + 0.25  # trimmed: not every layer at its maximum


def test_a_sensitive_layer_gets_a_lower_ratio_than_an_insensitive_one(digits):
    x_train, y_train, x_test, y_test = digits
    torch.manual_seed(0)
    model = TwoBranch()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_train).backward()
        optimizer.step()
    model.eval()
    assert not model.dead.weight.any() and torch.all(model.dead.bias == -1.0)  # still dead after training

    def test_accuracy(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m.eval()(x_test).argmax(1) == y_test).float().mean())

    result = sensitivity_scan(model, x_test[:1], test_accuracy, ratios=(0.25, 0.5, 0.75))
    assert result.metric == "test_accuracy" and result.eval_batches is None and result.baseline > 0.9
    assert [p.drop for p in result.layer("dead").points] == [0.0, 0.0, 0.0]
    assert result.drop("live", 0.75) > 0.1
    live, dead = (result.layer(n).points for n in ("live", "dead"))
    assert [p.macs for p in live] == [p.macs for p in dead]  # equal costs: only sensitivity can decide

    ratios = suggest_ratios(result, 0.3, model=model, example_inputs=x_test[:1])
    assert ratios == {"live": 0.0, "dead": 0.75}
    _, report = prune(model, x_test[:1], PruneConfig(ratio=0.0, ratio_dict=ratios))
    assert 1 - report.macs_ratio >= 0.3
    estimated = suggest_ratios(result, 0.5)  # beyond the dead branch: the live one must give some channels
    assert estimated["dead"] == 0.75 and estimated["live"] > 0


def test_the_plot_is_a_png_written_atomically(scan, tmp_path):
    _, result = scan
    path = result.plot(tmp_path / "sensitivity.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["sensitivity.png"]


def test_bad_requests_are_refused_with_what_would_work(scan, trained_cnn, loaders):
    example, result = scan
    with pytest.raises(ValueError, match=r"ratios must be .* in \(0, 1\), got \[0.5, 1.0\]"):
        sensitivity_scan(trained_cnn, example, loaders.val, ratios=(0.5, 1.0))
    with pytest.raises(CleanAIError, match=r"\['features.9'\] are not prunable groups of SmallCNN; valid: .*0.0"):
        sensitivity_scan(trained_cnn, example, loaders.val, layers=["features.9"])
    with pytest.raises(DataError, match="needs validation batches"):
        sensitivity_scan(trained_cnn, example, [])
    with pytest.raises(CleanAIError, match=r"90.0% MAC reduction is out of reach: .* highest ratio \(0.25\) saves"):
        suggest_ratios(result, 0.9, max_ratio=0.25)
    with pytest.raises(ValueError, match="target_macs_reduction must be a fraction"):
        suggest_ratios(result, 1.5)
