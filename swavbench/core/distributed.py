"""Process-group set-up from torchrun or SLURM environment variables; single process otherwise."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _slurm_master_addr() -> str:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST") or "127.0.0.1"
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
        )
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return nodelist.split(",")[0]


def env_dist_info() -> DistInfo:
    """Rank / local rank / world size from torchrun (RANK...) or SLURM (SLURM_PROCID...)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return DistInfo(int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"]))
    return DistInfo()


def init_distributed(port: int = 29500) -> DistInfo:
    """Join the process group if several processes were launched (nccl on GPU, else gloo)."""
    info = env_dist_info()
    if dist.is_available() and dist.is_initialized():  # joined already (by the caller, or an earlier run)
        r = dist.get_rank()
        return DistInfo(r, info.local_rank if info.world_size > 1 else r, dist.get_world_size())
    # one process joins a group only when asked (SWAVBENCH_PROCESS_GROUP=1 under torchrun): the GPU check
    # runs NCCL, DistributedDataParallel and SyncBatchNorm layers on a single GPU that way
    if info.world_size == 1 and not (
        os.environ.get("SWAVBENCH_PROCESS_GROUP") == "1" and "RANK" in os.environ
    ):
        return info
    os.environ.setdefault(
        "MASTER_ADDR", _slurm_master_addr() if "SLURM_PROCID" in os.environ else "127.0.0.1"
    )
    os.environ.setdefault("MASTER_PORT", str(port))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    return info


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
