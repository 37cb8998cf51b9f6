"""One resumable epoch loop for the protocols that train (the linear probe's heads, semi-supervised
fine-tuning; issue #33 moves the others onto it). What it owns, documented once:
- the state file: written whole (the durable writer), holding ``key`` (what the state belongs to: trunk and
  config; a state of another key is never resumed), the position (``epoch`` epochs and ``batch`` batches of
  the next one done), each part's ``state_dict`` under its name, and the protocol's own values;
- resuming: every process of a data-parallel run loads the state, or none does;
- saving after every epoch and, with the position in the epoch, at the scheduler's signal (then
  ``interrupt.Interrupted`` is raised and the requeued job continues from the file);
- progress over the run's steps.
A protocol supplies its step, its parts and its values."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from swavbench.core import interrupt, ranks
from swavbench.core.state import atomic_save, load_checkpoint


class EpochLoop:
    """``for epoch, first in loop.run(saving)`` over the epochs left, ``loop.stepped`` after each step and
    ``loop.epoch_done`` after each epoch; ``saving()`` gives the protocol's values whenever the state is
    saved. Without a ``path`` nothing is saved or resumed."""

    def __init__(
        self,
        path: Path | None,
        key: object,
        *,
        epochs: int,
        per_epoch: int,
        parts: dict[str, Any],
        desc: str,
        map_location: str | torch.device = "cpu",
    ):
        self.path, self.key, self.parts, self.map_location = path, key, parts, map_location
        self.epochs, self.per_epoch, self.desc = epochs, per_epoch, desc
        self.start, self.start_batch = 0, 0
        self.bar: tqdm | None = None
        self._saving: Callable[[], dict[str, Any]] = dict

    def resume(self, **defaults: Any) -> dict[str, Any]:
        """The protocol's values (named as in ``defaults``): those an earlier run of the same key saved, its
        parts loaded too, else ``defaults``."""
        have = self.path is not None and self.path.is_file()
        state = load_checkpoint(self.path, map_location=self.map_location) if have else None
        if not ranks.all_ranks(state is not None and state.get("key") == self.key):
            return dict(defaults)
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        self.start, self.start_batch = state["epoch"], state.get("batch", 0)
        return {name: state[name] for name in defaults}

    def save(self, epoch: int, batch: int, values: dict[str, Any]) -> None:
        """``epoch`` epochs and ``batch`` batches of the next one are done (process 0 writes)."""
        if self.path is None or not ranks.is_main():
            return
        parts = {name: part.state_dict() for name, part in self.parts.items()}
        atomic_save({"key": self.key, **parts, "epoch": epoch, "batch": batch, **values}, self.path)

    def run(self, saving: Callable[[], dict[str, Any]]) -> Iterator[tuple[int, int]]:
        """(epoch, its first batch) from where the run stands; ``saving()``: the values each save holds."""
        self._saving = saving
        done = self.start * self.per_epoch + self.start_batch
        total = self.epochs * self.per_epoch
        self.bar = tqdm(
            total=total, initial=done, desc=self.desc, unit="it", leave=False, disable=not ranks.is_main()
        )
        try:
            for epoch in range(self.start, self.epochs):
                yield epoch, self.start_batch if epoch == self.start else 0
        finally:
            self.bar.close()

    def stepped(self, epoch: int, batch: int) -> None:
        """After batch ``batch`` of ``epoch``: progress and, at the scheduler's signal, save and stop."""
        self.bar.update(1)
        if self.path is not None and batch + 1 < self.per_epoch:
            where = f"epoch {epoch}, batch {batch + 1}"
            interrupt.check(lambda: self.save(epoch, batch + 1, self._saving()), where)

    def epoch_done(self, epoch: int) -> None:
        """After ``epoch``: save and, at the scheduler's signal, stop (not after the last)."""
        self.save(epoch + 1, 0, self._saving())
        if self.path is not None and epoch + 1 < self.epochs:
            interrupt.check(lambda: None, f"the end of epoch {epoch + 1}")
