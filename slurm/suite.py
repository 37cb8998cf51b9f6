"""Suites (which protocol runs to evaluate a checkpoint with, each with its preset and resources)
and sweeps (a grid or list of pretraining overrides -> named variants). YAML in configs/suites/
and configs/sweeps/, validated on load."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from swavbench.core.config import ConfigError, _apply
from swavbench.core.paths import CONFIGS
from swavbench.core.registry import PROTOCOLS

SUITE_DIR = CONFIGS / "suites"


@dataclass
class Resources:
    """What one job asks SLURM for, per node as a cluster user counts it (ignored by the local executor
    except the time limit): ``cpus`` and ``mem_gb`` of each node are split over its tasks
    (``--cpus-per-task = cpus // tasks``)."""

    gpus: int = 0  # per node
    cpus: int = 2  # per node
    mem_gb: int = 8  # per node
    time_min: int = 60
    # ask at most this many minutes per submission (e.g. the partition's MaxTime): a longer job runs in
    # pieces, saving at each limit's warning and requeued until done (0: all of time_min at once)
    piece_min: int = 0
    nodes: int = 1
    tasks_per_node: int = 0  # processes per node of data-parallel jobs (0: one per GPU, or 1); one group
    partition: str = ""
    constraint: str = ""
    account: str = ""  # SLURM account (default: --account, else the cluster file's; slurm.site)
    qos: str = ""
    sbatch: list[str] = field(default_factory=list)  # extra sbatch options: [reservation=paper, exclusive]


@dataclass
class SuiteEntry:
    protocol: str
    preset: str
    name: str = ""
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    resources: Resources = field(default_factory=Resources)
    # an earlier job of the suite whose output this one reads (its job of the same seed, or of seed 0):
    # submitted after it (SLURM afterok), its folder in the protocol's ``after_field`` (registry)
    after: str = ""


@dataclass
class Suite:
    name: str
    description: str
    entries: list[SuiteEntry]
    pretrain: Resources = field(
        default_factory=lambda: Resources(cpus=2, mem_gb=8, time_min=120)
    )  # for pipelines


SUITE_KEYS = ("name", "description", "jobs", "pretrain_resources")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=,+-]*")  # job and folder names: no spaces, newlines or '/'


def check_name(name: str, what: str) -> None:
    """Names become SLURM job names and folder names: a newline would break out of the ``#SBATCH`` line,
    a '/' or '..' would leave the run directory."""
    if not NAME.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{what} {name!r} is not a valid job name: use letters, digits and . _ = , + - "
            "(no spaces, newlines or path separators, not starting with '.')"
        )


OPTION = re.compile(r"[a-z][a-z0-9-]*")  # an sbatch long option name
VALUE = re.compile(r"[^\x00-\x1f\x7f]*")  # one #SBATCH line: no newline or other control character


def check_options(items: list[str], where: str) -> None:
    """ConfigError for an extra sbatch option that is not ``name`` or ``name=value`` on one line."""
    for item in items:
        key, _, value = str(item).partition("=")
        if not OPTION.fullmatch(key.strip().lstrip("-")) or not VALUE.fullmatch(value):
            raise ConfigError(
                f"{where}: sbatch option {item!r} must be name or name=value on one line "
                "(e.g. reservation=paper, exclusive)"
            )


