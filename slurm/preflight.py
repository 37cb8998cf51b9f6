"""Checks before anything is submitted: every planned job's config resolves (preset + overrides + sweep
variant), names are safe, resources fit the node they ask for (and the partition ``sinfo`` describes, when
it answers), data-parallel batches split over the processes, pretraining batches match their preset's
published global batch. Every problem is listed in one error and nothing is submitted; datasets the
submitting host cannot see are only a warning (login nodes often do not mount them)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from slurm.plan import Plan
from slurm.site import Site, associations
from slurm.suite import Resources, Suite, check_name, cpus_per_task, expand_sweep, load_suite
from swavbench.core import registry
from swavbench.core.config import ConfigError
from swavbench.core.data_root import dataset_paths, resolve, resolve_fields

SYNTHETIC_DATA = ("auto", "generated")  # pretraining data that is made, not read


class PreflightError(ConfigError):
    """One or more planned jobs cannot run as configured; the message lists every problem."""


@dataclass
class Partition:
    name: str
    cpus: int  # most CPUs of one node (0: not known, e.g. sinfo's "32+" for nodes of several sizes)
    gpus: int  # most GPUs of one node
    features: set[str] = field(default_factory=set)
    default: bool = False
    max_time_min: int = 0  # MaxTime (0: infinite or not known)
    mem_mb: int = 0  # most memory of one node (0: not known)


def transformers_available() -> bool:
    """Hugging Face transformers (the DETR protocol) is importable here."""
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def detectron2_available() -> bool:
    from transfer.detection_config import detectron2_available as available

    return available()


def slurm_minutes(text: str) -> int:
    """A SLURM time limit (``infinite``, ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``MM``) in minutes; 0 for
    none or unknown."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        return 0
    days, a, b, c = (int(x) if x else 0 for x in m.groups())
    if m.group(4) is not None:  # [D-]HH:MM:SS
        return days * 1440 + a * 60 + b + (1 if c else 0)
    if m.group(3) is not None:  # D-HH:MM or MM:SS
        return days * 1440 + a * 60 + b if m.group(1) else a + (1 if b else 0)
    return days * 1440 + a * (60 if m.group(1) else 1)  # D-HH or MM


