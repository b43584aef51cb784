"""Movement pruning: the straight-through top-k mask, the cubic schedule during Trainer.fit on a tiny BERT and on
an MLP, and make_permanent."""

from __future__ import annotations

import copy
import random
import string

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from cleanai.errors import CleanAIError, UnknownNameError
from cleanai.models import tiny_bert_classifier
from cleanai.pruning import (
    ConstantSparsity, MovementConfig, MovementLinear, MovementPruner, PolynomialDecay, make_permanent,
    prune_unstructured, sparsity_report,
)
from cleanai.training import Trainer, TrainConfig


def kept(n: int, sparsity: float) -> int:
    return round(n * (1 - sparsity))


def test_straight_through_gradient_of_the_scores_is_grad_of_the_masked_weight_times_the_weight() -> None:
    torch.manual_seed(0)
    layer = MovementLinear.from_linear(nn.Linear(6, 4))
    with torch.no_grad():
        layer.scores.copy_(torch.randn(4, 6))
    layer.sparsity = 0.5
    x, upstream = torch.randn(3, 6), torch.randn(3, 4)
    (layer(x) * upstream).sum().backward()

    mask = layer.hard_mask()
    grad_masked_weight = upstream.T @ x  # dL/dW' for out = x W'^T + b
    assert torch.allclose(layer.scores.grad, grad_masked_weight * layer.weight.detach(), atol=1e-6)
    assert torch.allclose(layer.weight.grad, grad_masked_weight * mask, atol=1e-6)
    assert torch.equal(layer.weight.grad[mask == 0], torch.zeros(12))  # pruned weights get no gradient


def test_the_mask_keeps_exactly_the_top_scored_weights_and_follows_score_changes() -> None:
    torch.manual_seed(0)
    layer = MovementLinear.from_linear(nn.Linear(16, 8))
    with torch.no_grad():
        layer.scores.copy_(torch.randn(8, 16))
    layer.sparsity = 0.75
    keep = layer.masked_weight() != 0
    assert int(keep.sum()) == 32
    assert layer.scores[~keep].max() < layer.scores[keep].min()

    promoted = torch.zeros_like(keep).flatten()
    promoted[(~keep).flatten().nonzero()[:32]] = True
    promoted = promoted.view_as(keep)
    with torch.no_grad():  # an optimizer-like in-place update invalidates the cached mask
        layer.scores[promoted] += 100.0
        assert torch.equal(layer.masked_weight() != 0, promoted)
        x = torch.randn(2, 16)
        assert torch.equal(layer(x), nn.functional.linear(x, layer.weight * promoted, layer.bias))


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ValidationError, match=r"sparsity[\s\S]*\[0, 1\)"):
        MovementConfig(sparsity=1.0, schedule=ConstantSparsity())
    with pytest.raises(ValidationError, match=r"end_step \(2\) must be greater than begin_step \(8\)"):
        MovementConfig(sparsity=0.5, schedule={"kind": "polynomial", "begin_step": 8, "end_step": 2})
    with pytest.raises(UnknownNameError, match=r"'head'.*Valid names.*0, 2"):
        MovementPruner(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)),
                       MovementConfig(sparsity=0.5, schedule=ConstantSparsity(), ignored_layers=["head"]))


def test_an_optimizer_built_before_wrapping_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = MovementPruner(model, MovementConfig(sparsity=0.5, schedule=ConstantSparsity()))
    loader = [(torch.randn(4, 4), torch.randint(0, 2, (4,)))]
    with pytest.raises(CleanAIError, match=r"not update the movement scores of \['0', '2'\].*before the optimizer"):
        Trainer(model, optimizer=optimizer, config=TrainConfig(epochs=1, device="cpu"), callbacks=[pruner]).fit(loader)


