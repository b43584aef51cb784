from __future__ import annotations

import pytest
import torch
from sklearn import metrics as skm

from cleanai.errors import UnknownNameError
from cleanai.metrics import get_metric, list_metrics


def random_split(n: int = 301, classes: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g)
    logits[torch.arange(n), targets] += torch.rand(n, generator=g) * 2  # better than chance, not perfect
    return logits, targets


def accumulate(name: str, logits: torch.Tensor, targets: torch.Tensor, **kw: int) -> float:
    """Feed the split in uneven batches, as an evaluation loop does."""
    metric = get_metric(name, **kw)
    for chunk in (slice(0, 7), slice(7, 100), slice(100, 101), slice(101, None)):
        metric.update(logits[chunk], targets[chunk])
    return metric.compute()


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_scikit_learn_over_the_whole_split(seed: int) -> None:
    logits, targets = random_split(seed=seed)
    y, pred = targets.numpy(), logits.argmax(1).numpy()
    assert accumulate("accuracy", logits, targets) == pytest.approx(skm.accuracy_score(y, pred))
    assert accumulate("top_k", logits, targets, k=3) == pytest.approx(
        skm.top_k_accuracy_score(y, logits.numpy(), k=3, labels=range(6)))
    for name, fn in (("macro_f1", skm.f1_score), ("precision", skm.precision_score), ("recall", skm.recall_score)):
        assert accumulate(name, logits, targets) == pytest.approx(fn(y, pred, average="macro", zero_division=0)), name


def test_macro_scores_skip_absent_classes_and_score_never_predicted_ones_zero_like_sklearn() -> None:
    # 5 output classes; class 4 never occurs and is never predicted, class 2 is never predicted.
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    pred = torch.tensor([0, 1, 1, 1, 0, 3, 3, 3])
    logits = torch.nn.functional.one_hot(pred, 5).float()
    for name, fn in (("macro_f1", skm.f1_score), ("precision", skm.precision_score), ("recall", skm.recall_score)):
        assert accumulate(name, logits, targets) == pytest.approx(
            fn(targets.numpy(), pred.numpy(), average="macro", zero_division=0)), name


def test_binary_single_logit_is_thresholded_at_zero() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    targets = torch.tensor([1.0, 0.0, 0.0, 0.0])
    metric = get_metric("accuracy")
    metric.update(logits, targets)
    assert metric.compute() == pytest.approx(0.75)


def test_whole_split_value_differs_from_a_mean_of_batch_values() -> None:
    logits, targets = random_split()
    batches = [slice(0, 7), slice(7, None)]
    per_batch = []
    for b in batches:
        m = get_metric("macro_f1")
        m.update(logits[b], targets[b])
        per_batch.append(m.compute())
    whole = accumulate("macro_f1", logits, targets)
    assert whole == pytest.approx(skm.f1_score(targets.numpy(), logits.argmax(1).numpy(), average="macro"))
    assert whole != pytest.approx(sum(per_batch) / len(per_batch))


def test_top_k_names_itself_and_checks_k() -> None:
    assert get_metric("top_k", k=3).name == "top_3"
    metric = get_metric("top_k", k=5)
    with pytest.raises(ValueError, match="C >= 5"):
        metric.update(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


def test_reset_starts_a_new_split() -> None:
    metric = get_metric("accuracy")
    metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    metric.reset()
    metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert metric.compute() == 1.0


def test_unknown_metric_lists_the_valid_names() -> None:
    assert {"accuracy", "top_k", "macro_f1", "precision", "recall"} <= set(list_metrics())
    with pytest.raises(UnknownNameError, match="macro_f1"):
        get_metric("f1")
