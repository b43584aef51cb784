"""Movement pruning of Linear layers (Sanh, Wolf & Rush, "Movement Pruning", NeurIPS 2020).

Magnitude pruning keeps the weights that are large; during fine-tuning, what matters more is which weights the
task pushes away from zero. Each pruned `nn.Linear` becomes a `MovementLinear` with a learned score S per
weight, and its forward uses W ⊙ M where M = TopK(S) keeps the `round(n * (1 - sparsity))` highest-scored
weights of the layer. The top-k mask passes gradients straight through, so dL/dS = dL/dW' ⊙ W: scores grow
for weights moving away from zero and shrink for weights moving toward it.

    pruner = MovementPruner(model, MovementConfig(sparsity=0.9, schedule=PolynomialDecay(
        begin_step=warmup, end_step=total - cooldown, frequency=1)))   # the paper's cubic schedule
    Trainer(model, callbacks=[pruner], ...).fit(train_loader)
    make_permanent(model)                                                # plain nn.Linear with zeros

`MovementPruner` replaces the layers in place when it is built, so build it before the Trainer (or the
optimizer): the scores are parameters that the optimizer must update. Scores start at zero and only their
ranking within a layer matters, so they can share the weights' optimizer and learning rate (the paper used a
separate, larger rate; with Adam and no weight decay on the scores the ranking does not depend on it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from cleanai.errors import CleanAIError
from cleanai.pruning.schedules import Schedule, check_sparsity
from cleanai.pruning.unstructured import keep_count, select_layers, top_k_mask
from cleanai.training.callbacks import Callback


class _StraightThrough(torch.autograd.Function):
    """Forward: the precomputed binary mask. Backward: the incoming gradient, unchanged, to the scores."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class MovementLinear(nn.Linear):
    """`nn.Linear` whose forward uses `weight * TopK(scores)` at `self.sparsity` (a float in [0, 1)).

    The binary mask is cached until the scores or the sparsity change (tracked by the scores' version
    counter, which optimizer steps and `load_state_dict` bump), so evaluation costs one multiply per call.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.scores = nn.Parameter(torch.zeros_like(self.weight))
        self.sparsity = 0.0
        self._cache: tuple[tuple[int, int, float], torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> MovementLinear:
        """Wrap `linear`, sharing its weight and bias Parameters; scores start at zero (nothing pruned)."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.scores = nn.Parameter(torch.zeros_like(linear.weight, memory_format=torch.contiguous_format))
        layer.train(linear.training)
        return layer

    def hard_mask(self) -> torch.Tensor:
        """The 0/1 mask (weight dtype) keeping the top-scored weights at the current sparsity; no gradient."""
        key = (self.scores._version, self.scores.data_ptr(), self.sparsity)
        if self._cache is None or self._cache[0] != key:
            keep = top_k_mask(self.scores, keep_count(self.scores.numel(), self.sparsity))
            self._cache = (key, keep.to(self.weight.dtype))
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.hard_mask()
        if torch.is_grad_enabled() and self.scores.requires_grad:
            mask = _StraightThrough.apply(self.scores, mask)
        return F.linear(x, self.weight * mask, self.bias)

    @torch.no_grad()
    def masked_weight(self) -> torch.Tensor:
        """The weight the forward uses (pruned entries zero)."""
        return self.weight * self.hard_mask()

    def to_plain(self) -> nn.Linear:
        """A plain `nn.Linear` holding the masked weight (and the same bias Parameter); scores are dropped."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = nn.Parameter(self.masked_weight(), requires_grad=self.weight.requires_grad)
        linear.bias = self.bias
        return linear.train(self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sparsity={self.sparsity:.4g}"


class MovementConfig(BaseModel):
    """Movement pruning settings: the final `sparsity` of every pruned Linear layer, the `schedule` that reaches
    it (the paper: `PolynomialDecay(begin_step=<warm-up>, end_step=<total - cool-down>, power=3, frequency=1)`),
    and `ignored_layers` (module names; a container excludes every Linear inside it, e.g. a classifier head)."""

    model_config = ConfigDict(extra="forbid")

    sparsity: float
    schedule: Schedule
    ignored_layers: list[str] = Field(default_factory=list)

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, value: float) -> float:
        return check_sparsity(value)


class MovementPruner(Callback):
    """Replaces the model's `nn.Linear` layers by `MovementLinear` (in place) and, as a Trainer callback, sets
    their sparsity on the schedule's steps. In a custom loop, call `update(step)` after each optimizer step.

    Only layers of exactly type `nn.Linear` are wrapped: subclasses such as `nn.MultiheadAttention`'s output
    projection are used by their owners without calling `forward`, so a mask there would not act.
    `updates` lists `(step, sparsity)` for every change.
    """

    def __init__(self, model: nn.Module, config: MovementConfig | Mapping[str, Any]) -> None:
        self.config = config if isinstance(config, MovementConfig) else MovementConfig.model_validate(config)
        if isinstance(model, nn.Linear):
            raise CleanAIError("MovementPruner wraps the Linear layers inside a model and cannot replace the model "
                               "object itself; wrap the layer in a container (nn.Sequential(layer))")
        self.layers: dict[str, MovementLinear] = {}
        for name, linear in select_layers(model, ["linear"], self.config.ignored_layers, exact=True).items():
            parent, _, child = name.rpartition(".")
            layer = MovementLinear.from_linear(linear)  # type: ignore[arg-type]
            setattr(model.get_submodule(parent), child, layer)
            self.layers[name] = layer
        self.sparsity = 0.0
        self.updates: list[tuple[int, float]] = []
        self._step: int | None = None

    def scores(self) -> list[nn.Parameter]:
        return [layer.scores for layer in self.layers.values()]

    def update(self, step: int) -> bool:
        """After `step` optimizer steps: set the scheduled sparsity if this is an update step; return whether it was."""
        self._step = step
        schedule = self.config.schedule
        if not schedule.should_update(step):
            return False
        self._set_sparsity(schedule.sparsity_at(step, self.config.sparsity))
        self.updates.append((step, self.sparsity))
        return True

    def _set_sparsity(self, sparsity: float) -> None:
        self.sparsity = sparsity
        for layer in self.layers.values():
            layer.sparsity = sparsity

    def on_train_begin(self, trainer: Any) -> None:
        optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        missing = [name for name, layer in self.layers.items() if id(layer.scores) not in optimized]
        if missing:
            raise CleanAIError(f"the optimizer does not update the movement scores of {missing[:5]}"
                               f"{' ...' if len(missing) > 5 else ''}: build MovementPruner(model, ...) before the "
                               "optimizer (or give the Trainer the optimizer by name)")
        if trainer.global_step != self._step:  # after a resume, the restored state already covers this step
            self.update(trainer.global_step)

    def on_batch_end(self, trainer: Any, batch: int, loss: float) -> None:
        if trainer.global_step != self._step:
            self.update(trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "step": self._step, "updates": [list(u) for u in self.updates]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_sparsity(float(state["sparsity"]))
        self._step = state["step"]
        self.updates = [(int(s), float(v)) for s, v in state["updates"]]
