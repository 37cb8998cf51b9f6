"""What data-parallel code shares once the processes of a job have joined one group (torchrun, SLURM tasks
or one process): who am I, agree on a flag, sum counts, shard a dataset and gather its rows back in
dataset order, and BatchNorm statistics over the global batch (also on CPU, where torch's SyncBatchNorm
refuses CPU tensors). With one process every helper is the identity, so one code path serves both."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn


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


def local_world_size() -> int:
    """Processes on this machine: torchrun's LOCAL_WORLD_SIZE, SLURM's tasks per node, else all of them."""
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "").split("(")[0]
        if value.isdigit():
            return int(value)
    return world_size()


def barrier() -> None:
    """Wait for every process (nothing with one)."""
    if active():
        dist.barrier()


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


def per_process_batch(global_batch: int, what: str = "batch_size") -> int:
    """The share of one process of a ``global_batch`` split evenly over the processes of the run."""
    w = world_size()
    if global_batch % w:
        raise ValueError(
            f"{what}={global_batch} is the global batch (all processes together) and must split evenly over "
            f"the {w} processes of this run: choose a multiple of {w}, or run on a number of GPUs dividing it"
        )
    return global_batch // w


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


def gather_rows(local: torch.Tensor, n: int, *, chunk_rows: int = 65536) -> torch.Tensor:
    """The rows each process computed for its ``shard(n)``, gathered on every process in dataset order
    (row i came from process i % world_size), on the CPU. Gathered ``chunk_rows`` rows per process at a
    time, so a GPU holds world_size x chunk_rows rows, not the whole set."""
    if not active():
        return local
    w, rest = world_size(), tuple(local.shape[1:])
    per = -(-n // w)
    out = torch.empty((per * w, *rest), dtype=local.dtype)
    by_rank = out.view(per, w, *rest)  # out[k * w + r] is row k of process r
    dev = collective_device()
    for start in range(0, max(per, 1), chunk_rows):
        stop = min(per, start + chunk_rows)
        piece = torch.zeros((stop - start, *rest), dtype=local.dtype, device=dev)
        mine = local[start:stop]
        piece[: len(mine)] = mine.to(dev)
        parts = [torch.empty_like(piece) for _ in range(w)]
        dist.all_gather(parts, piece)
        for r, part in enumerate(parts):
            by_rank[start:stop, r] = part.cpu()
    return out[:n]


def my_part(batch: Sequence[int]) -> list[int]:
    """This process' share of one global batch of indices (every ``world_size``-th)."""
    return list(batch[rank() :: world_size()])


class _GlobalBatchNormFn(torch.autograd.Function):
    """Batch normalisation over the samples of every process, sums in float64 (as SyncBatchNorm's kernels:
    a near-constant channel divides rounding errors by its tiny deviation). Returns the normalised input
    x_hat and the global mean, variance and count; the affine part stays outside."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float):  # noqa: ANN205 - autograd signature
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        x64 = x.double()
        sums = torch.cat([x64.sum(dims), torch.tensor([x.numel() / c], dtype=torch.float64)])
        dist.all_reduce(sums)
        n, mean = sums[-1], sums[:c] / sums[-1]
        sq = ((x64 - mean.view(shape)) ** 2).sum(dims)
        dist.all_reduce(sq)
        var = sq / n
        invstd = torch.rsqrt(var + eps)
        x_hat = ((x64 - mean.view(shape)) * invstd.view(shape)).to(x.dtype)
        ctx.save_for_backward(x_hat, invstd, n)
        return x_hat, mean.to(x.dtype), var.to(x.dtype), n.to(x.dtype)

    @staticmethod
    def backward(ctx, grad, *_):  # noqa: ANN205 - autograd signature
        x_hat, invstd, n = ctx.saved_tensors
        c = grad.shape[1]
        dims = [0, *range(2, grad.dim())]
        shape = [1, c] + [1] * (grad.dim() - 2)
        g64, xh64 = grad.double(), x_hat.double()
        sums = torch.cat([g64.sum(dims), (g64 * xh64).sum(dims)])
        dist.all_reduce(sums)
        mean_g, mean_gx = (sums[:c] / n).view(shape), (sums[c:] / n).view(shape)
        dx = (g64 - mean_g - xh64 * mean_gx) * invstd.view(shape)
        return dx.to(grad.dtype), None


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are taken over the global batch: torch's SyncBatchNorm for CPU
    processes (gloo), which it refuses. Evaluation, and training with one process, is plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        y, mean, var, n = _GlobalBatchNormFn.apply(x, self.eps)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var * n / max(float(n) - 1, 1.0), alpha=m)
        if self.affine:
            shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def data_parallel(model: nn.Module, device: torch.device, *, grouped: bool | None = None) -> nn.Module:
    """``model`` in DistributedDataParallel when the processes form a group (``grouped``, by default
    ``active()``), else ``model`` itself."""
    if not (active() if grouped is None else grouped):
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_batchnorm(model: nn.Module, *, only_sync: bool = False) -> nn.Module:
    """``model`` with every BatchNorm taking its training statistics over the global batch: torch's
    SyncBatchNorm on GPUs, GlobalBatchNorm on CPU. ``only_sync``: convert only the SyncBatchNorm layers a
    model chose itself (CPU), leaving per-process BatchNorm as it is."""
    if torch.cuda.is_available():
        return model if only_sync else nn.SyncBatchNorm.convert_sync_batchnorm(model)
    kind = nn.SyncBatchNorm if only_sync else nn.modules.batchnorm._BatchNorm
    if isinstance(model, kind) and not isinstance(model, GlobalBatchNorm):
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
        model.add_module(name, sync_batchnorm(child, only_sync=only_sync))
    return model
