"""Where runs report their curves: TensorBoard beside the run's files, always, and Weights & Biases when a
project is named (``pip install -e '.[wandb]'``; ``run.wandb=PROJECT`` for pretraining, or ``swavbench
--wandb PROJECT`` for every job a command starts). Every job of one run directory or sweep logs into one W&B
group; a job's W&B run id is kept with its state (the pretraining checkpoint, or ``wandb_id`` in an
evaluation's folder), so a requeued or resumed job continues the same W&B run. Only the first process logs."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from swavbench.core import durable, ranks

PROJECT_ENV = "SWAVBENCH_WANDB"  # the W&B project of every job a command starts (swavbench --wandb)
GROUP_ENV = "SWAVBENCH_WANDB_GROUP"  # the group: the run directory or sweep the jobs belong to
ID_FILE = "wandb_id"  # in an evaluation's output folder: its W&B run, continued by a requeued job


class TrackingError(RuntimeError):
    """W&B logging was asked for but cannot start; the message says how to fix it."""


class Tracker:
    """Scalars of one job: to TensorBoard in ``out_dir/tensorboard`` and, with a project, to a W&B run
    (``run_id``: the run to continue; new when empty)."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        name: str,
        kind: str,
        project: str = "",
        run_id: str = "",
        config: dict[str, Any] | None = None,
        purge_step: int | None = None,
    ):
        self.id, self.tb, self.wandb = "", None, None
        if not ranks.is_main():
            return
        from torch.utils.tensorboard import SummaryWriter

        out_dir = Path(out_dir)
        self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step)
        project = project or os.environ.get(PROJECT_ENV, "")
        if not project:
            return
        try:
            import wandb
        except ImportError:
            raise TrackingError(
                f"W&B logging into project {project!r} was asked for, but wandb is not installed: "
                "pip install -e '.[wandb]' (or drop run.wandb / --wandb)"
            ) from None
        self.id = run_id or uuid.uuid4().hex[:12]  # W&B run ids: letters and digits
        self.wandb = wandb.init(
            project=project,
            group=os.environ.get(GROUP_ENV) or out_dir.resolve().parent.name,
            name=name,
            job_type=kind,
            id=self.id,
            resume="allow",
            dir=str(out_dir),
            config=config,
        )

    def log(self, values: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)

    def summary(self, values: dict[str, float]) -> None:
        """The job's final numbers (an evaluation's metrics) on its W&B run."""
        if self.wandb is not None:
            self.wandb.summary.update(values)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        self.tb = self.wandb = None


_CURRENT: list[Tracker] = []  # the tracker of the job running in this process (evaluation loops log into it)


@contextlib.contextmanager
def evaluation(out_dir: str | Path, *, name: str, kind: str, config: dict[str, Any]) -> Iterator[Tracker]:
    """The tracker of an evaluation job writing into ``out_dir``: its W&B run id is kept in ``out_dir``
    (a requeued job continues that run); the job's loops log into it through ``log``."""
    path = Path(out_dir) / ID_FILE
    run_id = path.read_text().strip() if path.is_file() else ""
    tracker = Tracker(out_dir, name=name, kind=kind, run_id=run_id, config=config)
    if tracker.id and tracker.id != run_id:
        durable.write_text(path, tracker.id + "\n")
    _CURRENT.append(tracker)
    try:
        yield tracker
    finally:
        _CURRENT.remove(tracker)
        tracker.close()


def log(values: dict[str, float], step: int) -> None:
    """Log a curve point into the running evaluation's tracker (nothing when none runs here)."""
    if _CURRENT:
        _CURRENT[-1].log(values, step)
