"""Intent classifiers with an out-of-scope class (CLINC150): deployable variants and one row per variant.

`intent_variants(model, ...)` builds the runners the text pipeline compares (torch fp32, torch dynamic
int8, ONNX Runtime fp32, ONNX Runtime dynamic int8), each tokenising its input. `measure_intents` gives
one `Measurement` per runner: accuracy, in-scope accuracy and out-of-scope recall over the whole test
split with the confidence threshold tuned on the validation split (the answer that ships), the same
three with out-of-scope as a class only (`*_oos_class` in `metrics`), and latency on one query, the
runners timed in interleaved rounds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cleanai.benchmark.compare import compare_runners
from cleanai.benchmark.performance import BenchmarkConfig, Measurement
from cleanai.runtime import OrtRunner, TextClassifierRunner, TorchRunner
from cleanai.data.text import TextDataset, raw_text_collate
from cleanai.metrics import get_metric
from cleanai.errors import InputError

INTENT_METRICS = ("accuracy", "in_scope_accuracy", "oos_recall")
BOOK_QUERY = "What is the pin number for my account?"  # the source material's batch-1 latency query
VARIANTS = ("torch fp32", "torch int8", "ORT fp32", "ORT int8")


def intent_variants(model: Any, name: str, workdir: str | os.PathLike[str], variants: Sequence[str] = VARIANTS,
                    oos_index: int = -1, max_length: int = 64) -> dict[str, TextClassifierRunner]:
    """`{"<name> + <variant>": runner}` for a `TextClassifier` ("torch fp32" is named `name` alone); ONNX files are
    kept under `workdir`."""
    from cleanai.quantization import QuantConfig, quantize

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise InputError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    model = model.eval()
    work = Path(workdir)
    example = model.encode([BOOK_QUERY, "hi"], max_length=max_length)
    example = {k: v for k, v in example.items() if k != "token_type_ids"}
    stem = name.replace(" ", "_")

    def build(variant: str) -> Any:
        if variant == "torch fp32":
            return TorchRunner(model, name=f"{name} torch fp32")
        if variant == "torch int8":
            return quantize(model, QuantConfig.auto(is_static=False, backend="torch"), name=f"{name} torch int8")
        if variant == "ORT fp32":
            return OrtRunner.from_model(model, example, name=f"{name} ORT fp32", dynamic_sequence=True)
        return quantize(model, QuantConfig.auto(is_static=False), example_inputs=example, workdir=work / f"{stem}-int8",
                        name=f"{name} ORT int8")

    oos = oos_index % model.num_labels
    names = {v: name if v == "torch fp32" else f"{name} + {v}" for v in variants}
    return {names[v]: TextClassifierRunner(model.tokenizer, build(v), max_length, name=names[v], oos_index=oos)
            for v in variants}


def intent_scores(logits: torch.Tensor, labels: torch.Tensor, oos_index: int) -> dict[str, float]:
    """Accuracy, in-scope accuracy and out-of-scope recall of logits against labels."""
    scores = {}
    for name in INTENT_METRICS:
        metric = get_metric(name, **({} if name == "accuracy" else {"oos_index": oos_index}))
        metric.update(logits, labels)
        scores[name] = metric.compute()
    return scores


def measure_intents(runners: Mapping[str, TextClassifierRunner], test: Iterable[Any], val: Iterable[Any] | None,
                    query: str, config: BenchmarkConfig | None = None, whole_split: bool = True,
                    repeats: int = 3) -> list[Measurement]:
    """One row per runner: all of `test` (threshold tuned on `val` when given), then latency/size/params/MACs on
    `query`, the runners timed in `repeats` interleaved rounds (`compare_runners`) so that a shared machine's drift
    falls on all of them alike; each row's `speedup` is the first runner's latency over its own, round by round.

    `whole_split=False` marks the rows as measured on part of the test split.
    """
    config = config or BenchmarkConfig(progress=False)
    scores = {name: _scores(runner, test, val) for name, runner in runners.items()}
    one_query = torch.utils.data.DataLoader(TextDataset([query], [0]), batch_size=1, collate_fn=raw_text_collate)
    timing = config.model_copy(update={"batch_size": 1, "max_eval_batches": 1, "throughput_runs": 0})
    rows = compare_runners(runners, one_query, timing, repeats=repeats, show=False)
    return [row.model_copy(update={"accuracy": metrics["accuracy"], "metrics": metrics, "eval_samples": samples,
                                  "eval_whole_split": whole_split})
            for row, (metrics, samples) in zip(rows, scores.values())]


def _scores(runner: TextClassifierRunner, test: Iterable[Any], val: Iterable[Any] | None) -> tuple[dict[str, float], int]:
    """The intent metrics of `runner` over `test`, as shipped (threshold tuned on `val`) and with oos as a class
    only (`*_oos_class`), and the number of test queries."""
    if runner.oos_index is None:
        raise InputError(f"runner {runner.name!r} needs oos_index for intent metrics")
    threshold = runner.tune_oos_threshold(val) if val is not None else None
    shipped, as_class, labels = [], [], []
    for texts, targets in test:
        logits = runner.inner(runner.encode(texts))
        as_class.append(logits)
        shipped.append(runner.answer(logits, texts))
        labels.append(torch.as_tensor(targets))
    if not labels:
        raise InputError("measure_intents got an empty test split")
    y = torch.cat(labels)
    scores = intent_scores(torch.cat(shipped), y, runner.oos_index)
    scores.update({f"{k}_oos_class": v for k, v in intent_scores(torch.cat(as_class), y, runner.oos_index).items()})
    if threshold is not None:
        scores["oos_threshold"] = threshold
    return scores, len(y)
