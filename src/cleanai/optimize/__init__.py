"""Budget-driven optimisation: `optimize(model, data, OptimizeConfig(max_accuracy_drop=1.0, objective="latency"))`.

    from cleanai.optimize import OptimizeConfig, optimize
    result = optimize({"name": "small_cnn", "weights": "runs/cnn/model.safetensors"}, "digits",
                      OptimizeConfig.quick(out="runs/optimize"))
    print(result.summary())          # the Pareto front, the choice (or the gap), the final artifact
    result.artifact["onnx"], result.recipe   # the deployable file; the chosen pipeline as a recipe YAML

A multi-objective `tune()` study (validation accuracy, latency of the exported artifact, its size) searches
the encoder depth of a text model (`depths`), pruning criterion, ratio, per-layer ratios (one scale over the sensitivity scan), iterative steps, KD from
the original, BatchNorm folding and ONNX Runtime quantization; fine-tuning budgets follow successive halving.
The choice is rerun as a recipe with a longer fine-tune and reported with the recipe report.
"""

from cleanai.optimize.candidate import Candidate, Encoder, layer_ratios, search_space, starting_points
from cleanai.optimize.config import OptimizeConfig, OptimizeError
from cleanai.optimize.halving import SuccessiveHalving, rungs
from cleanai.optimize.report import build_document, write_report
from cleanai.optimize.search import OptimizeResult, optimize

__all__ = ["Candidate", "Encoder", "OptimizeConfig", "OptimizeError", "OptimizeResult", "SuccessiveHalving", "build_document",
           "layer_ratios", "optimize", "rungs", "search_space", "starting_points", "write_report"]
