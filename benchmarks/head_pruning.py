"""Head + FFN pruning per transformer family: CleanAI's 50 % cut vs plain Torch-Pruning with `num_heads`.

Tiny random-weight models from each family's HF config (2 layers, hidden 32, 4 heads), and the same shape built
from `nn.TransformerEncoderLayer` (`nn.MultiheadAttention`, fed by a Linear embedding), both tools in one
run on copies of one model: params and MACs removed, whether every attention keeps whole heads (head size
unchanged, q/k/v widths = heads x head size) and the cosine similarity of the logits with the unpruned model.
Torch-Pruning runs twice: with the hidden size kept (embeddings ignored, prune_head_dims=False: the same work as
CleanAI's cut) and with its defaults, which also prune the hidden size and every head's dimensions.
Raw rows: benchmarks/results/head_pruning/<run>/rows.json; `python benchmarks/tables.py` renders the table.
Run: python benchmarks/head_pruning.py [--run latest]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import _report  # noqa: E402

from cleanai._batches import call_model, logits_of  # noqa: E402
from cleanai.models import tiny_transformer, tiny_transformer_inputs  # noqa: E402
from cleanai._hf import conv1d_to_linear  # noqa: E402
from cleanai.pruning import HeadLayout, PruneConfig, head_layout, prune  # noqa: E402
from cleanai.pruning.attention import find_attention  # noqa: E402

FAMILIES = {"BERT": "bert", "RoBERTa": "roberta", "DistilBERT": "distilbert", "ViT": "vit", "GPT-2": "gpt2",
            "MobileBERT": "mobilebert", "nn.MultiheadAttention": "mha"}


class MHAClassifier(nn.Module):
    """Linear embedding (16 -> 32) -> 2 nn.TransformerEncoderLayer (4 heads of 8, FFN 64) -> mean -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.classifier = nn.Linear(16, 32), nn.Linear(32, 2)
        self.layers = nn.Sequential(*(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True) for _ in range(2)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(self.embed(features)).mean(1))


def _build(key: str) -> tuple[nn.Module, dict]:
    if key == "mha":
        torch.manual_seed(0)
        return MHAClassifier().eval(), {"features": torch.randn(2, 8, 16)}
    return tiny_transformer(key), tiny_transformer_inputs(key)


def _logits(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(call_model(model.eval(), inputs))


def _heads_whole(model: nn.Module, before: dict[str, HeadLayout]) -> bool:
    """Every attention has whole heads of the original size: its q/k/v/out widths are heads x head size."""
    after = head_layout(model)
    return all(after[n].head_dim == layout.head_dim and after[n].whole for n, layout in before.items())


def _plain_tp(model: nn.Module, inputs: dict, attention: list, keep_hidden: bool) -> nn.Module:
    """Torch-Pruning's MetaPruner with num_heads on q/k/v, prune_num_heads, ratio 0.5 and head ratio 0.5;
    `keep_hidden`: also prune_head_dims=False and the embeddings ignored (the hidden size stays, as in CleanAI)."""
    num_heads = {lin: a.parts(m).heads for _, m, a in attention for lin, _ in a.parts(m).segments}
    num_heads.update({m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)})
    ignored = [m for n, m in model.named_modules() if n.split(".")[-1] in ("classifier", "score", "out_proj")
               and isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)]
    if keep_hidden:
        ignored += [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.Conv2d))]
    pruner = tp.pruner.MetaPruner(model, inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, num_heads=num_heads, prune_num_heads=True,
                                  prune_head_dims=not keep_hidden, head_pruning_ratio=0.5, ignored_layers=ignored,
                                  output_transform=logits_of)
    pruner.step()
    for _, m, a in attention:  # plain Torch-Pruning leaves the modules' head counts to the user
        segment = a.parts(m).segments[0][0]
        a.set_heads(m, pruner.num_heads.get(segment, a.parts(m).heads))
    return model


def _row(family: str, tool: str, model: nn.Module | None, base: tuple[int, int], inputs: dict, reference: torch.Tensor,
         before: dict, error: str | None = None) -> dict:
    if model is None:
        return {"family": family, "tool": tool, "error": error}
    out = _logits(model, inputs)
    model = copy.deepcopy(model)
    conv1d_to_linear(model)  # Torch-Pruning's counter skips HF Conv1D
    with contextlib.redirect_stdout(io.StringIO()):
        macs, params = tp.utils.count_ops_and_params(model, inputs)
    return {"family": family, "tool": tool, "params_before": base[1], "params_after": int(params),
            "macs_before": base[0], "macs_after": int(macs), "heads_whole": _heads_whole(model, before),
            "cosine": float(torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), dim=0)),
            "error": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="latest", help="name of the results folder")
    args = parser.parse_args()
    record = {**_report.provenance(args), "rows": []}
    rows = record["rows"]
    for family, key in FAMILIES.items():
        model, inputs = _build(key)
        reference = _logits(model, inputs)
        view = copy.deepcopy(model)
        conv1d_to_linear(view)
        before = head_layout(view)
        with contextlib.redirect_stdout(io.StringIO()):
            base = tuple(int(v) for v in tp.utils.count_ops_and_params(view, inputs))
        pruned, _ = prune(model, inputs, PruneConfig(ratio=0.5))
        rows.append(_row(family, "CleanAI", pruned, base, inputs, reference, before))
        for keep_hidden, tool in ((True, "Torch-Pruning, hidden kept"), (False, "Torch-Pruning, hidden pruned too")):
            plain = copy.deepcopy(view)  # Torch-Pruning needs Linears (HF Conv1D breaks its graph)
            if hasattr(plain, "config"):
                plain.config.use_cache = False
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    plain = _plain_tp(plain, inputs, list(find_attention(plain)), keep_hidden)
                _logits(plain, inputs)
                rows.append(_row(family, tool, plain, base, inputs, reference, before))
            except Exception as exc:  # noqa: BLE001 - a failure of the other tool is a result row
                rows.append(_row(family, tool, None, base, inputs, reference, before,
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"))
    _report.finish(record, args.run, _report.machine("default threads", packages=("torch-pruning", "transformers")))
    print(render(record))


def render(record: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run, from its record."""
    table = []
    for r in record["rows"]:
        if r["error"]:
            table.append([r["family"], r["tool"], "fails: " + r["error"], "", "", ""])
            continue
        table.append([r["family"], r["tool"], f"{1 - r['params_after'] / r['params_before']:.1%}",
                      f"{1 - r['macs_after'] / r['macs_before']:.1%}", "yes" if r["heads_whole"] else "NO",
                      f"{r['cosine']:.3f}"])
    return "\n".join([_report.heading(record), "", _report.table(
        ["family", "tool", "params removed", "MACs removed", "whole heads", "logit cosine vs unpruned"], table)])

if __name__ == "__main__":
    main()
