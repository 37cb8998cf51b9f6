"""A launch's plan: every job's config resolved once (preset <- overrides, validated), and the data root
its jobs read their datasets under. Preflight, the main job's data plan, the launch keys and the submitted
jobs all read the same resolved config and root, so a launch checks exactly what it submits and pays for
each resolution once. The root is the user's (``--data-root`` / ``$SWAVBENCH_DATA``) when the plan is made;
the main job's data plan may move it to the demo-data cache; each job takes it as a field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pretrain import methods
from swavbench.core import registry
from swavbench.core.data_root import data_root


class Plan:
    """Resolved configs by what defines them; each is resolved on first use. Callers get a copy, so
    nothing they change leaks into another job's config."""

    def __init__(self, root: str | Path | None = None) -> None:
        self._configs: dict[tuple, Any] = {}
        self.resolutions = 0  # how many configs were resolved (the tests count them)
        self.data_root = Path(root if root is not None else data_root()[0]).expanduser().resolve()

    def _once(self, key: tuple, resolve) -> Any:
        if key not in self._configs:
            self._configs[key] = resolve()
            self.resolutions += 1
        return copy.deepcopy(self._configs[key])

    def protocol(self, protocol: str, preset: str, overrides: list[str], *, seed: int) -> Any:
        """The config of one suite entry at ``seed`` (what its key and its job use)."""
        return self._once(
            ("protocol", protocol, preset, tuple(overrides), seed),
            lambda: registry.get(protocol).load_config(preset, [*overrides, f"seed={seed}"]),
        )

    def entry(self, entry, seed: int) -> Any:
        """``protocol`` for a suite entry."""
        return self.protocol(entry.protocol, entry.preset, entry.overrides, seed=seed)

    def pretraining(self, method: str, preset: str, overrides: list[str]) -> Any:
        """The config of a pretraining of ``method`` (pretrain.methods)."""
        return self._once(
            ("pretraining", method, preset, tuple(overrides)),
            lambda: methods.get(method).load(preset, list(overrides)),
        )
