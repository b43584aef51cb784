"""`cleanai demo`: the end-to-end main job on the embedded digits data.

Train the small CNN, evaluate it on the whole test split, benchmark it, and write
`results.json`, `results.csv`, `metrics.png`, `history.json` and `model.safetensors` into the run
folder. The folder is replaced whole at the end, so a crash never leaves a half-written run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cleanai.benchmark import BenchmarkConfig, Measurement, TorchRunner, benchmark, compare, plot_metrics, save_rows
from cleanai.data import load_dataset
from cleanai.io import atomic_dir, save_safetensors, write_json
from cleanai.models import create_model
from cleanai.training import TrainConfig, Trainer


def run_demo(out_dir: str | os.PathLike[str] = "runs/demo", *, epochs: int = 20, threads: int | None = None,
             seed: int = 0, progress: bool = True) -> list[Measurement]:
    """Run the demo and return its benchmark rows; results land in `out_dir`."""
    if threads is not None:
        torch.set_num_threads(threads)
    splits = load_dataset("digits", seed=seed)
    loaders = splits.loaders(batch_size=64, seed=seed)
    model = create_model("small_cnn", num_classes=len(splits.label_names))
    config = TrainConfig(epochs=epochs, optimizer="adamw", lr=3e-3, scheduler="cosine",
                         metrics=["accuracy", "macro_f1"], seed=seed, progress=progress)
    trainer = Trainer(model, config=config)
    history = trainer.fit(loaders.train, loaders.val)

    with atomic_dir(out_dir) as stage:
        save_safetensors(model, stage / "model.safetensors", metadata={"model": "small_cnn", "dataset": "digits"})
        write_json(stage / "history.json", history.to_dict())
        write_json(stage / "train_config.json", config.model_dump(mode="json"))
        bench = BenchmarkConfig(batch_size=1, throughput_batch_size=64, threads=torch.get_num_threads())
        rows = [benchmark(TorchRunner(model, name="small_cnn fp32 (torch)"), loaders.test, config=bench,
                          metrics=("accuracy", "macro_f1"))]
        save_rows(rows, stage / "results.json")
        save_rows(rows, stage / "results.csv")
        plot_metrics(rows, stage / "metrics.png", title="CleanAI demo: digits, small CNN")
    compare(rows)
    print(f"Run written to {Path(out_dir).resolve()}")
    return rows
