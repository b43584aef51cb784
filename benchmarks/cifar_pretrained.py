"""Do CleanAI's CIFAR-10 loader and ResNets match upstream? And does fine-tuning on the JPEG copy help?

1. Scores the akamaster ResNet-20/56 checkpoints on the whole CIFAR-10 JPEG test split (10,000
   images); shared/models/resnet-cifar10-akamaster/README.md states 81.03 % / 83.20 % for this copy.
2. Fine-tunes those named by `--finetune` for `--epochs` on the JPEG training split (45,000 images; 5,000 held out for
   validation) with the Trainer and reports the new test accuracy. The fine-tuned weights are saved
   to `--out` (default runs/finetuned/) for the pruning and quantization benchmarks.
Raw rows: benchmarks/results/cifar_pretrained/<--run>/rows.json.
Usage: python benchmarks/cifar_pretrained.py [--depths 20 56] [--finetune 20] [--epochs 3] [--threads 2] [--run NAME]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from cleanai.data import load_dataset
from cleanai.io import save_safetensors
from cleanai.models import create_model
from cleanai.training import TrainConfig, Trainer

import _report  # benchmarks/_report.py: scripts run from this folder

STATED = {20: 81.03, 56: 83.20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--finetune", type=int, nargs="*", default=[20], help="depths to fine-tune")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/finetuned"), help="where the fine-tuned weights go")
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    record = {**_report.provenance(args), "rows": []}
    torch.set_num_threads(args.threads)
    splits = load_dataset("cifar10")
    loaders = splits.loaders(batch_size=args.batch_size, eval_batch_size=500)
    for depth in args.depths:
        model = create_model(f"resnet{depth}", pretrained="akamaster")
        config = TrainConfig(epochs=args.epochs, optimizer="sgd", lr=args.lr,
                             optimizer_kwargs={"momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
                             scheduler="cosine", seed=0, progress=True)
        trainer = Trainer(model, config=config)
        before = 100 * trainer.evaluate(loaders.test)["accuracy"]
        if depth not in args.finetune:
            record["rows"].append({"depth": depth, "stated": STATED[depth], "before": before})
            continue
        start = time.perf_counter()
        trainer.fit(loaders.train, loaders.val)
        minutes = (time.perf_counter() - start) / 60
        after = 100 * trainer.evaluate(loaders.test)["accuracy"]
        save_safetensors(model, args.out / f"resnet{depth}_cifar10jpeg.safetensors",
                         metadata={"base": "akamaster", "epochs": str(args.epochs), "test_accuracy": f"{after:.2f}"})
        record["rows"].append({"depth": depth, "stated": STATED[depth], "before": before, "after": after,
                               "minutes": minutes})
        print(record["rows"][-1], flush=True)
    _report.finish(record, args.run, _report.machine(f"{args.threads} thread(s)"))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run, from its record."""
    args = record["args"]

    def cells(r: dict[str, Any]) -> list[str]:
        tuned = "after" in r
        return [f"ResNet-{r['depth']}", f"{r['stated']:.2f}", f"{r['before']:.2f}",
                f"{r['after']:.2f}" if tuned else "-", f"{r['after'] - r['before']:+.2f}" if tuned else "-",
                f"{r['minutes']:.1f}" if tuned else "-"]
    tuned = any("after" in r for r in record["rows"])
    return "\n".join([
        _report.heading(record), "",
        (f"Fine-tuning: SGD(momentum 0.9, nesterov, wd 5e-4), lr {args['lr']} cosine, batch {args['batch_size']}, "
         f"{args['epochs']} epochs on 45,000 JPEG training images (random crop + flip)" if tuned else
         "No fine-tuning in this run: the checkpoints scored as published") + "; test = all 10,000 images.", "",
        _report.table(["model", "stated in README %", "akamaster, measured %", "after fine-tuning %", "gain pp",
                       "fine-tune minutes"], [cells(r) for r in record["rows"]])])


if __name__ == "__main__":
    main()