def pieces(r: Resources) -> int:
    """How many submissions a job's time takes: 1, or ceil(time_min / piece_min) with ``piece_min``."""
    return -(-r.time_min // r.piece_min) if 0 < r.piece_min < r.time_min else 1


def cpus_per_task(r: Resources, tasks: int) -> int:
    """The node's CPUs split over its ``tasks`` processes."""
    if r.cpus < tasks:
        raise ConfigError(f"resources: {r.cpus} CPUs per node cannot feed {tasks} tasks per node")
    return r.cpus // tasks


def after_problems(entry: SuiteEntry, earlier: list[SuiteEntry]) -> list[str]:
    """What is wrong with ``entry.after``: it must name an earlier job that has the entry's seeds (or only
    seed 0), of a protocol that reads another job's output."""
    if not entry.after:
        return []
    field_name = PROTOCOLS[entry.protocol].after_field
    if not field_name:
        return [f"job {entry.name}: after: protocol {entry.protocol} reads no other job's output"]
    first = next((e for e in earlier if e.name == entry.after), None)
    if first is None:
        names = ", ".join(e.name for e in earlier) or "none"
        return [f"job {entry.name}: after: {entry.after!r} is not an earlier job of the suite ({names})"]
    if first.seeds != [0] and not set(entry.seeds) <= set(first.seeds):
        return [f"job {entry.name}: seeds {entry.seeds} are not all seeds of {first.name} ({first.seeds})"]
    return []


def load_suite(name_or_path: str, *, problems: list[str] | None = None) -> Suite:
    """A suite preset name (configs/suites/<name>.yaml) or a YAML path. Every problem of the file is raised
    in one ConfigError, or, given a ``problems`` list, added to it and the valid jobs returned (preflight
    then checks them too)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = SUITE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        avail = ", ".join(sorted(p.stem for p in SUITE_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown suite {name_or_path!r}; available: {avail} (or pass a YAML path)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a suite is a mapping with keys {', '.join(SUITE_KEYS)}")
    found: list[str] = []  # every problem of the file, reported together
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        found.append(f"unknown suite key(s) {', '.join(unknown)}; valid: {', '.join(SUITE_KEYS)}")
    if not isinstance(raw.get("jobs"), list) or not raw["jobs"]:
        found.append("a suite needs a non-empty 'jobs' list")
    entries = []
    for i, job in enumerate(raw.get("jobs") or []):
        if not isinstance(job, dict) or "protocol" not in job or "preset" not in job:
            found.append(f"job {i} needs 'protocol' and 'preset'")
            continue
        if job["protocol"] not in PROTOCOLS:
            found.append(f"job {i} protocol {job['protocol']!r} is not one of {', '.join(PROTOCOLS)}")
            continue
        entry = SuiteEntry(job["protocol"], job["preset"])
        try:
            _apply(entry, {k: v for k, v in job.items() if k not in ("protocol", "preset")})
            entry.name = entry.name or entry.preset
            check_name(str(entry.name), f"job {i} name")
            check_options(entry.resources.sbatch, f"job {i} resources")
            for name in ("account", "qos"):
                check_options([f"{name}={getattr(entry.resources, name)}"], f"job {i} resources")
        except ConfigError as e:
            found.append(f"job {i}: {e}")
            continue
        entries.append(entry)
    for i, e in enumerate(entries):
        found += after_problems(e, entries[:i])
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        found.append(f"job names must be unique, got {names}")
    suite = Suite(str(raw.get("name", path.stem)), raw.get("description", ""), entries)
    try:  # it names SLURM job arrays: a newline would end the #SBATCH line and run what follows
        check_name(suite.name, "suite name")
    except ConfigError as e:
        found.append(str(e))
    if "pretrain_resources" in raw:
        try:
            _apply(suite.pretrain, raw["pretrain_resources"] or {})
        except ConfigError as e:
            found.append(f"pretrain_resources: {e}")
    if found and problems is None:
        raise ConfigError(f"{path}: " + "; ".join(found))
    if problems is not None:
        problems += [f"{path}: {p}" for p in found]
    return suite


def variant_name(overrides: dict[str, object]) -> str:
    """Readable, stable name.

    'model.n_prototypes=300,swav.epsilon=0.03' -> 'n_prototypes=300,epsilon=0.03'."""
    parts = []
    for key in sorted(overrides):
        value = overrides[key]
        short = key.split(".")[-1]
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{short}={re.sub(r'[^A-Za-z0-9.+-]', '-', text)}")
    return ",".join(parts)


def expand_sweep(path: str | Path) -> list[tuple[str, list[str]]]:
    """Sweep YAML -> [(variant name, ['section.key=value', ...])]: ``grid`` is a cartesian product,
    ``variants`` a list of override mappings; both may be given."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(raw) - {"grid", "variants", "description"}) if isinstance(raw, dict) else []
    if unknown:
        raise ConfigError(
            f"{path}: unknown sweep key(s) {', '.join(unknown)}; valid: grid, variants, description"
        )
    out = []
    grid = raw.get("grid") or {}
    if grid:
        keys = sorted(grid)
        for values in itertools.product(*(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys)):
            out.append(dict(zip(keys, values)))
    out += list(raw.get("variants") or [])
    if not out:
        raise ConfigError(f"{path}: a sweep needs 'grid' and/or 'variants'")
    named = [(variant_name(o), [f"{k}={json.dumps(v)}" for k, v in sorted(o.items())]) for o in out]
    for name, _ in named:
        check_name(name, f"{path}: sweep variant")
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two variants get the same name: {names}")
    return named
