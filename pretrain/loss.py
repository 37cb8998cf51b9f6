"""SwAV swapped-prediction loss (paper Eq. 1-3; the loop of the official ``main_swav.py``).

For each crop used for assignment, Sinkhorn codes q are computed without gradient from that
crop's prototype scores (optionally with a queue of stored embeddings prepended); every
other crop predicts q through softmax(scores / temperature).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.sinkhorn import sinkhorn


def swav_loss(
    z: Tensor,
    prototypes: Tensor,
    n_crops: int,
    *,
    crops_for_assign: Sequence[int] = (0, 1),
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    queue: Tensor | None = None,
) -> Tensor:
    """Mean cross-entropy between each code crop's codes and the other crops' predictions.

    z: (n_crops * B, D) crop-major L2-normalised embeddings; prototypes: (K, D) unit rows;
    queue: (len(crops_for_assign), L, D) stored embeddings or None (never modified here).
    """
    if z.shape[0] % n_crops:
        raise ValueError(f"z has {z.shape[0]} rows, not a multiple of n_crops={n_crops}")
    if n_crops < 2:
        raise ValueError("swav_loss needs at least 2 crops (one to assign, one to predict)")
    batch = z.shape[0] // n_crops
    scores = z @ prototypes.t()  # (n_crops * B, K)
    total = scores.new_zeros((), dtype=torch.float32)
    for i, crop_id in enumerate(crops_for_assign):
        with torch.no_grad():
            code_scores = scores[crop_id * batch : (crop_id + 1) * batch].detach()
            if queue is not None:
                code_scores = torch.cat((queue[i].to(prototypes.dtype) @ prototypes.t(), code_scores))
            q = sinkhorn(code_scores, epsilon, iterations)[-batch:]
        sub = scores.new_zeros((), dtype=torch.float32)
        for v in range(n_crops):
            if v == crop_id:
                continue
            log_p = F.log_softmax(scores[v * batch : (v + 1) * batch].float() / temperature, dim=1)
            sub = sub - (q * log_p).sum(dim=1).mean()
        total = total + sub / (n_crops - 1)
    return total / len(crops_for_assign)