def text_task(model: nn.Module, batches: int, size: int = 16) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Random lowercase strings; the label says whether they contain the letter 'z'."""
    rng = random.Random(0)
    letters = string.ascii_lowercase[:-1]
    data = []
    for _ in range(batches):
        labels = [rng.randint(0, 1) for _ in range(size)]
        texts = []
        for label in labels:
            chars = [rng.choice(letters) for _ in range(rng.randint(5, 12))]
            if label:
                chars[rng.randrange(len(chars))] = "z"
            texts.append("".join(chars))
        data.append((model.encode(texts, max_length=16), torch.tensor(labels)))
    return data


def test_movement_pruning_of_a_tiny_bert_reaches_the_target_and_the_scores_move() -> None:
    torch.manual_seed(0)
    model = tiny_bert_classifier(num_labels=2)
    loader = text_task(model, batches=4)
    schedule = PolynomialDecay(begin_step=2, end_step=10, frequency=1)  # 2 warm-up steps, then the cubic ramp
    pruner = MovementPruner(model, MovementConfig(sparsity=0.75, schedule=schedule,
                                                  ignored_layers=["hf_model.classifier"]))
    assert len(pruner.layers) == 2 * 6 + 1  # q, k, v, attention output, intermediate, output per layer; pooler
    assert isinstance(model.get_submodule("hf_model.classifier"), nn.Linear)
    assert not isinstance(model.get_submodule("hf_model.classifier"), MovementLinear)

    Trainer(model, config=TrainConfig(epochs=3, lr=1e-3, device="cpu", seed=0), callbacks=[pruner]).fit(loader)

    assert pruner.updates == [(t, pytest.approx(schedule.sparsity_at(t, 0.75))) for t in range(2, 11)]
    assert pruner.updates[-1] == (10, 0.75)
    for name, layer in pruner.layers.items():
        assert int((layer.masked_weight() != 0).sum()) == kept(layer.weight.numel(), 0.75), name
        assert layer.scores.abs().min() > 0 and layer.scores.unique().numel() > 0.9 * layer.scores.numel(), name
    report = sparsity_report(model)
    assert {round(layer.sparsity, 2) for layer in report.layers if layer.name in pruner.layers} == {0.75}

    model.eval()
    batch = loader[0][0]
    with torch.no_grad():
        expected = model(**batch)
    plain = make_permanent(model)
    assert plain is model and not any(isinstance(m, MovementLinear) for m in model.modules())
    assert not any(key.endswith("scores") for key in model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(**batch), expected)
    after = sparsity_report(model)
    assert [(m.name, m.zeros) for m in after.layers] == [(m.name, m.zeros) for m in report.layers]


def test_movement_pruning_keeps_a_trained_mlp_accurate_at_95_percent_where_magnitude_fails(
        digits, trained_digits_mlp) -> None:
    x_train, y_train, x_test, y_test = digits
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train), batch_size=100,
                                         shuffle=True, generator=torch.Generator().manual_seed(0))

    def accuracy(model: nn.Module) -> float:
        with torch.no_grad():
            return float((model.eval()(x_test).argmax(1) == y_test).float().mean())

    model = copy.deepcopy(trained_digits_mlp)  # dense accuracy about 0.98
    pruner = MovementPruner(model, MovementConfig(
        sparsity=0.95, schedule=PolynomialDecay(begin_step=5, end_step=45, frequency=1)))
    start = {name: layer.scores.detach().clone() for name, layer in pruner.layers.items()}
    Trainer(model, config=TrainConfig(epochs=4, lr=1e-3, device="cpu", seed=0), callbacks=[pruner]).fit(loader)

    assert all(not torch.equal(layer.scores, start[name]) for name, layer in pruner.layers.items())
    assert sparsity_report(model).sparsity == pytest.approx(0.95, abs=1e-3)
    magnitude, _ = prune_unstructured(trained_digits_mlp, {"sparsity": 0.95})
    assert accuracy(make_permanent(model)) > 0.85 > accuracy(magnitude) + 0.2  # measured: 0.91 vs 0.45
