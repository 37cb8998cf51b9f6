"""The fine-tuning loop both detection protocols share (torchvision's Faster / Mask R-CNN and DETR): an
iteration-based run of the one step loop, each step's losses kept in a history the state file holds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from swavbench.core.epochs import EpochLoop


def fine_tune(
    loop: EpochLoop,
    batches: Callable[[int], Iterable],
    losses_of: Callable[[int, Any], dict[str, torch.Tensor]],
    *,
    opt: torch.optim.Optimizer,
    clip: float,
    clipped: list[torch.nn.Parameter],
    fix: str,
) -> list[dict]:
    """Train from where ``loop`` stands: ``batches(start)`` yields the batches from iteration ``start``,
    ``losses_of(iteration, batch)`` sets the lr and gives the losses (``loss``: the total, first). Each step
    is checked finite on every process (``fix``: what to change), the gradients of ``clipped`` clipped to
    the norm ``clip`` (0: not), and logged. Returns the history: per iteration, each loss' mean over the
    processes."""
    history = loop.resume(history=[])["history"]
    loader = batches(loop.start_batch)
    for epoch, first in loop.run(saving=lambda: {"history": history}):
        for it, batch in enumerate(loader, start=first):
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
