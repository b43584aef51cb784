"""Does an ONNX Runtime artifact's CLINC150 accuracy depend on the batch it is read in?

Dynamic int8 (`QuantConfig(mode="dynamic")`) picks each activation's scale from the tensor it quantizes, which holds
every query of the batch (and its padding): a query's logits can change with its neighbours. Each artifact
(`--artifact NAME=MODEL.onnx`, all reading the tokenizer of `--tokenizer`; `--hand-built RUN`: the final artifact
of a benchmarks/clinc150.py run, rebuilt as benchmarks/optimize.py rebuilds it, with its own tokenizer, and its
student cut with nearest rows) is scored
on the whole validation and test splits at each of `--batch-sizes`, as benchmarks/optimize.py reads its rows (raw
queries in split order, padded to the longest query of each batch, at most 64 tokens; accuracy with "oos" as a
class); an fp32 artifact is the control. Accuracy only, one ORT thread.

Writes its raw rows to benchmarks/results/batch_readings/<--run>/rows.json and prints the table of BENCHMARKS.md.
Usage: python benchmarks/batch_readings.py --artifact NAME=MODEL.onnx ... [--tokenizer DIR]
       [--hand-built book_4layers_s27] [--batch-sizes 1 32 64 128] [--run NAME]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from cleanai.data import default_cache_dir, load_dataset, texts_of
from cleanai.runtime import OrtRunner, TextClassifierRunner, evaluate

import _report  # benchmarks/_report.py: scripts run from this folder
import clinc150  # its query length and cached teacher
import optimize  # the hand-built artifact, rebuilt as its CLINC150 rows rebuild it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", action="append", default=[], metavar="NAME=MODEL.onnx")
    parser.add_argument("--hand-built", default=None, metavar="RUN",
                        help="also the final artifact of this benchmarks/clinc150.py run (same teacher)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="the tokenizer every artifact reads (default: the CLINC150 teacher cached by "
                             "benchmarks/clinc150.py)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 64, 128])
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    folder = args.tokenizer or clinc150.cached_teacher()
    if folder is None:
        raise SystemExit("no tokenizer: pass --tokenizer DIR, or run benchmarks/clinc150.py first")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    splits = load_dataset("clinc150", config="plus")
    oos = splits.label_names.index("oos")
    runners = {}
    for pair in args.artifact:
        name, _, path = pair.partition("=")
        if not Path(path).is_file():
            raise SystemExit(f"--artifact {pair!r}: {path} is not a file; give NAME=MODEL.onnx")
        runners[name] = TextClassifierRunner(tokenizer, OrtRunner(path, name=name, threads=1), clinc150.MAX_LENGTH,
                                             oos_index=oos)
    if args.hand_built:
        built = optimize.hand_built_final(args.hand_built, texts_of(splits.train), oos,
                                          default_cache_dir() / "batch_readings" / args.run, "nearest")
        for runner in built.values():
            runner.set_threads(1)
        runners.update(built)
    if not runners:
        raise SystemExit("nothing to read: give --artifact NAME=MODEL.onnx or --hand-built RUN")
    record = {**_report.provenance(args), "tokenizer": str(folder), "rows": []}
    for batch in args.batch_sizes:
        loaders = splits.loaders(batch_size=batch, eval_batch_size=batch)
        for name, runner in runners.items():
            row = {"artifact": name, "batch_size": batch, **{split: evaluate(runner, getattr(loaders, split))
                                                              .metrics["accuracy"] for split in ("val", "test")}}
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
