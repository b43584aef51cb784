"""Data-parallel training: two real processes on CPU (gloo over loopback) against one process, resume, bad input."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, TensorDataset

from cleanai.errors import ConfigError
from cleanai.metrics import Metric
from cleanai.training import Callback, TrainConfig, Trainer, load_checkpoint
from cleanai.training import trainer as trainer_module
from cleanai.training.distributed import DataParallel, ShardedSampler
from .conftest import make_blobs

WORLD = 2
BATCH = 16  # the global batch of one step: 8 samples per process when two processes share it


def mlp(dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


def train_loader() -> DataLoader:
    return DataLoader(make_blobs(96), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(7))


def relabelled(n: int = 65) -> DataLoader:
    """Blobs with shuffled labels: accuracy well below 1, so a mean of per-process means would differ from
    the split's correct / count (65 samples: the processes get 33 and 32)."""
    x, y = make_blobs(n, seed=1).tensors
    return DataLoader(TensorDataset(x, y[torch.randperm(n, generator=torch.Generator().manual_seed(3))]), batch_size=10)


def config(**kw: Any) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "optimizer": "sgd", "lr": 0.1, "optimizer_kwargs": {"momentum": 0.9},
                          "metrics": ["accuracy", "macro_f1"], "progress": False, "device": "cpu", **kw})


