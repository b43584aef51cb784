"""The contract every registered criterion meets, on a residual CNN, a depthwise CNN and a tiny BERT.

Scores: one finite value per channel of every DepGraph group, identical across two runs under a seed.
Pruning: forward works, output shape unchanged, ONNX export runs in ONNX Runtime with the same outputs,
and widths and MACs fall as asked (within the flooring of channel counts).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch_pruning as tp
from torch import nn

from cleanai.pruning import (
    CUSTOMIZED_PRUNERS,
    PruneConfig,
    create_criterion,
    list_criteria,
    prune,
    rewrite_pad_shortcuts,
)

MODELS = ["residual_cnn", "depthwise_cnn", "tiny_bert"]
RATIO = 0.3

Zoo = dict[str, tuple[Callable[[], nn.Module], Any, list[Any]]]


def _call(model: nn.Module, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs) if isinstance(inputs, dict) else model(inputs)


@pytest.mark.parametrize("criterion", list_criteria())
@pytest.mark.parametrize("model_name", MODELS)
def test_scores_are_one_finite_value_per_channel_and_deterministic(criterion: str, model_name: str, zoo: Zoo) -> None:
    build, example, calib = zoo[model_name]
    model = build()
    rewrite_pad_shortcuts(model)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, customized_pruners=CUSTOMIZED_PRUNERS)
    groups = list(dg.get_all_groups(root_module_types=(nn.modules.conv._ConvNd, nn.Linear)))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        crit = create_criterion(criterion)
        crit.prepare(model, calib)
        runs.append([crit(group) for group in groups])
    for group, first, second in zip(groups, *runs, strict=True):
        assert first is not None and first.shape == (len(group[0].idxs),), group[0]
        assert bool(torch.isfinite(first).all())
        torch.testing.assert_close(first, second)


def _expected_width(model_name: str, layer: Any) -> int | None:
    """Width a layer must have after local pruning at RATIO (None: not checked, e.g. derived q/k/v widths)."""
    if layer.name in ("linear", "6", "hf_model.classifier"):  # the output layers
        return layer.before
    if model_name != "tiny_bert" or layer.unit == "heads" or layer.name.endswith("intermediate.dense"):
        return math.floor(layer.before * (1 - RATIO))
    return None


@pytest.mark.parametrize("criterion", list_criteria())
@pytest.mark.parametrize("model_name", MODELS)
def test_pruned_model_runs_exports_to_onnx_and_loses_the_asked_share(criterion: str, model_name: str, zoo: Zoo,
                                                                     tmp_path: Any) -> None:
    build, example, calib = zoo[model_name]
    model = build()
    reference = _call(model, example)
    pruned, report = prune(model, example, PruneConfig(criterion=criterion, ratio=RATIO), calib=calib)
    output = _call(pruned, example)
    assert output.shape == reference.shape and bool(torch.isfinite(output).all())

    for layer in report.layers:
        expected = _expected_width(model_name, layer)
        assert expected is None or layer.after == expected, layer
    # every layer loses 1-(1-r) (one side pruned) to 1-(1-r)^2 (both sides) of its MACs
    assert (1 - RATIO) ** 2 - 0.03 < report.macs_ratio < 1 - RATIO + 0.03, report.macs_ratio
    assert report.params_after < report.params_before and not report.capped_layers

    names = list(example) if isinstance(example, dict) else ["x"]
    args = tuple(example.values()) if isinstance(example, dict) else (example,)
    path = tmp_path / "pruned.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(pruned, args, str(path), input_names=names, dynamo=False, external_data=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})
    np.testing.assert_allclose(onnx_out, output.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("criterion", list_criteria())
def test_global_scope_removes_the_asked_share_of_all_channels(criterion: str, zoo: Zoo) -> None:
    build, example, calib = zoo["residual_cnn"]
    pruned, report = prune(build(), example, PruneConfig(criterion=criterion, ratio=0.4, scope="global"), calib=calib)
    assert _call(pruned, example).shape == (2, 10)
    # the channel groups of ResNet-8: stem/stage residual groups (16, 32, 64) and the three inner convs
    groups = ["conv1", "layer1.0.conv1", "layer2.0.conv1", "layer2.0.conv2", "layer3.0.conv1", "layer3.0.conv2"]
    after = {c.name: c.after for c in report.layers}
    assert sum(after[g] for g in groups) == math.floor((16 + 16 + 32 + 32 + 64 + 64) * 0.6)
