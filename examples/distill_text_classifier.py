"""Distil a text classifier into a student with half its layers, on CLINC150 intents (no download).

The teacher is a small BERT built from a config (a character-level tokenizer, random initialisation) and
trained here first; the student keeps every other teacher layer, initialised from its weights, and learns
from the teacher's softened logits and the labels. Needs the CLINC150 folder (CLEANAI_DATA).

    python examples/distill_text_classifier.py --epochs 5
"""

import argparse

from torch.utils.data import DataLoader

from cleanai.benchmark import BenchmarkConfig, TorchRunner, compare_runners
from cleanai.data import load_dataset, subset, text_collate
from cleanai.distillation import DistillConfig, distill, keep_layers
from cleanai.models import create_model
from cleanai.training import TrainConfig, Trainer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--layers", type=int, default=4, help="teacher layers (the student keeps half)")
parser.add_argument("--samples", type=int, default=None, help="training queries used (default: all)")
parser.add_argument("--runs", type=int, default=50, help="timed calls per model")
args = parser.parse_args()

clinc = load_dataset("clinc150", config="small", include_oos=False)
teacher = create_model("tiny_bert_classifier", label_names=clinc.label_names, hidden_size=64,
                       num_hidden_layers=args.layers, num_attention_heads=4, intermediate_size=128)
collate = text_collate(teacher.tokenizer, max_length=48)
train = DataLoader(subset(clinc.train, args.samples), batch_size=32, shuffle=True, collate_fn=collate)
val = DataLoader(subset(clinc.val, args.samples), batch_size=128, collate_fn=collate)
test = DataLoader(clinc.test, batch_size=128, collate_fn=collate)

config = TrainConfig(epochs=args.epochs, optimizer="adamw", lr=2e-3, seed=0, progress=False)
Trainer(teacher, config=config).fit(train, val)
teacher.eval()

student = keep_layers(teacher, list(range(0, args.layers, 2)))  # layers 0, 2, ... with the teacher's weights
student, history = distill(student, teacher, train, val, DistillConfig(alpha=0.5, temperature=2.0, train=config))
print(f"student after distillation: val accuracy {history.last['val_accuracy']:.4f}")

compare_runners([TorchRunner(teacher, name=f"teacher ({args.layers} layers)"),
                 TorchRunner(student, name=f"student ({len(range(0, args.layers, 2))} layers)")],
                test, BenchmarkConfig(runs=args.runs, threads=1, progress=False))
