"""What a cluster asks of every job (the SLURM account, a QOS, a default partition, extra ``sbatch``
options): the per-user cluster file (``~/.config/swavbench/cluster.yaml``, or $SWAVBENCH_CLUSTER), then
``--account`` / ``--qos`` on ``launch`` and ``run``, which win over a suite's resources."""

from __future__ import annotations

import getpass
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from slurm.suite import Resources, check_options
from swavbench.core.config import ConfigError, _apply

CLUSTER_FILE_ENV = "SWAVBENCH_CLUSTER"


@dataclass
class Site:
    """Defaults for every job of this user on this cluster; ``account`` / ``qos`` from the command line
    (``forced``) override a suite's resources, the file's only fill what a suite leaves empty."""

    account: str = ""
    qos: str = ""
    partition: str = ""
    sbatch: list[str] = field(default_factory=list)  # extra options, e.g. [reservation=paper, exclusive]
    forced: dict = field(default_factory=dict)

    def slurm_options(self, r: Resources) -> dict[str, str | bool]:
        """The job's account / qos / extra options as ``sbatch`` long options (submitit's additional
        parameters)."""
        out: dict[str, str | bool] = {}
        for name in ("account", "qos"):
            value = self.forced.get(name) or getattr(r, name) or getattr(self, name)
            if value:
                out[name] = value
        for item in [*self.sbatch, *r.sbatch]:  # the suite's own after the file's: they win
            key, _, value = item.partition("=")
            out[key.strip().lstrip("-")] = value.strip() if value else True
        return out


def cluster_file() -> Path:
    """The per-user cluster file: $SWAVBENCH_CLUSTER, else ~/.config/swavbench/cluster.yaml."""
    return Path(os.environ.get(CLUSTER_FILE_ENV) or Path.home() / ".config" / "swavbench" / "cluster.yaml")


def load_site(*, account: str = "", qos: str = "") -> Site:
    """The cluster file's defaults (if the file exists) with the command line's ``account`` / ``qos``."""
    site, path = Site(), cluster_file()
    if path.is_file():
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict) or "forced" in raw:
            raise ConfigError(f"{path}: a mapping of account, qos, partition, sbatch")
        try:
            _apply(site, raw)
        except ConfigError as e:
            raise ConfigError(
                f"{path}: {e} (the per-user cluster file; ${CLUSTER_FILE_ENV} names another)"
            ) from None
        check_options(site.sbatch, str(path))
    site.forced = {k: v for k, v in (("account", account), ("qos", qos)) if v}
    for name, value in site.forced.items():
        check_options([f"{name}={value}"], f"--{name}")
    return site


def associations() -> set[tuple[str, str]] | None:
    """(account, qos) pairs this user may submit with, from ``sacctmgr``; None when it cannot answer."""
    user = getpass.getuser()
    try:
        out = subprocess.run(
            ["sacctmgr", "-nP", "show", "assoc", f"user={user}", "format=account,qos"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    pairs = set()
    for line in out.stdout.splitlines():
        acct, _, qos = line.strip().partition("|")
        for q in qos.split(",") or [""]:
            pairs.add((acct, q))
    return pairs
