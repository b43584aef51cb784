"""Candidate pipelines: the space sampled, per-layer ratios from one scale, and the recipe steps that rerun them."""

from __future__ import annotations

import dataclasses
import warnings

import optuna
import pytest
import yaml

from cleanai.optimize import candidate as candidate_module
from cleanai.optimize import Candidate, Encoder, OptimizeConfig, layer_ratios, search_space, starting_points
from cleanai.pruning import LayerSensitivity, PruneConfig, SensitivityPoint, SensitivityResult
from cleanai.quantization import QuantConfig
from cleanai.tuning import SearchSpace
from cleanai.recipes import load_recipe


def _scan(drops: dict[str, float]) -> SensitivityResult:
    layers = [LayerSensitivity(name=name, width=8, points=[SensitivityPoint(ratio=0.5, width=4, score=0.9 - d, drop=d,
                                                                            macs=100, params=10)])
              for name, drop in drops.items() for d in [drop]]
    return SensitivityResult(criterion="magnitude", metric="accuracy", ratios=[0.5], baseline=0.9, macs_before=200,
                             params_before=20, eval_batches=1, config={}, layers=layers)


def test_search_space_holds_every_choice_of_the_issue_and_quantization_options_only_when_quantizing():
    space = search_space(OptimizeConfig())
    assert set(space) == {"criterion", "ratio", "scale", "steps", "kd", "fold_bn", "quant", "calibration", "per_channel"}
    assert space["calibration"]["when"] == {"quant": ["static"]}
    assert space["per_channel"]["when"] == {"quant": ["static", "dynamic"]}
    assert space["ratio"]["low"] == 0.0 and space["ratio"]["high"] == 0.6


def test_scale_zero_prunes_every_layer_alike_and_a_larger_scale_spares_the_sensitive_layer():
    scan = _scan({"robust": 0.01, "sensitive": 0.2})
    assert layer_ratios(scan, 0.4, 0.0, 0.9) == {"robust": 0.4, "sensitive": 0.4}
    spread = layer_ratios(scan, 0.4, 1.0, 0.9)
    assert spread["robust"] > 0.4 > spread["sensitive"]
    assert abs((spread["robust"] + spread["sensitive"]) / 2 - 0.4) < 1e-3  # the mean stays the overall ratio
    assert max(layer_ratios(scan, 0.4, 2.0, 0.5).values()) == 0.5  # capped
    assert layer_ratios(None, 0.4, 1.0, 0.9) == {} and layer_ratios(scan, 0.0, 1.0, 0.9) == {}


def test_recipe_steps_of_a_candidate_validate_as_a_recipe(tmp_path):
    config = OptimizeConfig(final_epochs=4, kd_alpha=0.125, kd_temperature=7.0)
    candidate = Candidate(criterion="taylor", ratio=0.3, scale=1.0, steps=2, kd=True, fold_bn=True, quant="static",
                          calibration="entropy", per_channel=False)
    steps = candidate.recipe_steps(config, _scan({"conv1": 0.05, "conv2": 0.1}), onnx=True, fp32_layers=["/fc/Gemm"])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "small_cnn"}, "steps": steps}), encoding="utf-8")
    recipe = load_recipe(path)
    chain = {s.type: s for s in recipe.steps}
    assert [s.type for s in recipe.steps] == ["prune", "distill", "fuse", "export", "quantize", "benchmark"]
    assert chain["prune"].criterion == "taylor" and chain["prune"].iterative_steps == 2
    assert set(chain["prune"].ratio_dict) == {"conv1", "conv2"} and chain["prune"].teacher == "model"
    assert chain["distill"].teacher == "model" and chain["distill"].train.epochs == 4
    # both fine-tunes distil as the trial's did: the search's KD weights, not a step's defaults
    for step in (chain["prune"].distill_config(), chain["distill"]):
        assert (step.alpha, step.temperature) == (0.125, 7.0)
    assert chain["quantize"].calibration == "entropy" and chain["quantize"].per_channel is False
    assert chain["quantize"].nodes_to_exclude == ["/fc/Gemm"]
    assert chain["benchmark"].baseline == "model"


