"""Export a trained CNN to ONNX, quantize it to int8 for ONNX Runtime, and measure all three.

    python examples/quantize_export.py --epochs 10
"""

import argparse
from pathlib import Path

from cleanai.benchmark import BenchmarkConfig, OrtRunner, TorchRunner, compare_runners
from cleanai.data import load_dataset
from cleanai.export import export_onnx
from cleanai.models import create_model
from cleanai.quantization import QuantConfig, quantize
from cleanai.training import TrainConfig, Trainer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--runs", type=int, default=100, help="timed calls per model")
parser.add_argument("--out", default="runs/example-int8")
args = parser.parse_args()
out = Path(args.out)

splits = load_dataset("digits")
loaders = splits.loaders(batch_size=64)
model = create_model("small_cnn", num_classes=splits.num_classes)
Trainer(model, config=TrainConfig(epochs=args.epochs, optimizer="adamw", lr=3e-3, seed=0, progress=False)).fit(
    loaders.train, loaders.val)
model.eval()

example = next(iter(loaders.val))[0][:1]
exported = export_onnx(model, example, out / "model.onnx")  # outputs checked against torch before it returns
print(f"fp32 ONNX: {exported.path} (max |torch - onnx| = {exported.max_abs_diff:.2e})")
int8 = quantize(model, QuantConfig.auto(), calib=loaders.train, example_inputs=example, name="int8 (ORT)")
print(int8.quant_check)  # SQNR and top-1 agreement against fp32 on held-back calibration batches
int8_path = int8.save(out)
print(f"int8 ONNX: {int8_path}")

compare_runners([TorchRunner(model, name="fp32 (torch)"), OrtRunner(exported.path, name="fp32 (ORT)"), int8],
                loaders.test, BenchmarkConfig(runs=args.runs, threads=1, progress=False))
