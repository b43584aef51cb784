"""Does an ONNX Runtime artifact's CLINC150 accuracy depend on the batch it is read in?

Dynamic int8 (`QuantConfig(mode="dynamic")`) picks each activation's scale from the tensor it quantizes, which holds
every query of the batch (and its padding): a query's logits can change with its neighbours. Each artifact
(`--artifact NAME=MODEL.onnx`, all reading the tokenizer of `--tokenizer`) is scored on the whole validation and
test splits (accuracy with "oos" as a class, in split order, padded to the longest query of each batch, at most 64
tokens) at each of `--batch-sizes`; an fp32 artifact is the control. Accuracy only, one ORT thread.

Writes its raw rows to benchmarks/results/batch_readings/<--run>/rows.json and prints the table of BENCHMARKS.md.
Usage: python benchmarks/batch_readings.py --artifact NAME=MODEL.onnx ... [--tokenizer DIR]
       [--batch-sizes 1 32 64 128] [--run NAME]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer

from cleanai.data import default_cache_dir, load_dataset, texts_of
from cleanai.export import create_session

import _report  # benchmarks/_report.py: scripts run from this folder

MAX_LENGTH = 64  # as benchmarks/clinc150.py and benchmarks/optimize.py read raw queries


def accuracy(session: Any, tokenizer: Any, texts: list[str], labels: np.ndarray, batch_size: int) -> float:
    names = [i.name for i in session.get_inputs()]
    predictions = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=MAX_LENGTH,
                            return_tensors="np")
        logits = session.run(None, {n: encoded[n].astype(np.int64) for n in names})[0]
        predictions.append(logits.argmax(-1))
    return float((np.concatenate(predictions) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", action="append", required=True, metavar="NAME=MODEL.onnx")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="the tokenizer every artifact reads (default: the CLINC150 teacher cached by "
                             "benchmarks/clinc150.py)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 64, 128])
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    folder = args.tokenizer or next(iter(sorted((default_cache_dir() / "clinc150").glob("teacher-*/model"))), None)
    if folder is None:
        raise SystemExit("no tokenizer: pass --tokenizer DIR, or run benchmarks/clinc150.py first")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    splits = load_dataset("clinc150", config="plus")
    data = {split: (texts_of(getattr(splits, split)),
                    np.array([getattr(splits, split)[i][1] for i in range(len(getattr(splits, split)))]))
            for split in ("val", "test")}
    record = {**_report.provenance(args), "tokenizer": str(folder), "rows": []}
    for pair in args.artifact:
        name, _, path = pair.partition("=")
        if not Path(path).is_file():
            raise SystemExit(f"--artifact {pair!r}: {path} is not a file; give NAME=MODEL.onnx")
        session = create_session(path, threads=1)
        for batch in args.batch_sizes:
            row = {"artifact": name, "path": path, "batch_size": batch,
                   **{split: accuracy(session, tokenizer, *data[split], batch) for split in data}}
            record["rows"].append(row)
            print(f"{name} batch {batch}: val {row['val']:.4f} test {row['test']:.4f}", flush=True)
    _report.finish(record, args.run, _report.machine("1 ORT thread, accuracy only", load_before))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run: per artifact, its accuracy at each batch size and the spread."""
    sizes = record["args"]["batch_sizes"]
    by_name: dict[str, dict[int, dict[str, Any]]] = {}
    for row in record["rows"]:
        by_name.setdefault(row["artifact"], {})[row["batch_size"]] = row
    rows = [[name, *(f"{100 * reads[b]['val']:.2f} / {100 * reads[b]['test']:.2f}" for b in sizes),
             " / ".join(f"{100 * (max(r[s] for r in reads.values()) - min(r[s] for r in reads.values())):.2f}"
                        for s in ("val", "test"))]
            for name, reads in by_name.items()]
    return "\n".join([
        _report.heading(record), "",
        "CLINC150 (plus), validation (3,100) / test (5,500) accuracy % with \"oos\" as a class, each split read in "
        "order in batches of the size named, padded to the longest query of each batch; spread: highest less "
        "lowest, in points.", "",
        _report.table(["artifact", *(f"batch {b}" for b in sizes), "spread val / test"], rows)])


if __name__ == "__main__":
    main()
