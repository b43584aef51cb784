"""How the Trainer shares one run between processes: `SingleProcess` (the default) or `DataParallel`.

`DataParallel` is torch's DistributedDataParallel under `torchrun --nproc_per_node N` (gloo on CPU,
nccl on GPU), set up from the environment torchrun gives each process (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT). An N-process run is the 1-process run split up, not a different run:

- the training loader's batch size is the global batch of one optimizer step; each process takes
  `batch_size / N` of it (so lr, steps per epoch and schedules mean the same for any N);
- the sample order is the loader's own (its seeded generator, checkpointed as in one process),
  drawn on every process and broadcast from rank 0, and rank r takes every N-th sample of each batch,
  padded by repetition to equal shares, as DistributedSampler does; a loader already holding a
  DistributedSampler is used as it is (the Trainer calls its `set_epoch` every epoch);
- evaluation splits the loader the same way without padding and sums the metrics' counts over the
  processes (correct / count of the whole split, never a mean of per-process means);
- BatchNorm statistics are per process (B/N samples) and rank 0's buffers are broadcast, as in torch DDP;
  dropout and augmentation draw from `seed + rank`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, Sampler

from cleanai.errors import ConfigError
from cleanai.metrics import Metric

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class SingleProcess:
    """One process holds the whole run: every step of the strategy is a no-op."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, logs and progress bars (rank 0)."""
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """The device this process trains on."""
        return requested

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training forward runs through."""
        return model

    def no_sync(self, net: nn.Module, skip: bool) -> contextlib.AbstractContextManager[Any]:
        """Around one batch's forward and backward: skip the gradient exchange (an accumulation step)."""
        return contextlib.nullcontext()

    def shard(self, loader: Iterable[Any], *, train: bool) -> Iterable[Any]:
        """This process's part of `loader` (`train`: padded to equal shares, batch divided by N)."""
        return loader

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """`tensor` summed (or maxed) over the processes."""
        return tensor

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm statistics), so all hold the same model."""

    def check_metrics(self, metrics: Sequence[Metric]) -> None:
        """Before a run: refuse metrics that cannot be combined over the processes."""

    def reduce_metrics(self, metrics: Sequence[Metric]) -> None:
        """After an evaluation: make every metric score the whole split, not this process's part."""

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every process, in rank order (a checkpoint keeps each process's RNG state)."""
        return [obj]


class DataParallel(SingleProcess):
    """DistributedDataParallel over the processes torchrun started; joins (or creates) the default process group."""

    def __init__(self, backend: str | None = None) -> None:
        if not dist.is_available():
            raise ConfigError("data-parallel training needs torch.distributed, which this torch build lacks")
        missing = [name for name in ENV_VARS if name not in os.environ]
        if not dist.is_initialized() and missing:
            raise ConfigError(f"DataParallel needs the environment torchrun sets ({', '.join(missing)} missing); "
                              "start the script with `torchrun --nproc_per_node N script.py` "
                              "(or `cleanai train --nproc N`)")
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.rank, self.world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self._backend = backend
        self._device = torch.device("cpu")
        self._shards: dict[int, tuple[Iterable[Any], DataLoader]] = {}
        if dist.is_initialized():
            self._init()

    def _init(self, device: torch.device | None = None) -> None:
        if not dist.is_initialized():
            backend = self._backend or ("nccl" if device is not None and device.type == "cuda" else "gloo")
            dist.init_process_group(backend=backend)
            atexit.register(_destroy)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def device(self, requested: torch.device) -> torch.device:
        if requested.type == "cuda":
            requested = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(requested)
        self._init(requested)
        self._device = requested
        return requested

    def wrap(self, model: nn.Module) -> nn.Module:
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError("data-parallel training needs a model with trainable parameters; this one has none")
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def no_sync(self, net: nn.Module, skip: bool) -> contextlib.AbstractContextManager[Any]:
        return net.no_sync() if skip else contextlib.nullcontext()  # type: ignore[operator]

    def shard(self, loader: Iterable[Any], *, train: bool) -> Iterable[Any]:
        cached = self._shards.get(id(loader))
        if cached is not None and cached[0] is loader:
            return cached[1]
        sharded = self._shard(loader, train)
        self._shards[id(loader)] = (loader, sharded)
        return sharded

    def _shard(self, loader: Iterable[Any], train: bool) -> DataLoader:
        what = "train" if train else "evaluation"
        if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
            raise ConfigError(f"data-parallel training splits the {what} data between {self.world_size} processes, "
                              f"so it must be a torch DataLoader over a map-style dataset; got "
                              f"{type(loader).__name__}{' over an IterableDataset' if isinstance(loader, DataLoader) else ''}")
        if isinstance(loader.sampler, DistributedSampler):
            if loader.sampler.num_replicas != self.world_size or loader.sampler.rank != self.rank:
                raise ConfigError(f"the {what} loader's DistributedSampler has num_replicas="
                                  f"{loader.sampler.num_replicas}, rank={loader.sampler.rank}, but this process is "
                                  f"rank {self.rank} of {self.world_size}; build it without num_replicas/rank")
            return loader
        if loader.batch_size is None:
            raise ConfigError(f"the {what} loader uses a custom batch_sampler, which cannot be split between "
                              f"processes; give it batch_size and a sampler, or a DistributedSampler")
        batch = loader.batch_size
        if train:
            if batch % self.world_size:
                raise ConfigError(f"the train loader's batch_size {batch} is the global batch of one step and must "
                                  f"divide evenly among {self.world_size} processes; use a multiple of "
                                  f"{self.world_size}")
            batch //= self.world_size
        sampler = ShardedSampler(loader.sampler, self.rank, self.world_size, pad=train)
        extra = ({"prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers}
                 if loader.num_workers else {})
        return DataLoader(loader.dataset, batch_size=batch, sampler=sampler, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                          drop_last=loader.drop_last, timeout=loader.timeout,
                          worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
                          generator=loader.generator, **extra)

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        out = tensor.detach().to(self._device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return out

    def sync_buffers(self, model: nn.Module) -> None:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def check_metrics(self, metrics: Sequence[Metric]) -> None:
        for metric in metrics:
            if not metric.counts and type(metric).reduce is Metric.reduce:
                metric.reduce(self.all_reduce)  # raises, naming the metric and what it lacks

    def reduce_metrics(self, metrics: Sequence[Metric]) -> None:
        for metric in metrics:
            metric.reduce(self.all_reduce)

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


class ShardedSampler(Sampler[int]):
    """Rank `rank`'s share of the order `sampler` gives: every `world_size`-th index, so each global batch of
    B samples is split into N rank batches of B/N. The order is drawn on every process (their generators stay
    in step) and rank 0's is broadcast; `pad` repeats the first indices so every share has the same length."""

    def __init__(self, sampler: Sampler[int] | Iterable[int], rank: int, world_size: int, *, pad: bool) -> None:
        self.sampler, self.rank, self.world_size, self.pad = sampler, rank, world_size, pad

    @property
    def generator(self) -> torch.Generator | None:
        """The inner sampler's generator (a checkpoint keeps its state)."""
        return getattr(self.sampler, "generator", None)

    def _total(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return -(-n // self.world_size) * self.world_size if self.pad else n

    def __len__(self) -> int:
        return len(range(self.rank, self._total(), self.world_size))

    def __iter__(self) -> Iterator[int]:
        order = torch.tensor(list(self.sampler), dtype=torch.int64)
        if dist.is_initialized():  # the same order everywhere, even if the processes' generators were not seeded alike
            dist.broadcast(order, src=0)
        total = self._total()
        if len(order) and len(order) < total:
            order = order.repeat(-(-total // len(order)))[:total]
        return iter(order[self.rank::self.world_size].tolist())


def from_env(backend: str | None = None) -> SingleProcess:
    """`DataParallel` when torchrun started this process with WORLD_SIZE > 1 (or a process group of several
    processes exists already), else `SingleProcess`."""
    size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))
    return DataParallel(backend) if size > 1 else SingleProcess()


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
