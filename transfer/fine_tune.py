"""The fine-tuning loop both detection protocols share (torchvision's Faster / Mask R-CNN and DETR): an
iteration-based run of the one step loop, each step's losses kept in a history the state file holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from swavbench.core import interrupt
from swavbench.core.epochs import EpochLoop


def fine_tune(
    loop: EpochLoop,
    stream: Callable[[int], Dataset],
    losses_of: Callable[[int, Any], dict[str, torch.Tensor]],
    *,
    loader: dict[str, Any],
    opt: torch.optim.Optimizer,
    clip: float,
    clipped: list[torch.nn.Parameter],
    fix: str,
) -> list[dict]:
    """Train from where ``loop`` stands: ``stream(start)`` holds the batches' images from iteration ``start``
    on, read by a DataLoader of the keywords ``loader`` (its workers ignore the scheduler's signals),
    ``losses_of(iteration, batch)`` sets the lr and gives the losses (``loss``: the total, first). Each step
    is checked finite on every process (``fix``: what to change), the gradients of ``clipped`` clipped to
    the norm ``clip`` (0: not), and logged. Returns the history: per iteration, each loss' mean over the
    processes."""
    history = loop.resume(history=[])["history"]
    batches = DataLoader(stream(loop.start_batch), worker_init_fn=interrupt.quiet_worker, **loader)
    for epoch, first in loop.run(saving=lambda: {"history": history}):
        for it, batch in enumerate(batches, start=first):
            losses = losses_of(it, batch)
            values = {k: float(v.detach()) for k, v in losses.items()}
            loop.finite(values["loss"], f"iteration {it}", f"({values}): {fix}")
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(clipped, clip)
            opt.step()
            history.append({"iteration": it + 1, **loop.logged(it + 1, values)})
            loop.stepped(epoch, it)
    return history
