"""What data-parallel code shares once the processes of a job have joined one group (torchrun, SLURM tasks
or one process): who am I, agree on a flag, sum counts, shard a dataset and gather its rows back in
dataset order, and BatchNorm statistics over the global batch (also on CPU, where torch's SyncBatchNorm
refuses CPU tensors). With one process every helper is the identity, so one code path serves both."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

# the differentiable all-reduce GlobalBatchNorm needs; its suggested successor is a private module
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_reduce is deprecated")


def active() -> bool:
    """Several processes joined one group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def collective_device() -> torch.device:
    """Where tensors for collectives live: the process' GPU under nccl, else the CPU (gloo)."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def local_device(local_rank: int = 0) -> torch.device:
    """The process' own GPU (``cuda:<local rank>``, whether the node shows it every GPU or only its own) or
    the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def any_rank(flag: bool) -> bool:  # noqa: FBT001 - the value being agreed on
    """``flag`` on any process (every process gets the same answer)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item() > 0


def all_ranks(flag: bool) -> bool:  # noqa: FBT001 - the value being agreed on
    """``flag`` on every process (every process gets the same answer)."""
    return not any_rank(not flag)


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over processes (float64, so counts stay exact)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def all_gather_objects(obj: object) -> list:
    """``obj`` of every process, in rank order."""
    if not active():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(n: int) -> list[int]:
    """This process' indices of a dataset of ``n`` items: every ``world_size``-th from its rank."""
    return list(range(rank(), n, world_size()))


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """The rows each process computed for its ``shard(n)``, gathered on every process in dataset order
    (row i came from process i % world_size)."""
    if not active():
        return local
    w = world_size()
    per = -(-n // w)
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype)
    padded[: len(local)] = local.cpu()
    dev = collective_device()
    parts = [torch.empty_like(padded, device=dev) for _ in range(w)]
    dist.all_gather(parts, padded.to(dev))
    out = torch.stack([p.cpu() for p in parts], dim=1).reshape(per * w, *local.shape[1:])
    return out[:n]


def my_part(batch: Sequence[int]) -> list[int]:
    """This process' share of one global batch of indices (every ``world_size``-th)."""
    return list(batch[rank() :: world_size()])


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are taken over the global batch with a differentiable all-reduce
    of the sums: torch's SyncBatchNorm for CPU processes (gloo), which it refuses. Evaluation, and training
    with one process, is plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        # two passes (the mean, then squared deviations from it): E[x^2] - E[x]^2 loses digits
        count = torch.tensor([x.numel() / c], dtype=x.dtype)
        sums = dist_nn.all_reduce(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        var = dist_nn.all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(float(n) - 1, 1.0), alpha=m)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm taking its training statistics over the global batch: torch's
    SyncBatchNorm on GPUs, GlobalBatchNorm on CPU."""
    if torch.cuda.is_available():
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, nn.modules.batchnorm._BatchNorm) and not isinstance(model, GlobalBatchNorm):
        bn = GlobalBatchNorm(
            model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats
        )
        if model.affine:
            bn.weight, bn.bias = model.weight, model.bias
        bn.running_mean, bn.running_var = model.running_mean, model.running_var
        bn.num_batches_tracked = model.num_batches_tracked
        bn.train(model.training)
        return bn
    for name, child in model.named_children():
        model.add_module(name, sync_batchnorm(child))
    return model
