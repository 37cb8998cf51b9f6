"""Sinkhorn-Knopp equal-partition codes (SwAV paper, Sec. 3.1 and Algorithm 1).

Computed in the log domain: exp(scores / eps) overflows fp32 for eps = 0.05 once scores
exceed ~4.4 and underflows for small eps, while every normalisation of the algorithm is
a subtraction of a log-sum-exp there, so the codes are the same numbers without inf/NaN.
Under ``torch.distributed`` the per-prototype sums and the total are all-reduced and B is
the global number of samples, so N processes give exactly the codes of one process on the
concatenated batch.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor


def _world() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _global_logsumexp(x: Tensor, dim: int | None) -> Tensor:
    """log(sum(exp(x))) over ``dim`` of the local tensor and across processes (dim=None: all)."""
    if dim is None:
        m = x.max().detach().reshape(1)
    else:
        m = x.amax(dim=dim, keepdim=True).detach()
    if _world():
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.exp(x - m)
    s = s.sum() if dim is None else s.sum(dim=dim, keepdim=True)
    if _world():
        dist.all_reduce(s)
    return (torch.log(s) + m).reshape(m.shape)


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Codes (B, K) with rows summing to 1 for raw prototype scores (B, K).

    Q = exp(scores / eps)^T normalised to total 1; each iteration makes every prototype
    row sum to 1/K and every sample column sum to 1/B; returns (Q * B)^T. Runs in float64
    if given float64, else float32, whatever autocast is active.
    """
    if scores.ndim != 2:
        raise ValueError(f"sinkhorn expects scores of shape (B, K), got {tuple(scores.shape)}")
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=scores.device.type, enabled=False):
        log_q = scores.to(dtype).t() / epsilon  # (K, B)
        n_samples = torch.tensor([float(log_q.shape[1])], dtype=dtype, device=log_q.device)
        if _world():
            dist.all_reduce(n_samples)
        log_b = torch.log(n_samples)
        log_k = math.log(log_q.shape[0])
        log_q = log_q - _global_logsumexp(log_q, dim=None)
        for _ in range(iterations):
            log_q = log_q - _global_logsumexp(log_q, dim=1) - log_k  # prototypes: 1/K each
            log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - log_b  # samples: 1/B
        return torch.exp(log_q + log_b).t()
