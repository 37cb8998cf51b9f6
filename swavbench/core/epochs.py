"""The one resumable step loop of every protocol that trains (SwAV and supervised pretraining, the linear
probe's heads, semi-supervised fine-tuning, torchvision detection, DETR). What it owns, documented once:
- the position: ``epoch`` epochs and ``batch`` batches of the next one done; an iteration-based protocol
  (detection, DETR) is one epoch of all its iterations, its position ``batch`` (``iterations``);
- the state file: written whole (the durable writer), holding ``key`` (what the state belongs to: trunk and
  config; a state of another key is never resumed), the position, each part's ``state_dict`` under its name
  and the protocol's own values. Pretraining keeps its rotating checkpoint instead (``writer``), the rule
  of ``pretrain/checkpoint.py``;
- resuming: every process of a data-parallel run loads the state, or none does;
- saving after every epoch, every ``every`` steps, at ``total`` steps and, with the position in the epoch,
  at the scheduler's signal (then ``interrupt.Interrupted`` is raised and the requeued job continues);
- the cross-rank finite check before an update: every process stops together, the last good state kept;
- progress over the run's steps, and the mean of each step's losses over the processes.
A protocol supplies its step, its parts and its values."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from swavbench.core import interrupt, ranks, tracking
from swavbench.core.state import atomic_save, load_checkpoint


class EpochLoop:
    """``for epoch, first in loop.run(saving)`` over the epochs left; ``loop.stepped`` after each step and
    ``loop.epoch_done`` after each epoch. ``saving()`` gives the protocol's values whenever the state is
    saved; a ``writer(epoch, batch)``, called on every process, replaces the state file. Without either
    nothing is saved or resumed. ``iterations``: an iteration-based run, one epoch whose position stays in
    ``batch`` when done, so that asking for more iterations continues it."""

    def __init__(
        self,
        path: Path | None,
        key: object,
        *,
        desc: str,
        epochs: int = 1,
        per_epoch: int = 0,
        iterations: int = 0,
        parts: dict[str, Any] | None = None,
        every: int = 0,
        total: int = 0,
        writer: Callable[[int, int], None] | None = None,
        progress: bool = True,
        map_location: str | torch.device = "cpu",
    ):
        self.path, self.key, self.parts, self.writer = path, key, parts or {}, writer
        self.by_iteration = iterations > 0
        if self.by_iteration:
            epochs, per_epoch = 1, iterations
        self.epochs, self.per_epoch, self.desc, self.every = epochs, per_epoch, desc, every
        self.total = min(total, epochs * per_epoch) if total else epochs * per_epoch
        self.progress, self.map_location = progress, map_location
        self.start, self.start_batch = 0, 0
        self.bar: tqdm | None = None
        self._saving: Callable[[], dict[str, Any]] = dict

    @property
    def saves(self) -> bool:
        return self.path is not None or self.writer is not None

    def resume(self, **defaults: Any) -> dict[str, Any]:
        """The protocol's values (named as in ``defaults``): those an earlier run of the same key saved, its
        parts loaded too, else ``defaults``."""
        have = self.path is not None and self.path.is_file()
        state = load_checkpoint(self.path, map_location=self.map_location) if have else None
        if self.by_iteration and state is not None and "epoch" not in state and "iteration" in state:
            # the one migration: detection's and DETR's state of before the step loop counted ``iteration``
            state = {**state, "epoch": 0, "batch": state["iteration"]}
        if not ranks.all_ranks(state is not None and state.get("key") == self.key and "epoch" in state):
            return dict(defaults)
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        self.start, self.start_batch = state["epoch"], state.get("batch", 0)
        return {name: state[name] for name in defaults}

    def save(self, epoch: int, batch: int) -> None:
        """``epoch`` epochs and ``batch`` batches of the next one are done (process 0 writes the file)."""
        if self.writer is not None:
            self.writer(epoch, batch)
        if self.path is None or not ranks.is_main():
            return
        parts = {name: part.state_dict() for name, part in self.parts.items()}
        state = {"key": self.key, **parts, "epoch": epoch, "batch": batch, **self._saving()}
        atomic_save(state, self.path)

    def run(self, saving: Callable[[], dict[str, Any]] = dict) -> Iterator[tuple[int, int]]:
        """(epoch, its first batch) from where the run stands; ``saving()``: the values each save holds."""
        self._saving = saving
        done = self.start * self.per_epoch + self.start_batch
        self.bar = tqdm(
            total=self.total,
            initial=done,
            desc=self.desc,
            unit="it",
            leave=False,
            dynamic_ncols=True,
            disable=not (self.progress and ranks.is_main()),
        )
        try:
            for epoch in range(self.start, self.epochs):
                if epoch * self.per_epoch >= self.total:
                    break
                yield epoch, self.start_batch if epoch == self.start else 0
        finally:
            self.bar.close()

    def finite(self, loss: float, where: str, fix: str) -> None:
        """Before an update: stop every process when ``loss`` is not finite on any; ``fix``: what to do."""
        if not ranks.all_ranks(math.isfinite(loss)):
            kept = f"; the last good state is kept in {self.path}" if self.path is not None else ""
            raise FloatingPointError(f"{self.desc} loss is {loss} at {where}: {fix}{kept}")

    def logged(self, step: int, losses: dict[str, float]) -> dict[str, float]:
        """Each loss's mean over the processes, logged at ``step`` and shown (the first) on the bar."""
        mean = [v / ranks.world_size() for v in ranks.all_sum(list(losses.values()))]
        means = dict(zip(losses, mean))
        tracking.log({f"train/{k}": v for k, v in means.items()}, step)
        self.bar.set_postfix(loss=f"{means.get('loss', mean[0]):.3f}")
        return means

    def finished(self, epoch: int, batch: int) -> bool:
        """Whether batch ``batch`` of ``epoch`` was the run's last step."""
        return epoch * self.per_epoch + batch + 1 >= self.total

    def stepped(self, epoch: int, batch: int) -> None:
        """After batch ``batch`` of ``epoch``: progress, the interval's save and, at the scheduler's signal,
        save and stop. The epoch's last batch is left to ``epoch_done``."""
        self.bar.update(1)
        after = batch + 1
        if after == self.per_epoch and not self.by_iteration:
            return
        done = epoch * self.per_epoch + after
        if done >= self.total:  # the last step: a run capped mid-epoch, or an iteration-based run's end
            self.save(epoch, after)
            return
        saved = self.every > 0 and done % self.every == 0
        if saved:
            self.save(epoch, after)
        if self.saves:
            where = f"{self.desc} iteration {done}"
            where += "" if self.by_iteration else f" (epoch {epoch}, batch {after})"
            interrupt.check(lambda: None if saved else self.save(epoch, after), where)

    def epoch_done(self, epoch: int) -> None:
        """After ``epoch``: save and, at the scheduler's signal, stop (not after the last)."""
        self.save(epoch + 1, 0)
        if self.saves and (epoch + 1) * self.per_epoch < self.total:
            interrupt.check(lambda: None, f"{self.desc} the end of epoch {epoch + 1}")