def test_sampled_learning_rates_enter_the_space_and_every_fine_tune_the_rerun_writes(tmp_path):
    config = OptimizeConfig(final_epochs=4, finetune_lrs=[2e-4, 1e-4, 2e-4])
    assert search_space(config)["lr"] == {"type": "categorical", "choices": [1e-4, 2e-4]}
    assert "lr" not in search_space(OptimizeConfig())  # without the option: the fine-tune's own rate, not sampled
    params = {"criterion": "magnitude", "ratio": 0.3, "scale": 0.0, "steps": 1, "kd": True, "fold_bn": False,
              "quant": "none", "lr": 2e-4}
    candidate = Candidate.from_params(params)
    assert candidate.finetune_config(config).lr == 2e-4 and candidate.finetune_config(config).epochs == 1
    assert Candidate.from_params({**params, "lr": None}).finetune_config(config) == config.finetune
    assert "fine-tune lr 0.0002" in candidate.describe()
    assert "lr" not in Candidate.from_params({**params, "ratio": 0.0}).describe()  # nothing trains, so no rate
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "small_cnn"},
                                    "steps": candidate.recipe_steps(config, None, onnx=False)}), encoding="utf-8")
    chain = {s.type: s for s in load_recipe(path).steps}
    assert chain["prune"].finetune.lr == 2e-4 and chain["distill"].train.lr == 2e-4
    assert chain["distill"].train.epochs == 4


def test_a_candidate_without_pruning_or_onnx_keeps_only_what_it_does(tmp_path):
    candidate = Candidate(criterion="magnitude", ratio=0.0, scale=0.0, steps=1, kd=False, fold_bn=False, quant="dynamic")
    assert [s["type"] for s in candidate.recipe_steps(OptimizeConfig(), None, onnx=True)] == \
        ["export", "quantize", "benchmark"]
    assert [s["type"] for s in candidate.recipe_steps(OptimizeConfig(), None, onnx=False)] == ["benchmark"]
    assert candidate.describe() == "no pruning -> int8 dynamic (per-channel)"


def test_a_candidate_quantizes_with_the_preset_of_this_cpu():
    candidate = Candidate(criterion="magnitude", ratio=0.0, scale=0.0, steps=1, kd=False, fold_bn=False,
                          quant="dynamic", per_channel=True)
    preset = QuantConfig.auto(is_static=False)
    chosen = candidate.quant_config(OptimizeConfig())
    assert (chosen.mode, chosen.reduce_range, chosen.weight_dtype) == (preset.mode, preset.reduce_range,
                                                                       preset.weight_dtype)


def test_a_pruning_candidate_keeps_channels_a_multiple_its_kernels_work_in_unless_round_to_is_set(monkeypatch):
    monkeypatch.setattr(candidate_module, "channel_multiple", lambda int8: 16 if int8 else 8)
    scan = _scan({"conv1": 0.05})
    int8, fp32 = (Candidate(criterion="magnitude", ratio=0.3, scale=0.0, steps=1, kd=False, fold_bn=False,
                            quant=quant, calibration="minmax") for quant in ("static", "none"))
    assert int8.prune_config(OptimizeConfig(), scan).round_to == 16
    assert fp32.prune_config(OptimizeConfig(), scan).round_to == 8
    exact = OptimizeConfig(prune=PruneConfig(round_to=1))  # a user's own multiple wins
    assert int8.prune_config(exact, scan).round_to == 1
    prune_step = int8.recipe_steps(OptimizeConfig(), scan, onnx=True)[0]
    assert prune_step["type"] == "prune" and prune_step["round_to"] == 16  # the written recipe reruns it alike


