"""`cleanai demo`: the end-to-end main job on the embedded digits data.

Train the small CNN; prune 30 % of its channels by activation coverage and fine-tune it; quantize
the pruned model to int8 with ONNX Runtime; benchmark the three variants the same way on the whole
test split (timed in interleaved rounds); and write `results.json`, `results.csv`, `metrics.png`, `history.json`,
`prune_report.json`, `model.safetensors`, the pruned model and the int8 ONNX file into the run
folder. The folder is replaced whole at the end, so a crash never leaves a half-written run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cleanai.benchmark import (
    BenchmarkConfig,
    Measurement,
    TorchRunner,
    compare,
    compare_runners,
    plot_metrics,
    save_rows,
)
from cleanai.data import load_dataset
from cleanai.io import atomic_dir, check_destination, save_safetensors, write_json
from cleanai.models import create_model
from cleanai.pruning import PruneConfig, prune, save_pruned
from cleanai.quantization import QuantConfig, quantize
from cleanai.training import TrainConfig, Trainer, seed_everything


def run_demo(out_dir: str | os.PathLike[str] = "runs/demo", *, epochs: int = 20, threads: int | None = None,
             seed: int = 0, progress: bool = True, overwrite: bool = False) -> list[Measurement]:
    """Run the demo and return its benchmark rows; results land in `out_dir`, checked before any work
    (`cleanai.io.check_destination`: a folder not written by CleanAI is replaced only with `overwrite`)."""
    check_destination(out_dir, overwrite=overwrite)
    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(seed)  # before the model is built: the seed fixes its initial weights too
    splits = load_dataset("digits", seed=seed)
    loaders = splits.loaders(batch_size=64, seed=seed)
    model = create_model("small_cnn", num_classes=len(splits.label_names))
    config = TrainConfig(epochs=epochs, optimizer="adamw", lr=3e-3, scheduler="cosine",
                         metrics=["accuracy", "macro_f1"], seed=seed, progress=progress)
    history = Trainer(model, config=config).fit(loaders.train, loaders.val)

    example = next(iter(loaders.val))[0][:1]
    pruned, report = prune(model, example, PruneConfig(criterion="coverage", ratio=0.3), calib=loaders.train)
    Trainer(pruned, config=config.model_copy(update={"epochs": max(1, epochs // 4)})).fit(loaders.train, loaders.val)
    int8 = quantize(pruned, QuantConfig.auto(), calib=loaders.train, example_inputs=example,
                    name="small_cnn pruned 30% +")

    with atomic_dir(out_dir, overwrite=overwrite) as stage:
        save_safetensors(model, stage / "model.safetensors", metadata={"model": "small_cnn", "dataset": "digits"})
        save_pruned(pruned, stage / "pruned", base="small_cnn", base_kwargs={"num_classes": len(splits.label_names)},
                    example_inputs=example)
        write_json(stage / "history.json", history.to_dict())
        write_json(stage / "train_config.json", config.model_dump(mode="json"))
        write_json(stage / "prune_report.json", report.to_dict())
        bench = BenchmarkConfig(batch_size=1, throughput_batch_size=64, threads=torch.get_num_threads(),
                                progress=progress)
        variants = [TorchRunner(model, name="small_cnn fp32 (torch)"),
                    TorchRunner(pruned, name="small_cnn pruned 30% (torch)"), int8]
        rows = compare_runners(variants, loaders.test, bench, metrics=("accuracy", "macro_f1"), show=False)
        int8.save(stage)
        save_rows(rows, stage / "results.json")
        save_rows(rows, stage / "results.csv")
        plot_metrics(rows, stage / "metrics.png", title="CleanAI demo: digits, small CNN")
    compare(rows)
    print(f"Run written to {Path(out_dir).resolve()}")
    return rows
