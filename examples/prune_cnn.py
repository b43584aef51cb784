"""Prune a small CNN on the embedded digits data, fine-tune it, and compare it with the original.

    python examples/prune_cnn.py --criterion wanda --ratio 0.3 --epochs 10
"""

import argparse

from cleanai.benchmark import BenchmarkConfig, TorchRunner, compare_runners
from cleanai.data import load_dataset
from cleanai.models import create_model
from cleanai.pruning import PruneConfig, prune, save_pruned
from cleanai.training import TrainConfig, Trainer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--criterion", default="coverage", help="magnitude, taylor, wanda, coverage, adaptive, ...")
parser.add_argument("--ratio", type=float, default=0.3, help="fraction of the channels removed")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--runs", type=int, default=100, help="timed calls per model")
parser.add_argument("--out", default="runs/example-pruned")
args = parser.parse_args()

splits = load_dataset("digits")
loaders = splits.loaders(batch_size=64)
model = create_model("small_cnn", num_classes=splits.num_classes)
config = TrainConfig(epochs=args.epochs, optimizer="adamw", lr=3e-3, scheduler="cosine", seed=0, progress=False)
Trainer(model, config=config).fit(loaders.train, loaders.val)

example = next(iter(loaders.val))[0][:1]
pruned, report = prune(model, example, PruneConfig(criterion=args.criterion, ratio=args.ratio), calib=loaders.train)
print(report)  # widths, params and MACs before and after
Trainer(pruned, config=config.model_copy(update={"epochs": max(1, args.epochs // 2)})).fit(loaders.train, loaders.val)
save_pruned(pruned, args.out, base="small_cnn", base_kwargs={"num_classes": splits.num_classes}, example_inputs=example)

compare_runners([TorchRunner(model, name="original"), TorchRunner(pruned, name=f"{args.criterion} {args.ratio:.0%}")],
                loaders.test, BenchmarkConfig(runs=args.runs, threads=1, progress=False))
print(f"Pruned model (widths manifest + safetensors, cleanai.pruning.load_pruned reads it) in {args.out}")
