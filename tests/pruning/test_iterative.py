"""prune_and_finetune: accuracy before / after pruning / after fine-tuning at every step, on real digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cleanai.pruning import PruneConfig, prune, prune_and_finetune
from cleanai.training import TrainConfig, Trainer


def _example(loaders) -> torch.Tensor:
    return next(iter(loaders.val))[0][:1]


def _accuracy(model: nn.Module, loader) -> float:
    return Trainer(model, config=TrainConfig(progress=False)).evaluate(loader)["accuracy"]


def test_every_step_records_before_after_pruning_and_after_fine_tuning(trained_cnn, loaders):
    original = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    config = PruneConfig(ratio=0.6, iterative_steps=2)
    tune = TrainConfig(epochs=1, lr=0.005, seed=0, progress=False)
    pruned, report, history = prune_and_finetune(trained_cnn, _example(loaders), config, loaders.train, loaders.val,
                                                 tune)

    base = _accuracy(trained_cnn, loaders.val)
    assert history.baseline["accuracy"] == base > 0.8
    assert [s.step for s in history.steps] == [1, 2]
    first, second = history.steps
    assert first.before == history.baseline and second.before == first.after_finetune
    assert [(s.macs, s.params) for s in history.steps] == [(r.macs, r.params) for r in report.steps]
    assert report.macs_before > first.macs > second.macs == report.macs_after
    # heavy pruning costs accuracy, and each one-epoch fine-tune wins some of it back
    assert second.after_prune["accuracy"] < second.before["accuracy"]
    for step in history.steps:
        assert step.after_finetune["accuracy"] > step.after_prune["accuracy"]
        assert len(step.finetune_history["records"]) == 1 and step.finetune_seconds > 0
    assert history.final == second.after_finetune
    assert _accuracy(pruned, loaders.val) == pytest.approx(history.final["accuracy"])
    assert all(torch.equal(original[k], v) for k, v in trained_cnn.state_dict().items())
    table = str(history)
    assert table.splitlines()[0].split() == ["step", "params", "MACs", "before", "pruned", "tuned"]
    assert len(table.splitlines()) == 4


def test_without_fine_tuning_it_is_exactly_prune(trained_cnn, loaders):
    example = _example(loaders)
    config = PruneConfig(criterion="wanda", ratio=0.5, iterative_steps=2, calib_batches=2)
    calib = [next(iter(loaders.train)) for _ in range(2)]  # the same batches for both (the loader reshuffles)
    pruned, report, history = prune_and_finetune(trained_cnn, example, config, loaders.train, loaders.val,
                                                 calib=calib)
    plain, plain_report = prune(trained_cnn, example, config, calib=calib)

    assert [s.after_finetune for s in history.steps] == [None, None]
    assert history.steps[1].before == history.steps[0].after_prune
    assert [c.after for c in report.layers] == [c.after for c in plain_report.layers]
    with torch.no_grad():
        assert torch.equal(pruned.eval()(example), plain.eval()(example))
    assert history.final["accuracy"] == pytest.approx(_accuracy(plain, loaders.val))


def test_each_step_checkpoints_into_its_own_folder(trained_cnn, loaders, tmp_path):
    tune = TrainConfig(epochs=1, progress=False, checkpoint_dir=tmp_path / "ckpt")
    prune_and_finetune(trained_cnn, _example(loaders), PruneConfig(ratio=0.2, iterative_steps=2), loaders.train,
                       loaders.val, tune)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step1", "step2"]
    assert (tmp_path / "ckpt" / "step2" / "last.pt").is_file()


def test_bad_settings_are_refused(trained_cnn, loaders, tmp_path):
    example = _example(loaders)
    with pytest.raises(ValueError, match="resume must be False"):
        prune_and_finetune(trained_cnn, example, None, loaders.train, loaders.val,
                           TrainConfig(resume=True, checkpoint_dir=tmp_path))
    with pytest.raises(ValueError, match="metric 'f1' is not measured.*loss, accuracy"):
        prune_and_finetune(trained_cnn, example, None, loaders.train, loaders.val, metric="f1")


def test_with_a_teacher_each_fine_tune_distils_from_it(trained_cnn, loaders):
    from cleanai.distillation import DistillConfig

    example = _example(loaders)
    config = PruneConfig(ratio=0.5)
    tune = TrainConfig(epochs=1, lr=0.005, seed=0, progress=False)
    loaders.train.generator.manual_seed(0)  # every run sees the same batch order
    plain, _, plain_history = prune_and_finetune(trained_cnn, example, config, loaders.train, loaders.val, tune)
    # alpha=1 is cross-entropy alone: the same weights as without a teacher
    loaders.train.generator.manual_seed(0)
    hard, _, _ = prune_and_finetune(trained_cnn, example, config, loaders.train, loaders.val, tune,
                                    teacher=trained_cnn, distill_config=DistillConfig(alpha=1.0))
    soft, _, soft_history = prune_and_finetune(trained_cnn, example, config, loaders.train, loaders.val, tune,
                                               teacher=trained_cnn, distill_config=DistillConfig(alpha=0.0))
    for key, value in plain.state_dict().items():
        assert torch.allclose(value, hard.state_dict()[key], atol=1e-6), key
    assert any(not torch.allclose(v, soft.state_dict()[k]) for k, v in plain.state_dict().items())
    step = soft_history.steps[0]
    assert step.after_finetune["accuracy"] > step.after_prune["accuracy"]
    assert soft_history.steps[0].finetune_history["records"][0]["train_loss"] != \
        plain_history.steps[0].finetune_history["records"][0]["train_loss"]
