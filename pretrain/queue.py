"""Embedding queue for small batches (SwAV paper Sec. 4 / App. A.1): past embeddings of the
code crops join the Sinkhorn problem so the equal-partition constraint spans more samples."""

from __future__ import annotations

import torch
from torch import Tensor


class EmbeddingQueue:
    """FIFO of the last ``length`` embeddings per code crop, newest batch at the front.

    Used from ``start_epoch`` on and only once full (as the official implementation: an
    unfilled queue of zeros would bias the codes).
    """

    def __init__(
        self, n_assign: int, length: int, dim: int, *, start_epoch: int, device: torch.device | str = "cpu"
    ):
        if length <= 0:
            raise ValueError("queue length must be positive; use no queue instead")
        self.start_epoch = start_epoch
        self.buffer = torch.zeros(n_assign, length, dim, device=device)
        self.filled = 0
        self.in_use = False

    def active(self, epoch: int) -> Tensor | None:
        """The queue to hand to ``swav_loss`` at this epoch, or None while not yet usable."""
        if epoch < self.start_epoch:
            return None
        if self.in_use or self.filled >= self.buffer.shape[1]:
            self.in_use = True
            return self.buffer
        return None

    @torch.no_grad()
    def push(
        self, z: Tensor, crops_for_assign: tuple[int, ...] | list[int], batch: int, *, epoch: int
    ) -> None:
        """Insert this batch's code-crop embeddings at the front (after it was used in the loss)."""
        if epoch < self.start_epoch:
            return
        length = self.buffer.shape[1]
        n = min(batch, length)
        for i, crop_id in enumerate(crops_for_assign):
            self.buffer[i, n:] = self.buffer[i, : length - n].clone()
            self.buffer[i, :n] = z[crop_id * batch : crop_id * batch + n].detach().float()
        self.filled = min(length, self.filled + n)

    def state_dict(self) -> dict:
        return {
            "buffer": self.buffer.cpu(),
            "filled": self.filled,
            "in_use": self.in_use,
            "start_epoch": self.start_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["buffer"].shape != self.buffer.shape:
            raise ValueError(
                f"queue in checkpoint has shape {tuple(state['buffer'].shape)}, config gives "
                f"{tuple(self.buffer.shape)}: resume with the same queue_length / feat_dim / world size"
            )
        self.buffer.copy_(state["buffer"])
        self.filled = int(state["filled"])
        self.in_use = bool(state["in_use"])
