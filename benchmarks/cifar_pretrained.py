"""Do CleanAI's CIFAR-10 loader and ResNets match upstream? And does fine-tuning on the JPEG copy help?

1. Scores the akamaster ResNet-20/56 checkpoints on the whole CIFAR-10 JPEG test split (10,000
   images); shared/models/resnet-cifar10-akamaster/README.md states 81.03 % / 83.20 % for this copy.
2. Fine-tunes those named by `--finetune` for `--epochs` on the JPEG training split (45,000 images; 5,000 held out for
   validation) with the Trainer and reports the new test accuracy. The fine-tuned weights are saved
   to `--out` (default runs/finetuned/) for the pruning and quantization benchmarks.
Usage: python benchmarks/cifar_pretrained.py [--depths 20 56] [--finetune 20] [--epochs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cleanai.data import load_dataset
from cleanai.io import save_safetensors
from cleanai.models import create_model
from cleanai.training import TrainConfig, Trainer

from _report import machine  # benchmarks/_report.py: scripts run from this folder

STATED = {20: 81.03, 56: 83.20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--finetune", type=int, nargs="*", default=[20], help="depths to fine-tune")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/finetuned"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_dataset("cifar10")
    loaders = splits.loaders(batch_size=args.batch_size, eval_batch_size=500)
    rows = []
    for depth in args.depths:
        model = create_model(f"resnet{depth}", pretrained="akamaster")
        config = TrainConfig(epochs=args.epochs, optimizer="sgd", lr=args.lr,
                             optimizer_kwargs={"momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
                             scheduler="cosine", seed=0, progress=True)
        trainer = Trainer(model, config=config)
        before = 100 * trainer.evaluate(loaders.test)["accuracy"]
        if depth not in args.finetune:
            rows.append((f"ResNet-{depth}", f"{STATED[depth]:.2f}", f"{before:.2f}", "-", "-", "-"))
            continue
        start = time.perf_counter()
        trainer.fit(loaders.train, loaders.val)
        minutes = (time.perf_counter() - start) / 60
        after = 100 * trainer.evaluate(loaders.test)["accuracy"]
        save_safetensors(model, args.out / f"resnet{depth}_cifar10jpeg.safetensors",
                         metadata={"base": "akamaster", "epochs": str(args.epochs), "test_accuracy": f"{after:.2f}"})
        rows.append((f"ResNet-{depth}", f"{STATED[depth]:.2f}", f"{before:.2f}", f"{after:.2f}",
                     f"{after - before:+.2f}", f"{minutes:.1f}"))
        print(rows[-1], flush=True)
    print("\n" + machine(f"{args.threads} thread(s)"))
    print(f"Fine-tuning: SGD(momentum 0.9, nesterov, wd 5e-4), lr {args.lr} cosine, batch {args.batch_size}, "
          f"{args.epochs} epochs on 45,000 JPEG training images (random crop + flip); test = all 10,000 images.\n")
    print("| model | stated in README % | akamaster, measured % | after fine-tuning % | gain pp | fine-tune minutes |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
