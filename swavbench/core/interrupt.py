"""Stopping cleanly at the scheduler's warning: a job turns the signal (submitit's USR2, sent before the
time limit or on preemption) into a flag; training loops check it at step boundaries, save their state
there and raise Interrupted; the job then requeues and the next run continues from that state.

A signal that arrives while no loop checks the flag (feature extraction, evaluation, set-up) must not
let the job run into its time limit: ``cooperative`` arms a fallback alarm at the signal, and if no
loop has taken the request within ``grace_s`` the fallback (submitit's requeue) runs anyway; the job
then restarts from its last saved state.

DataLoader workers ignore the scheduler's signals (``quiet_worker``): SLURM signals every process of
the job step, and a worker killed by SIGTERM, or one running the main process' requeue handler, would
crash the run it feeds."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

WORKER_IGNORES = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
_requested: list[int] = []  # signals received since the last clear()
_fallback: list = []  # (handler, grace_s) while cooperative() with a fallback is active


class Interrupted(Exception):  # noqa: N818 - a requested stop, not an error
    """A loop stopped at a step boundary on request, after saving everything needed to continue."""


def request(signum: int = signal.SIGUSR2, frame=None) -> None:  # noqa: ARG001 - signal handler signature
    """Ask the running loop to save and stop at its next step boundary (also a signal handler); inside
    ``cooperative(fallback=...)`` the fallback runs if no loop takes the request in time."""
    first = not _requested
    _requested.append(signum)
    if first and _fallback:
        signal.setitimer(signal.ITIMER_REAL, _fallback[0][1])


def requested() -> bool:
    return bool(_requested)


def clear() -> None:
    _requested.clear()


def quiet_worker(worker_id: int) -> None:  # noqa: ARG001 - DataLoader worker_init_fn signature
    """DataLoader ``worker_init_fn``: the scheduler's signals are for the main process."""
    for sig in WORKER_IGNORES:
        signal.signal(sig, signal.SIG_IGN)


def taken() -> None:
    """A loop took the request: disarm the fallback before saving, so a slow save is neither cut short by
    it nor counted as a second interruption."""
    if _fallback:
        signal.setitimer(signal.ITIMER_REAL, 0)


def check(save: Callable[[], None], where: str) -> None:
    """At a step boundary: when a stop was requested (of any process of a data-parallel run: they all stop at
    the same step), ``save()`` and raise Interrupted naming ``where``."""
    from swavbench.core import ranks

    if ranks.any_rank(requested()):
        taken()
        save()
        raise Interrupted(f"stopped at {where} on the scheduler's signal; state saved")


@contextmanager
def cooperative(
    signum: int, *, also: tuple[int, ...] = (), fallback: Callable | None = None, grace_s: float = 45.0
) -> Iterator[Callable | int | None]:
    """Within: ``signum`` (and the ``also`` signals: SIGTERM, which preemption sends) only sets the flag
    (loops stop at their next boundary). Yields the handler ``signum`` had (submitit's requeue handler
    inside a submitit job); every handler is restored on exit. ``fallback(signum, None)`` runs ``grace_s``
    seconds after the first signal if no loop has taken the request by then."""
    clear()
    previous = signal.signal(signum, request)
    others = {s: signal.signal(s, request) for s in also}
    old_alarm = None
    if fallback is not None:
        old_alarm = signal.signal(signal.SIGALRM, lambda _s, frame: fallback(signum, frame))
        _fallback.append((fallback, grace_s))
    try:
        yield previous
    finally:
        signal.signal(signum, previous)
        for s, handler in others.items():
            signal.signal(s, handler)
        if fallback is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_alarm)
            _fallback.clear()
        clear()
