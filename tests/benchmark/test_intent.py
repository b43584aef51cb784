"""Intent variants and rows: torch and ONNX Runtime runners of one classifier, out-of-scope metrics, query latency."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from cleanai.benchmark import BenchmarkConfig, intent_scores, intent_variants, measure_intents
from cleanai.data import TextDataset, raw_text_collate
from cleanai.models import tiny_bert_classifier


def test_intent_scores_split_accuracy_by_the_out_of_scope_class():
    logits = torch.eye(3)[[0, 1, 2, 0]]
    scores = intent_scores(logits, torch.tensor([0, 0, 2, 2]), oos_index=2)
    assert scores == {"accuracy": 0.5, "in_scope_accuracy": 0.5, "oos_recall": 0.5}


def test_torch_and_ort_variants_give_the_same_row_metrics(texts, tmp_path):
    torch.manual_seed(0)
    model = tiny_bert_classifier(label_names=["a", "b", "oos"]).eval()
    runners = intent_variants(model, "tiny", tmp_path, ["torch fp32", "ORT fp32"], oos_index=-1, max_length=32)
    assert list(runners) == ["tiny", "tiny + ORT fp32"]
    labels = [i % 3 for i in range(len(texts))]
    data = DataLoader(TextDataset(texts, labels), batch_size=4, collate_fn=raw_text_collate)
    config = BenchmarkConfig(warmup=1, runs=3, threads=1, progress=False)
    rows = measure_intents(runners, data, data, "what is my pin", config, whole_split=False, repeats=2)
    for row in rows:
        assert {"accuracy", "in_scope_accuracy", "oos_recall", "accuracy_oos_class", "oos_threshold"} <= set(row.metrics)
        assert row.accuracy == row.metrics["accuracy"] >= row.metrics["accuracy_oos_class"]  # tuned on the same data
        assert row.eval_samples == len(texts) and not row.eval_whole_split and row.latency_runs == 3
        assert row.rounds == 2 and row.speedup is not None  # timed interleaved, relative to the first runner
    assert rows[0].metrics["accuracy_oos_class"] == rows[1].metrics["accuracy_oos_class"]
    assert rows[1].backend == "onnxruntime" and rows[1].name == "tiny + ORT fp32"