@pytest.mark.parametrize("max_ratio", [0.6, 0.3, 0.45])
def test_the_grid_steps_divide_their_ranges_as_optuna_checks_them(max_ratio):
    space = search_space(OptimizeConfig(max_ratio=max_ratio, max_scale=0.7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns and moves `high` when the step does not divide the range
        for name in ("ratio", "scale"):
            dist = optuna.distributions.FloatDistribution(space[name]["low"], space[name]["high"],
                                                          step=space[name]["step"])
            assert dist.high == space[name]["high"]


def test_every_search_starts_from_the_single_techniques_inside_its_own_space():
    combined = OptimizeConfig(max_ratio=0.5)
    points = starting_points(combined)
    assert points == [{"ratio": 0.0, "quant": "static", "per_channel": True},
                      {"ratio": 0.25, "scale": 0.0, "steps": 1, "kd": True, "quant": "static", "per_channel": True}]
    pruning_only = OptimizeConfig(quant_modes=["none"])
    assert starting_points(pruning_only) == [{"ratio": 0.3, "scale": 0.0, "steps": 1, "kd": True, "quant": "none"}]
    without_kd = OptimizeConfig(quant_modes=["none"], kd=[False])  # a search without KD starts without it
    assert starting_points(without_kd) == [{"ratio": 0.3, "scale": 0.0, "steps": 1, "quant": "none"}]
    assert starting_points(OptimizeConfig(max_ratio=0.0, quant_modes=["dynamic"])) == [
        {"ratio": 0.0, "quant": "dynamic", "per_channel": True}]
    for config in (combined, pruning_only, without_kd):
        space = SearchSpace.from_dict(search_space(config))
        for point in starting_points(config):
            space.check_values(point, "start")  # raises when a value lies outside the search's own space


def test_a_shallower_student_keeps_the_first_and_last_blocks_evenly_spread():
    six = Encoder("hf_model.bert.encoder.layer", 6)
    assert six.layers(3) == [0, 2, 5] and six.layers(4) == [0, 2, 3, 5] and six.layers(6) == list(range(6))
    ratios = {"hf_model.bert.encoder.layer.2.intermediate.dense": 0.3, "hf_model.bert.encoder.layer.1.attention": 0.5,
              "hf_model.bert.encoder.layer.5": 0.2, "hf_model.bert.pooler.dense": 0.1}
    assert six.renamed(ratios, [0, 2, 5]) == {"hf_model.bert.encoder.layer.1.intermediate.dense": 0.3,
                                              "hf_model.bert.encoder.layer.2": 0.2, "hf_model.bert.pooler.dense": 0.1}


def test_depths_and_vocabularies_enter_the_space_and_the_start_only_for_a_model_with_an_encoder():
    config = OptimizeConfig(depths=[3, 4, 6, 9], vocab_keep_first=[12000, 0, 12000], quant_modes=["none", "dynamic"])
    encoder = Encoder("hf_model.bert.encoder.layer", 6)
    space = search_space(config, encoder)
    assert space["depth"] == {"type": "categorical", "choices": [6, 4, 3]}  # the model's own depth first
    assert space["vocab"] == {"type": "categorical", "choices": [None, 0, 12000]}  # None: the whole vocabulary
    assert "depth" not in search_space(config) and "vocab" not in search_space(config)  # no encoder: a CNN
    points = starting_points(config, encoder)
    int8 = {"quant": "dynamic", "per_channel": True}  # every int8 point per channel, as the hand-built pipeline
    assert points[0] == {"depth": 6, "vocab": None, "ratio": 0.0, **int8}  # int8, nothing cut
    # then the combinations: every technique at once (the deepest shallower student, the largest vocabulary, pruned
    # at half the largest ratio), then that student and vocabulary unpruned
    assert points[1:3] == [{"depth": 4, "vocab": 12000, "ratio": 0.3, "scale": 0.0, "steps": 1, "kd": True, **int8},
                           {"depth": 4, "vocab": 12000, "ratio": 0.0, "kd": True, **int8}]
    # then one technique per point: pruning, each shallower student (the deepest first), the largest vocabulary
    assert points[3] == {"depth": 6, "vocab": None, "ratio": 0.3, "scale": 0.0, "steps": 1, "kd": True, **int8}
    assert points[4:] == [*({"depth": d, "vocab": None, "ratio": 0.0, "kd": True, **int8} for d in (4, 3)),
                          {"depth": 6, "vocab": 12000, "ratio": 0.0, **int8}]
    without_vocab = starting_points(OptimizeConfig(depths=[4], quant_modes=["dynamic"]), encoder)
    assert without_vocab[1] == {"depth": 4, "ratio": 0.3, "scale": 0.0, "steps": 1, "kd": True, **int8}
    assert len(without_vocab) == 4  # int8, that student pruned, pruning alone, the student alone: no cut to combine
    unpruned = starting_points(OptimizeConfig(depths=[4], vocab_keep_first=[8000], max_ratio=0.0,
                                              quant_modes=["dynamic"]), encoder)
    assert unpruned[1] == {"depth": 4, "vocab": 8000, "ratio": 0.0, "kd": True, **int8}  # nothing to prune
    assert len(unpruned) == 4
    checked = SearchSpace.from_dict(space)
    for point in points:
        checked.check_values(point, "start")


def test_a_shallower_candidate_reruns_as_keep_layers_then_its_training_and_prunes_blocks_by_their_new_names(tmp_path):
    encoder = Encoder("hf_model.bert.encoder.layer", 3)
    config = OptimizeConfig(final_epochs=4, depths=[2], quant_modes=["dynamic"])
    scan = _scan({"hf_model.bert.encoder.layer.0.intermediate.dense": 0.05,
                  "hf_model.bert.encoder.layer.1.intermediate.dense": 0.1,
                  "hf_model.bert.encoder.layer.2.intermediate.dense": 0.2})
    model = {"name": "tiny_bert_classifier", "kwargs": {"num_hidden_layers": 3}}
    cut = Candidate(criterion="magnitude", ratio=0.0, scale=0.0, steps=1, kd=True, fold_bn=False, quant="dynamic",
                    depth=2)
    pruned = Candidate(criterion="magnitude", ratio=0.4, scale=1.0, steps=1, kd=False, fold_bn=False, quant="dynamic",
                       depth=2)
    assert cut.cut(encoder) == [0, 2] and cut.cut(None) is None
    assert cut.describe() == "2 encoder layers (KD) -> no pruning -> int8 dynamic (per-channel)"
    assert cut.describe(encoder) == cut.describe()
    # the model's own depth, unpruned, is not fine-tuned: neither KD nor a learning rate is named
    whole = dataclasses.replace(cut, depth=3, lr=2e-4)
    assert whole.describe(encoder) == "3 encoder layers -> no pruning -> int8 dynamic (per-channel)"
    small = Candidate(criterion="magnitude", ratio=0.0, scale=0.0, steps=1, kd=False, fold_bn=False, quant="dynamic",
                      vocab=8000)
    assert small.describe() == "no pruning -> vocabulary: training tokens + first 8,000 ids -> int8 dynamic (per-channel)"
    for candidate, types in ((cut, ["keep_layers", "distill", "distill"]), (pruned, ["keep_layers", "prune", "finetune"]),
                             (small, ["vocabulary"])):
        steps = candidate.recipe_steps(config, scan, onnx=True, encoder=encoder)
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({"model": model, "data": {"name": "clinc150"}, "steps": steps}), encoding="utf-8")
        recipe = load_recipe(path)
        assert [s.type for s in recipe.steps] == [*types, "export", "quantize", "benchmark"]
        assert recipe.steps[0].layers == [0, 2] if candidate.depth else recipe.steps[0].keep_first == 8000
    for fallback in ("nearest", "prefix"):  # the cut reads dropped tokens as the search's trials did
        steps = small.recipe_steps(config.model_copy(update={"vocab_fallback": fallback}), scan, onnx=True)
        assert steps[0] == {"type": "vocabulary", "keep_first": 8000, "fallback": fallback}
    first, final = cut.recipe_steps(config, scan, onnx=True, encoder=encoder)[1:3]
    assert first["train"]["epochs"] == config.finetune.epochs and final["train"]["epochs"] == 4
    ratios = pruned.prune_config(config, scan, encoder).ratio_dict  # block 2 is block 1 of the cut model
    assert set(ratios) == {"hf_model.bert.encoder.layer.0.intermediate.dense",
                           "hf_model.bert.encoder.layer.1.intermediate.dense"}
    assert ratios["hf_model.bert.encoder.layer.1.intermediate.dense"] < ratios[
        "hf_model.bert.encoder.layer.0.intermediate.dense"]  # the old block 2 was the more sensitive
