"""Which row should a token that vocabulary pruning drops read? Accuracy of CLINC150 students after each cut.

Vocabulary pruning keeps the embedding rows of the training queries' tokens plus the tokenizer's first N ids
(`--keep-first`); a validation or test query still holds other tokens. Each cut is applied three ways to each
student: the tokenizer rewritten to the kept ids (`remap="tokenizer"`: WordPiece splits a dropped word into kept
pieces, as the hand-built pipeline of benchmarks/clinc150.py does), and the tokenizer kept with the ids mapped
inside the model (`remap="model"`), a dropped token reading its longest kept prefix's row (`fallback="prefix"`)
or the kept row nearest its own in the original embedding (`fallback="nearest"`). Every variant, and the whole
vocabulary, is scored in torch fp32 on the whole validation and test splits (raw queries, accuracy with "oos" as a
class, as benchmarks/optimize.py reads them). Accuracy only: no timing, so it may share the machine.

Students: the distilled student a benchmarks/clinc150.py run cached (`--baseline RUN`) and any other saved
student (`--model NAME=DIR`: a TextClassifier folder, or a CleanAI pruned-model folder such as a recipe step's).
Writes its raw rows to benchmarks/results/vocabulary/<--run>/rows.json and prints the table of BENCHMARKS.md.
Usage: python benchmarks/vocabulary.py [--baseline book_4layers_s27] [--model NAME=DIR ...]
       [--keep-first 8000 12000 16000] [--run NAME]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from cleanai.data import load_dataset, texts_of
from cleanai.distillation import prune_vocabulary
from cleanai.models import TextClassifier
from cleanai.pruning import load_pruned
from cleanai.runtime import TextClassifierRunner, TorchRunner, evaluate

import _report  # benchmarks/_report.py: scripts run from this folder
import clinc150  # its query length and the students its runs cached

WAYS = {"tokenizer": {"remap": "tokenizer"}, "prefix": {"remap": "model", "fallback": "prefix"},
        "nearest": {"remap": "model", "fallback": "nearest"}}


def students(args: argparse.Namespace) -> dict[str, Path]:
    """The students to cut, by name: the `--baseline` run's distilled student, then each `--model NAME=DIR`."""
    found = {}
    if args.baseline:
        record = json.loads((_report.RESULTS / "clinc150" / args.baseline / "rows.json").read_text())
        found[f"{args.baseline}: distilled"] = clinc150.cached_model(record)
    for pair in args.model:
        name, _, folder = pair.partition("=")
        found[name] = Path(folder)
    for name, folder in found.items():
        if not (folder / "config.json").is_file() and not (folder / "manifest.json").is_file():
            raise SystemExit(f"student {name!r}: {folder} holds neither a TextClassifier (config.json) nor a pruned "
                             "model (manifest.json)")
    return found


def load(folder: Path) -> TextClassifier:
    model = load_pruned(folder) if (folder / "manifest.json").is_file() else TextClassifier.from_pretrained(folder)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="book_4layers_s27", help="a benchmarks/clinc150.py run ('' for none)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="another student to cut")
    parser.add_argument("--keep-first", type=int, nargs="+", default=[8000, 12000, 16000])
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    load_before = os.getloadavg()[0]
    record = {**_report.provenance(args), "rows": []}
    splits = load_dataset("clinc150", config="plus")
    loaders, train = splits.loaders(batch_size=64), texts_of(splits.train)
    oos = splits.label_names.index("oos")
    for name, folder in students(args).items():
        model = load(folder)
        variants = {("whole vocabulary", None): model}
        for keep in args.keep_first:
            variants.update({(way, keep): prune_vocabulary(model, train, keep_first=keep, **kwargs)
                             for way, kwargs in WAYS.items()})
        for (way, keep), variant in variants.items():
            runner = TextClassifierRunner(variant.tokenizer, TorchRunner(variant), clinc150.MAX_LENGTH, oos_index=oos)
            embedding = variant.hf_model.get_input_embeddings()
            id_map = getattr(embedding, "id_map", None)
            row = {"student": name, "folder": str(folder), "way": way, "keep_first": keep,
                   "rows": embedding.num_embeddings, "dim": embedding.embedding_dim,
                   "map_bytes": 0 if id_map is None else id_map.numel() * id_map.element_size(),
                   **{split: evaluate(runner, getattr(loaders, split)).metrics["accuracy"]
                      for split in ("val", "test")}}
            record["rows"].append(row)
            print(f"{name} {way} {keep}: val {row['val']:.4f} test {row['test']:.4f}", flush=True)
    _report.finish(record, args.run, _report.machine("all cores, accuracy only", load_before))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run: per student and cut, each way's accuracy and its change from the whole
    vocabulary; the embedding's int8 bytes (one byte per weight, plus the id map where the model maps ids)."""
    whole = {r["student"]: r for r in record["rows"] if r["keep_first"] is None}

    def points(row: dict[str, Any], split: str) -> str:
        return f"{100 * row[split]:.2f} ({100 * (row[split] - whole[row['student']][split]):+.2f})"

    rows = [[r["student"], "-" if r["keep_first"] is None else f"{r['keep_first']:,}", r["way"], f"{r['rows']:,}",
             f"{(r['rows'] * r['dim'] + r['map_bytes']) / 1e6:.2f}", points(r, "val"), points(r, "test")]
            for r in record["rows"]]
    return "\n".join([
        _report.heading(record), "",
        "CLINC150 (plus), torch fp32, raw queries, accuracy with \"oos\" as a class on the whole validation (3,100) "
        "and test (5,500) splits; in brackets the change from the whole vocabulary. A cut keeps the training "
        "queries' tokens and the tokenizer's first N ids; \"tokenizer\": the tokenizer rewritten to them (WordPiece "
        "re-splits a dropped word); \"prefix\" / \"nearest\": the tokenizer kept, a dropped token reading its longest "
        "kept prefix's row / the kept row nearest its own (cosine, original embedding).", "",
        _report.table(["student", "keep first", "dropped tokens read", "rows", "embedding MB (int8)",
                       "val acc %", "test acc %"], rows)])


if __name__ == "__main__":
    main()
