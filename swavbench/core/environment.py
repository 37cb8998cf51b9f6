"""Environment variables set for a while: what a job or a command passes to the processes it starts,
undone afterwards so that an in-process caller (the debug executor, a test, a notebook) keeps its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def temporary_environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ inside the block; each variable as it was (or absent) after it."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
