"""Run a function in N gloo processes on the CPU (spawned, so it works under pytest)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a process left alone in a collective fails the test after 5 minutes instead of hanging CI
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(minutes=5))
    try:
        results[rank] = fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_ddp(fn: Callable, world_size: int = 2, *args) -> list:
    """fn(rank, world_size, *args) in each process; returns the per-rank results."""
    manager = mp.get_context("spawn").Manager()
    results = manager.dict()
    mp.start_processes(
        _worker, args=(world_size, _free_port(), fn, args, results), nprocs=world_size, start_method="spawn"
    )
    return [results[r] for r in range(world_size)]


def sinkhorn_shard(rank: int, world_size: int, scores, eps: float, iters: int):
    from pretrain.sinkhorn import sinkhorn

    shard = scores.chunk(world_size)[rank]
    return sinkhorn(shard, eps, iters)


def run_protocols(rank: int, world_size: int, cases: list) -> list:
    """Each (protocol, config, checkpoint, out_dir) of ``cases`` run by the registry's run function in this
    process of the group; returns the record of each."""
    import torch

    from swavbench.core import registry

    torch.set_num_threads(1)  # two processes share the two cores
    return [registry.get(name).runner()(cfg, ckpt, out) for name, cfg, ckpt, out in cases]


def train_supervised_in_group(rank: int, world_size: int, cfg, out: str) -> str:
    """The supervised baseline trained by the processes of the group."""
    import torch

    from pretrain.supervised import train_supervised

    torch.set_num_threads(1)
    return str(train_supervised(cfg, out, progress=False))


def detection_in_group(rank: int, world_size: int, cases: list) -> list:
    """Each (config, out_dir) of ``cases`` fine-tuned and evaluated by the group; returns (metrics, the
    process' trained weights of the torchvision backend or None)."""
    import torch

    from transfer.detection import run_detection

    torch.set_num_threads(1)
    return [run_detection(cfg, "random", out).metrics for cfg, out in cases]


def pretrain_losing_data(rank: int, world_size: int, overrides: list, out: str, lose_after: int) -> tuple:
    """SwAV pretraining in the group where only process 1's reads fail (EIO) after ``lose_after`` images, as
    when one node loses its network filesystem; returns (how it ended, message, images seen)."""
    import errno

    import torch

    from pretrain.config import load_config
    from pretrain.train import DataVanished, Trainer

    torch.set_num_threads(1)
    tr = Trainer(load_config("tiny", overrides), out, progress=False)
    read, calls = tr.dataset._read, [0]

    def failing_read(path):
        calls[0] += 1
        if rank == 1 and calls[0] > lose_after:
            raise OSError(errno.EIO, "Input/output error", str(path))
        return read(path)

    tr.dataset._read = failing_read
    try:
        tr.fit()
    except DataVanished as e:
        return "stopped", str(e), tr.state.images_seen
    return "finished", "", tr.state.images_seen


def resume_with_a_different_view(rank: int, world_size: int, overrides: list, out: str) -> int:
    """A Trainer resuming the run in ``out``, where process 1 cannot read the latest checkpoint (its node's
    view of the filesystem); returns the iteration it resumes at."""
    import torch

    import pretrain.checkpoint as checkpoint
    from pretrain.config import load_config
    from pretrain.train import Trainer
    from swavbench.core.state import CheckpointError

    torch.set_num_threads(1)
    real = checkpoint.load_checkpoint

    def blind(path, *a, **k):
        if rank == 1 and str(path).endswith("checkpoint.pth"):
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt (as process 1 sees it)")
        return real(path, *a, **k)

    checkpoint.load_checkpoint = blind  # what newest_valid_checkpoint reads with
    return Trainer(load_config("tiny", overrides), out, resume=True, progress=False).state.iteration
