"""Per-channel activation statistics gathered with forward hooks, in O(channels) memory.

`ActivationRecorder` hooks chosen module types (Conv and Linear by default) and keeps, for each
layer's output and/or input, running per-channel sums only: sum, sum |x|, sum x², the count of
values above a threshold, the max, and the number of values seen per channel. Whole activations
are never stored. A layer's *input* is where activations act: for a convolution it is the output
of the preceding BatchNorm and non-linearity, the tensor the layer really consumes; its squared
L2 norm per input channel is also what WANDA needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn

from cleanai._batches import Batch, call_model, model_device, split_batch, to_device
from cleanai.errors import ConfigError

POSITIONS = ("input", "output")
# Module types whose tensors carry channels on dim 1; everything else (Linear, LayerNorm, ...) on the last dim.
_CHANNEL_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                  nn.modules.instancenorm._InstanceNorm)


@dataclass
class ChannelStats:
    """Running per-channel sums of one tensor position (float64, length = number of channels).

    `count` is the number of values seen per channel (samples x positions).
    """

    sum: torch.Tensor
    abs_sum: torch.Tensor
    sq_sum: torch.Tensor
    above: torch.Tensor
    max: torch.Tensor
    count: int = 0

    @classmethod
    def empty(cls, channels: int) -> ChannelStats:
        zeros = torch.zeros(channels, dtype=torch.float64)
        return cls(zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone(),
                   torch.full((channels,), -torch.inf, dtype=torch.float64), 0)

    @property
    def channels(self) -> int:
        return int(self.sum.numel())

    def update(self, values: torch.Tensor, threshold: float, channel_dim: int = -1) -> None:
        """Add a batch of activations whose channels lie on `channel_dim` (reduced in place, no reshaped copy)."""
        v = values.detach() if values.dim() > 1 else values.detach().unsqueeze(0)  # unbatched (C,)
        dims = tuple(d for d in range(v.dim()) if d != channel_dim % v.dim())
        self.sum += v.sum(dims, dtype=torch.float64).cpu()
        self.abs_sum += v.abs().sum(dims, dtype=torch.float64).cpu()
        self.sq_sum += v.square().sum(dims, dtype=torch.float64).cpu()
        self.above += (v > threshold).sum(dims).cpu()
        self.max = torch.maximum(self.max, v.amax(dims).cpu().double())
        self.count += v.numel() // max(v.shape[channel_dim], 1)

    def drop(self, idxs: Sequence[int]) -> ChannelStats:
        """The statistics of the channels that remain after removing `idxs` (follows structural pruning)."""
        keep = torch.ones(self.channels, dtype=torch.bool)
        keep[torch.as_tensor(list(idxs), dtype=torch.long)] = False
        return ChannelStats(self.sum[keep], self.abs_sum[keep], self.sq_sum[keep], self.above[keep],
                            self.max[keep], self.count)

    # Derived per-channel statistics (each a float64 vector).
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    def mean_abs(self) -> torch.Tensor:
        return self.abs_sum / max(self.count, 1)

    def frequency(self) -> torch.Tensor:
        """Share of this channel's values (over samples and positions) above the recorder's threshold."""
        return self.above / max(self.count, 1)

    def l2(self) -> torch.Tensor:
        """L2 norm of each channel over every value seen (WANDA's ‖X_j‖₂)."""
        return self.sq_sum.sqrt()

    def normalized_mean(self) -> torch.Tensor:
        """Mean of each channel divided by the layer's largest activation (its global max)."""
        peak = float(self.max.max()) if self.channels else 0.0
        return self.mean() / peak if peak > 0 else torch.zeros_like(self.sum)


def channel_dim(module: nn.Module, tensor: torch.Tensor) -> int:
    """Dimension holding the channels: 1 for (N,C,*spatial) tensors of convolutions/norms, else the last one."""
    return 1 if tensor.dim() >= 3 and isinstance(module, _CHANNEL_FIRST) else -1


class ActivationRecorder:
    """Context manager that records per-channel statistics of the inputs and/or outputs of chosen layers.

    ```python
    with ActivationRecorder(model, where=("input",)) as rec:
        rec.run(batches)              # or call the model yourself
    rec.inputs["layer1.0.conv2"].l2()
    ```
    `max_batches` bounds the pass: after that many calls of `model`, the hooks stop recording.
    Hooks are removed when the block ends, also on error.
    """

    def __init__(self, model: nn.Module, module_types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear),
                 threshold: float = 0.0, max_batches: int | None = None,
                 where: Sequence[str] | str = POSITIONS) -> None:
        where = (where,) if isinstance(where, str) else tuple(where)
        bad = [w for w in where if w not in POSITIONS]
        if bad or not where:
            raise ConfigError(f"ActivationRecorder: where must name positions among {POSITIONS}, got {where!r}")
        if max_batches is not None and max_batches < 1:
            raise ConfigError(f"ActivationRecorder: max_batches must be a positive integer or None, got {max_batches!r}")
        self.model = model
        self.module_types = tuple(module_types)
        self.threshold = float(threshold)
        self.max_batches = max_batches
        self.where = where
        self.inputs: dict[str, ChannelStats] = {}
        self.outputs: dict[str, ChannelStats] = {}
        self.batches = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def recording(self) -> bool:
        return self.max_batches is None or self.batches <= self.max_batches

    def __enter__(self) -> ActivationRecorder:
        self._handles.append(self.model.register_forward_pre_hook(self._count_batch))
        for name, module in self.model.named_modules():
            if isinstance(module, self.module_types):
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _count_batch(self, module: nn.Module, args: Any) -> None:
        self.batches += 1

    def _make_hook(self, name: str):  # noqa: ANN202 - a torch hook
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not self.recording:
                return
            if "input" in self.where and args and isinstance(args[0], torch.Tensor):
                self._add(self.inputs, name, module, args[0])
            out = output[0] if isinstance(output, (tuple, list)) else output
            if "output" in self.where and isinstance(out, torch.Tensor):
                self._add(self.outputs, name, module, out)
        return hook

    def _add(self, table: dict[str, ChannelStats], name: str, module: nn.Module, tensor: torch.Tensor) -> None:
        if not tensor.is_floating_point():
            return
        dim = channel_dim(module, tensor)
        stats = table.get(name)
        if stats is None or stats.channels != tensor.shape[dim]:
            stats = table[name] = ChannelStats.empty(tensor.shape[dim])
        stats.update(tensor, self.threshold, dim)

    @torch.no_grad()
    def run(self, batches: Iterable[Batch]) -> ActivationRecorder:
        """Forward `batches` through the model in eval mode (restoring its mode after), up to `max_batches`."""
        was_training = self.model.training
        device = model_device(self.model)
        self.model.eval()
        try:
            for batch in batches:
                if self.max_batches is not None and self.batches >= self.max_batches:
                    break
                inputs, _ = split_batch(batch)
                call_model(self.model, to_device(inputs, device))
        finally:
            self.model.train(was_training)
        return self