def run_processes(fn: Callable[..., None], tmp_path: Path, *args: Any) -> list[dict[str, Any]]:
    """Run `fn(rank, tmp_path, *args)` in WORLD spawned processes with the environment torchrun would give them;
    return what each saved to tmp_path/rank<r>.pt."""
    root = str(Path(__file__).parents[__name__.count(".")])  # so the spawned processes import this module by its name
    if root not in sys.path:
        sys.path.insert(0, root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.start_processes(_worker, args=(port, fn, tmp_path, *args), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError("the processes did not finish within 300 s (a collective left waiting?)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _worker(rank: int, port: int, fn: Callable[..., None], tmp_path: Path, *args: Any) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    result = fn(rank, tmp_path, *args)
    torch.save(result, tmp_path / f"rank{rank}.pt")


def _fit_and_evaluate(rank: int, tmp_path: Path) -> dict[str, Any]:
    trainer = Trainer(mlp(seed=rank), config=config(seed=0))  # different initial weights: DDP starts from rank 0's
    assert isinstance(trainer.distributed, DataParallel) and trainer.distributed.rank == rank
    history = trainer.fit(train_loader(), relabelled())
    return {"state": trainer.model.state_dict(), "records": history.records, "test": trainer.evaluate(relabelled()),
            "steps": trainer.global_step}


def test_two_processes_train_the_model_one_process_trains(tmp_path) -> None:
    """Global batch 16 (8 per process), the same shuffled order: the 2-process run equals the 1-process run up to
    float rounding of the gradient mean (a mean of two half-batch means summed by gloo instead of one mean):
    weights within 1e-5 (the difference measured here is ~1e-7), losses within 1e-5 relative (2.3e-6 measured on an
    Intel Xeon with AMX, on a last-epoch training loss of 1.5e-3), and the same predictions, so accuracy and macro
    F1, summed over the processes' unequal shares, are equal."""
    single = Trainer(mlp(seed=0), config=config(seed=0))
    single_history = single.fit(train_loader(), relabelled())
    single_test = single.evaluate(relabelled())
    ranks = run_processes(_fit_and_evaluate, tmp_path)

    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name])  # every process holds the same model
        torch.testing.assert_close(value, single.model.state_dict()[name], rtol=0, atol=1e-5)
    assert ranks[0]["steps"] == single.global_step == 3 * 96 // BATCH
    for record, expected in zip(ranks[0]["records"], single_history.records, strict=True):
        assert record["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
        assert record["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-5)
        assert (record["val_accuracy"], record["val_macro_f1"]) == (expected["val_accuracy"], expected["val_macro_f1"])
    assert ranks[0]["test"]["accuracy"] == ranks[1]["test"]["accuracy"] == single_test["accuracy"]
    assert 0.2 < single_test["accuracy"] < 0.6  # shuffled labels: the count-sum is what the assertions above test
    assert ranks[0]["test"]["macro_f1"] == single_test["macro_f1"]


class StopOnRankZero(Callback):
    """Stops after `epoch` on rank 0 only: every process must stop with it (or the others would wait forever)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        trainer.stop_training = trainer.distributed.rank == 0 and epoch == self.epoch


def _resume(rank: int, tmp_path: Path) -> dict[str, Any]:
    writes = []
    real_save = trainer_module.save_checkpoint
    trainer_module.save_checkpoint = lambda path, state: writes.append(path) or real_save(path, state)

    def run(folder: str, seed: int, stop: int = 0, resume: bool = False) -> Trainer:
        cfg = config(epochs=4, seed=0, scheduler="warmup_cosine", scheduler_kwargs={"warmup_steps": 3},
                     checkpoint_dir=tmp_path / folder, resume=resume)
        trainer = Trainer(mlp(dropout=0.3, seed=seed), config=cfg, callbacks=[StopOnRankZero(stop)])
        trainer.fit(train_loader(), relabelled())
        return trainer

    straight = run("straight", 0)
    first = run("split", 0, stop=2)
    resumed = run("split", 99, resume=True)
    return {"straight": straight.model.state_dict(), "resumed": resumed.model.state_dict(),
            "records": (straight.history.records, first.history.records, resumed.history.records),
            "writes": len(writes)}


def test_a_two_process_run_resumes_from_its_checkpoint_bit_for_bit(tmp_path) -> None:
    """2 epochs, stop, resume to 4 (dropout, a per-step schedule) equals 4 straight epochs exactly; only rank 0
    writes checkpoints, which keep both processes' RNG states; a 1-process resume of it continues with a warning."""
    ranks = run_processes(_resume, tmp_path)
    straight, first, resumed = ranks[0]["records"]
    drop = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert len(first) == 2 and drop(resumed) == drop(straight) and len(straight) == 4
    for rank in ranks:
        for name, value in rank["straight"].items():
            assert torch.equal(value, rank["resumed"][name])
    assert [r["writes"] for r in ranks] == [4 + 2 + 2, 0]
    saved = load_checkpoint(tmp_path / "split" / "last.pt")
    assert saved["epoch"] == 4 and len(saved["rank_rng"]) == WORLD
    assert not torch.equal(saved["rank_rng"][0]["torch"], saved["rank_rng"][1]["torch"])  # seed + rank

    one = Trainer(mlp(dropout=0.3), config=config(epochs=5, scheduler="warmup_cosine",
                                                  scheduler_kwargs={"warmup_steps": 3},
                                                  resume=tmp_path / "split" / "last.pt"),
                  callbacks=[StopOnRankZero(0)])
    with pytest.warns(UserWarning, match="saved by 2 process"):
        assert len(one.fit(train_loader(), relabelled())) == 5


def test_shards_split_every_global_batch_between_the_processes() -> None:
    """Rank r takes every N-th index of the loader's order: the rank batches of step j make up global batch j;
    training shares are padded to equal length, evaluation shares are not."""
    order = list(RandomSampler(range(10), generator=torch.Generator().manual_seed(0)))
    shares = [list(ShardedSampler(order, r, 2, pad=True)) for r in range(2)]
    assert [len(s) for s in shares] == [5, 5]
    for j in range(0, 5, 2):  # global batch 4 -> rank batches of 2
        assert sorted(shares[0][j:j + 2] + shares[1][j:j + 2]) == sorted(order[2 * j:2 * j + 4])
    padded = [list(ShardedSampler(order[:7], r, 4, pad=True)) for r in range(4)]
    assert [len(s) for s in padded] == [2] * 4 and sorted(sum(padded, [])) == sorted(order[:7] + order[:1])
    unpadded = [list(ShardedSampler(order[:7], r, 4, pad=False)) for r in range(4)]
    assert sorted(sum(unpadded, [])) == sorted(order[:7]) and [len(s) for s in unpadded] == [2, 2, 2, 1]


@pytest.fixture
def as_rank_one_of_two(monkeypatch) -> DataParallel:
    """The strategy as torchrun's second process sees it (no process group is needed before the first collective)."""
    for name, value in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(name, value)
    return DataParallel()


class NoCounts(Metric):
    name = "mine"


@pytest.mark.parametrize(("loader", "message"), [
    (DataLoader(make_blobs(32), batch_size=15), r"batch_size 15 is the global batch .* multiple of 2"),
    ([(torch.zeros(2, 4), torch.zeros(2))], r"must be a torch DataLoader .* got list"),
    (DataLoader(make_blobs(32), batch_sampler=BatchSampler(range(32), 4, False)), "custom batch_sampler"),
    (DataLoader(make_blobs(32), batch_size=4, sampler=DistributedSampler(make_blobs(32), num_replicas=3, rank=0)),
     r"num_replicas=3, rank=0, but this process is rank 1 of 2"),
])
def test_data_that_cannot_be_split_is_refused_with_what_would_work(as_rank_one_of_two, loader, message) -> None:
    with pytest.raises(ConfigError, match=message):
        as_rank_one_of_two.shard(loader, train=True)


def test_a_metric_without_additive_counts_is_refused_before_training(as_rank_one_of_two) -> None:
    with pytest.raises(ConfigError, match=r"metric 'mine' \(NoCounts\) cannot be combined across processes"):
        as_rank_one_of_two.check_metrics([NoCounts()])


def test_data_parallel_outside_torchrun_names_the_missing_environment(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing.*torchrun"):
        DataParallel()