def parse_sinfo(text: str) -> dict[str, Partition]:
    """``sinfo -h -o '%P|%c|%G|%f|%l|%m'`` lines (one per node shape) -> partitions with their largest node,
    time limit and node memory (the last two optional)."""
    shapes: dict[str, list[tuple]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        cpus = 0 if "+" in parts[1] else int(re.sub(r"\D", "", parts[1]) or 0)  # "32+": sizes vary
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", parts[2]))
        features = {f for f in parts[3].split(",") if f and f != "(null)"}
        limit = slurm_minutes(parts[4]) if len(parts) > 4 else 0
        mem = 0 if len(parts) < 6 or "+" in parts[5] else int(re.sub(r"\D", "", parts[5]) or 0)
        shapes.setdefault(parts[0].rstrip("*"), []).append(
            (cpus, gpus, features, parts[0].endswith("*"), limit, mem)
        )
    return {
        name: Partition(
            name,
            0 if any(r[0] == 0 for r in rows) else max(r[0] for r in rows),
            max(r[1] for r in rows),
            set().union(*(r[2] for r in rows)),
            default=any(r[3] for r in rows),
            max_time_min=max(r[4] for r in rows),
            mem_mb=0 if any(r[5] == 0 for r in rows) else max(r[5] for r in rows),
        )
        for name, rows in shapes.items()
    }


def read_partitions(timeout_s: float = 20.0) -> dict[str, Partition] | None:
    """The cluster's partitions from ``sinfo``; None when it cannot answer."""
    if not shutil.which("sinfo"):
        return None
    try:
        res = subprocess.run(
            ["sinfo", "-h", "-o", "%P|%c|%G|%f|%l|%m"], capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_sinfo(res.stdout) if res.returncode == 0 else None


def world_size(r: Resources) -> int:
    """Processes of a data-parallel job with resources ``r``: one per GPU (or tasks_per_node) per node."""
    return r.nodes * (r.tasks_per_node or max(1, r.gpus))


class Preflight:
    """Collects problems of the jobs a launch plans; ``finish()`` raises them all at once."""

    def __init__(self, cluster: str, *, plan: Plan | None = None):
        """``plan``: the launch's resolved configs (slurm.plan), shared with its launcher."""
        self.cluster = cluster  # slurm | local | debug
        self.plan = plan or Plan()
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.resources: list[tuple[str, Resources]] = []

    def _try(self, where: str, fn):
        try:
            return fn()
        except (ConfigError, ValueError, KeyError, FileNotFoundError) as e:
            self.errors.append(f"{where}: {e}")
            return None

    def _data(self, where: str, cfg) -> None:
        for name, v in dataset_paths(cfg):
            if not (path := resolve(v, self.plan.data_root)).exists():
                self.warnings.append(
                    f"{where}: {name} {path} is not visible from this host (fine if only the compute nodes "
                    "mount it)"
                )

    def load(self, suite: str | Suite) -> Suite | None:
        """``suite`` (a name, a path or a loaded one), its file's problems added to the errors."""
        if isinstance(suite, Suite):
            return suite
        problems: list[str] = []
        loaded = self._try(f"suite {suite}", lambda: load_suite(suite, problems=problems))
        self.errors += problems
        return loaded

    def suite(self, suite: str | Suite) -> Suite | None:
        """Load ``suite`` (a name, a path or a loaded one) and check every entry at every seed."""
        loaded = self.load(suite)
        if loaded is None:
            return None
        from slurm.launch import eval_tasks

        for e in loaded.entries:
            where = f"suite {loaded.name}: job {e.name} ({e.protocol} {e.preset})"
            tasks = eval_tasks(e)
            self._try(where, lambda e=e, tasks=tasks: cpus_per_task(e.resources, tasks))
            self.resources.append((where, e.resources))
            for seed in e.seeds:
                cfg = self._try(
                    where,
                    lambda e=e, seed=seed: self.plan.entry(e, seed),
                )
                if cfg is None:
                    break
                self._try(where, lambda e=e, seed=seed: check_name(f"{e.name}-s{seed}", "job name"))
                n = e.resources.nodes * tasks
                batch = getattr(cfg, "batch_size", None)
                if registry.get(e.protocol).global_batch and batch:
                    if batch % n:
                        self.errors.append(
                            f"{where}: batch_size={batch} is the global batch and must split over its {n} "
                            f"processes ({e.resources.nodes} node(s) x {tasks}); choose a multiple of {n}"
                        )
                self._data(where, resolve_fields(cfg, self.plan.data_root))
                if getattr(cfg, "backend", None) == "detectron2" and not detectron2_available():
                    self.warnings.append(
                        f"{where}: backend detectron2 is not installed on this host; the job fails unless "
                        "the compute nodes' environment has it (install it, or use backend=torchvision: "
                        "not the published implementation)"
                    )
                if getattr(cfg, "backend", None) == "transformers" and not transformers_available():
                    self.warnings.append(
                        f"{where}: transformers is not installed on this host; the job fails unless the "
                        "compute nodes' environment has it (pip install -e '.[detr]')"
                    )
        return loaded

    def sweep(self, path: str) -> list[tuple[str, list[str]]]:
        return self._try(f"sweep {path}", lambda: expand_sweep(path)) or []

    def pretraining(
        self, preset: str, overrides: list[str], resources: Resources, *, name: str, method: str = "swav"
    ) -> None:
        """A pretraining job of ``method`` (pretrain.methods): its config, its name, its node shape and its
        global batch at the job's world size (SwAV: against the preset's published one)."""
        from pretrain import methods

        where = f"pretraining {name} ({preset}{' ' + ' '.join(overrides) if overrides else ''})"
        self._try(where, lambda: check_name(name, "pretraining name"))
        tasks = resources.tasks_per_node or max(1, resources.gpus)
        self._try(where, lambda: cpus_per_task(resources, tasks))
        self.resources.append((where, resources))
        m = methods.get(method)
        cfg = self._try(where, lambda: self.plan.pretraining(method, preset, overrides))
        if cfg is not None:
            world = world_size(resources)
            self._try(f"{where} at {world} processes", lambda: m.check_world(cfg, world))
        data = m.data(cfg) if cfg is not None else "auto"
        if data not in SYNTHETIC_DATA and not (path := resolve(data, self.plan.data_root)).exists():
            self.warnings.append(
                f"{where}: data {path} is not visible from this host (fine if only the compute nodes "
                "mount it)"
            )

    def cluster_fit(
        self, partitions: dict[str, Partition] | None = None, *, site_partition: str = ""
    ) -> None:
        """Every job's partition (its own, else the cluster file's ``site_partition``, as it is submitted)
        exists and one of its nodes has the CPUs and GPUs the job asks per node (SLURM only; ``partitions``
        default: from sinfo, skipped with a warning when it does not answer)."""
        if self.cluster != "slurm" or not self.resources:
            return
        parts = partitions if partitions is not None else read_partitions()
        if parts is None:
            self.warnings.append("sinfo did not answer: partitions and node shapes were not checked")
            return
        default = next((p for p in parts.values() if p.default), None)
        for where, r in self.resources:
            asked = r.partition or site_partition
            names = [n for n in asked.split(",") if n]  # sbatch takes a list of partitions
            unknown = [n for n in names if n not in parts]
            if unknown:
                fix = (
                    "set resources.partition"
                    if r.partition
                    else "fix partition in the cluster file (slurm.site)"
                )
                self.errors.append(
                    f"{where}: partition {', '.join(unknown)} not found; the cluster has "
                    f"{', '.join(sorted(parts)) or 'none'} ({fix})"
                )
                continue
            if not names and default is None:
                self.warnings.append(f"{where}: no partition set and sinfo shows no default: not checked")
                continue
            candidates = [parts[n] for n in names] or [default]
            p = max(candidates, key=lambda c: (c.gpus, c.cpus))
            if (p.cpus and r.cpus > p.cpus) or r.gpus > p.gpus:
                self.errors.append(
                    f"{where}: asks {r.cpus} CPUs and {r.gpus} GPUs per node; the largest node of partition "
                    f"{p.name} has {p.cpus} CPUs and {p.gpus} GPUs"
                )
            asked = min(r.time_min, r.piece_min or r.time_min)
            if p.max_time_min and asked > p.max_time_min:
                self.errors.append(
                    f"{where}: asks {asked} min; partition {p.name} allows at most {p.max_time_min} "
                    f"(MaxTime), so it would stay PENDING: set resources.piece_min: {p.max_time_min} to run "
                    "it in pieces (it saves at each limit's warning and is requeued until done)"
                )
            if p.mem_mb and r.mem_gb * 1024 > p.mem_mb:
                self.errors.append(
                    f"{where}: asks {r.mem_gb} GB per node; the largest node of partition {p.name} has "
                    f"{p.mem_mb // 1024} GB: set resources.mem_gb"
                )
            wanted = {f for f in re.split(r"[&|,()\[\]*\d]+", r.constraint) if f}
            if wanted and not wanted & p.features:
                self.warnings.append(
                    f"{where}: constraint {r.constraint!r} names no feature of partition {p.name} "
                    f"({', '.join(sorted(p.features)) or 'none'})"
                )

    def accounts(self, site: Site, pairs: set[tuple[str, str]] | None = None) -> None:
        """Every job's account and QOS (after ``site``) are among this user's associations (SLURM only;
        ``pairs`` default: from sacctmgr, skipped with a warning when it does not answer)."""
        asked = {
            (o.get("account", ""), o.get("qos", "")): where
            for where, r in self.resources
            for o in [site.slurm_options(r)]
            if o.get("account") or o.get("qos")
        }
        if self.cluster != "slurm" or not asked:
            return
        pairs = pairs if pairs is not None else associations()
        if pairs is None:
            self.warnings.append("sacctmgr did not answer: accounts and QOS were not checked")
            return
        for (account, qos), where in asked.items():
            mine = sorted({a for a, _ in pairs})
            if account and account not in mine:
                self.errors.append(
                    f"{where}: account {account!r} is not one of yours ({', '.join(mine) or 'none'}; "
                    "sacctmgr show assoc): set --account or account: in the cluster file / resources"
                )
            elif qos and not any(q == qos for a, q in pairs if not account or a == account):
                allowed = sorted({q for a, q in pairs if q and (not account or a == account)})
                self.errors.append(
                    f"{where}: QOS {qos!r} is not allowed{' for account ' + account if account else ''} "
                    f"({', '.join(allowed) or 'none'}): set --qos or qos: in the cluster file / resources"
                )

    def finish(self, *, stream=None) -> None:
        """Print the warnings (to ``stream``, default: stderr as it is now, not as it was at import); raise
        PreflightError listing every error (nothing was submitted)."""
        stream = stream or sys.stderr
        for w in dict.fromkeys(self.warnings):
            print(f"warning: {w}", file=stream)
        if self.errors:
            lines = "\n".join(f"  - {e}" for e in dict.fromkeys(self.errors))
            raise PreflightError(f"{len(set(self.errors))} problem(s), nothing was submitted:\n{lines}")


def cluster_of(executor: str) -> str:
    """What ``executor`` submits to (auto: SLURM when sbatch exists)."""
    if executor != "auto":
        return executor
    return "slurm" if shutil.which("sbatch") else "local"
