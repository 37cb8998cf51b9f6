"""SGD + LARS (layer-wise trust ratio, as apex's LARC with clip=False used by official SwAV)
and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


class LARS(torch.optim.SGD):
    """SGD whose per-parameter step is scaled by trust * ||w|| / (||g|| + wd * ||w||).

    Weight decay is folded into the gradient before scaling (LARC semantics). Parameter
    groups with ``lars=False`` take a plain SGD step with their own weight decay.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        *,
        weight_decay: float = 0.0,
        trust: float = 0.001,
        eps: float = 1e-8,
    ):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.trust, self.eps = trust, eps
        for g in self.param_groups:
            g.setdefault("lars", True)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        saved_wd = []
        for group in self.param_groups:
            saved_wd.append(group["weight_decay"])
            if not group["lars"]:
                continue
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                w_norm = torch.linalg.vector_norm(p)
                g_norm = torch.linalg.vector_norm(p.grad)
                ratio = self.trust * w_norm / (g_norm + wd * w_norm + self.eps)
                ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
                p.grad.add_(p, alpha=wd).mul_(ratio)
            group["weight_decay"] = 0.0
        try:
            return super().step(closure)
        finally:
            for group, wd in zip(self.param_groups, saved_wd):
                group["weight_decay"] = wd


def param_groups(model: nn.Module, weight_decay: float, *, exclude_bias_bn: bool) -> list[dict]:
    """One group, or two when biases and norm parameters skip LARS and weight decay."""
    if not exclude_bias_bn:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    plain, decayed = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 else decayed).append(p)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0, "lars": False},
    ]


def build_optimizer(
    model: nn.Module,
    lr: float,
    momentum: float,
    *,
    weight_decay: float,
    lars: bool,
    trust: float,
    exclude_bias_bn: bool,
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay, exclude_bias_bn=exclude_bias_bn)
    if lars:
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def lr_at(
    iteration: int,
    iters_per_epoch: int,
    epochs: int,
    *,
    base_lr: float,
    final_lr: float,
    warmup_epochs: float,
    start_warmup: float,
) -> float:
    """Linear warm-up from ``start_warmup`` to ``base_lr``, then cosine to ``final_lr``."""
    warmup = int(round(warmup_epochs * iters_per_epoch))
    total = epochs * iters_per_epoch
    if iteration < warmup:
        return start_warmup + (base_lr - start_warmup) * iteration / max(1, warmup - 1)
    t = (iteration - warmup) / max(1, total - warmup)
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * min(t, 1.0)))
