"""Search learning rate, optimizer and width of a small CNN with Hyperband stopping bad trials early.

    python examples/hyperband_search.py --trials 30 --epochs 9
"""

import argparse

from cleanai.data import load_dataset
from cleanai.models import create_model
from cleanai.training import TrainConfig
from cleanai.tuning import TrainingSpec, TuneConfig, save_result, tune

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--trials", type=int, default=30)
parser.add_argument("--epochs", type=int, default=9, help="the most epochs a trial may get (Hyperband's resource)")
parser.add_argument("--out", default="runs/example-hyperband", help="study.db (a rerun resumes), trials.csv, plots/")
args = parser.parse_args()

splits = load_dataset("digits")
loaders = splits.loaders(batch_size=64)
space = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},       # a TrainConfig field
    "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},     # a TrainConfig field
    "width": {"type": "int", "low": 8, "high": 32, "step": 8},             # read by the model builder
}


def build(hp):
    return create_model("small_cnn", num_classes=splits.num_classes, channels=(hp["width"], 2 * hp["width"]))


spec = TrainingSpec(build, loaders.train, loaders.val, TrainConfig(epochs=args.epochs, seed=0, progress=False),
                    metric="val_accuracy")  # reported after every epoch: Hyperband stops the weak trials
result = tune(spec, space, TuneConfig(sampler="tpe", pruner="hyperband", n_trials=args.trials, seed=0,
                                      run_dir=args.out))
save_result(result, args.out)
result.results_summary(n=5)
print(f"best: {result.best_params} -> val accuracy {result.best_value:.4f}; files in {args.out}")
