"""``swavbench run``: the main job. SwAV pretraining and the supervised baseline on the same data (one
of each per seed), the suite on each of their checkpoints and on a random-init trunk of the same
architecture, then the report. Everything goes through the Launcher (local processes by default,
SLURM with afterok dependencies), so re-running skips what is done and continues what was cut off.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pretrain import methods
from slurm.launch import Launcher, Planned
from slurm.plan import Plan
from slurm.preflight import Preflight, cluster_of
from slurm.site import Site, load_site
from slurm.suite import Resources, Suite
from swavbench.core import registry
from swavbench.core.config import ConfigError, load_dataclass
from swavbench.core.data_root import dataset_paths
from swavbench.core.paths import CHECKPOINT, CONFIGS, RECORD, TRAIN_LOG

MAIN_CONFIGS = CONFIGS / "main"


@dataclass
class MainConfig:
    """What one ``swavbench run`` does (configs/main/<name>.yaml)."""

    pretrain: str = "cpu-small"  # SwAV preset (configs/pretrain/)
    pretrain_overrides: list[str] = field(default_factory=list)
    supervised: str = "cpu-small"  # supervised-baseline preset (configs/supervised/); "" = none
    supervised_overrides: list[str] = field(default_factory=list)
    random: bool = True  # evaluate a random-init trunk of the pretraining architecture
    # which protocols the random control runs: all, or frozen (those that do not fine-tune the trunk: the
    # control a paper-scale run can afford)
    random_protocols: str = "all"
    # a supervised trunk file (e.g. torchvision's published ResNet-50 weights, the paper's comparison)
    # evaluated as the supervised baseline instead of pretraining one from the ``supervised`` preset
    supervised_checkpoint: str = ""
    suite: str = "cpu-small"  # configs/suites/
    seeds: list[int] = field(default_factory=lambda: [0])  # one pretraining (and evaluation) seed per entry
    executor: str = "local"  # local | slurm | debug | auto
    max_parallel: int = 2  # local executor: jobs at once (2 cores here)
    supervised_resources: Resources = field(default_factory=lambda: Resources(cpus=2, mem_gb=8, time_min=60))

    @property
    def trains_supervised(self) -> bool:
        """Whether the supervised baseline is pretrained here (a preset and no trunk file given)."""
        return bool(self.supervised) and not self.supervised_checkpoint


def trunk_suite(suite: Suite, label: str, seed: int, *, extra: list[str]) -> Suite:
    """The suite for the trunk of pretraining seed ``seed``: report label and architecture overrides on every
    entry. An entry of one seed runs at ``seed``; an entry of several (a published mean of runs, as VOC07+12
    detection's 5) runs all of them on every trunk, named apart by the trunk's seed."""
    entries = []
    for e in suite.entries:
        own = len(e.seeds) > 1
        entries.append(
            dataclasses.replace(
                e,
                name=f"{e.name}-p{seed}" if own else e.name,
                overrides=[*e.overrides, *extra, f"trunk.label={label}"],
                seeds=list(e.seeds) if own else [seed],
            )
        )
    return dataclasses.replace(suite, entries=entries)


def control_suite(suite: Suite, protocols: str, *, smoke: set[str]) -> Suite:
    """A control trunk's suite (random, supervised): every entry, or (``frozen``) those whose protocol does
    not fine-tune the trunk; never the ``smoke`` checks, which rank nothing (the SwAV trunk runs them)."""
    keep = [e for e in suite.entries if e.name not in smoke]
    if protocols == "frozen":
        keep = [e for e in keep if not registry.get(e.protocol).fine_tunes]
    kept: list = []  # an entry after one left out goes too (suite order: the earlier first)
    for e in keep:
        if not e.after or e.after in {k.name for k in kept}:
            kept.append(e)
    return dataclasses.replace(suite, entries=kept)


def smoke_checks(suite: Suite, plan: Plan, seed: int) -> set[str]:
    """Names of the suite's smoke checks (``smoke: true`` presets), read from the SwAV trunk's own resolved
    configs (no resolution of their own); an entry that does not resolve is preflight's to report."""
    names = set()
    for e, job in zip(suite.entries, trunk_suite(suite, "swav", seed, extra=[]).entries):
        try:
            if getattr(plan.entry(job, job.seeds[0]), "smoke", False):
                names.add(e.name)
        except (ConfigError, ValueError, KeyError, FileNotFoundError):
            continue
    return names


class Progress:
    """One status line for the whole run: stage, percent of the expected work done (a pretraining job
    weighs PRETRAIN_WEIGHT evaluations and advances with its epochs), jobs done, what runs, ETA."""

    PRETRAIN_WEIGHT = 10.0

    def __init__(self, *, enabled: bool = True):
        self.launcher: Launcher | None = None  # finished jobs are read from its submitit handles
        self.planned: list[Planned] = []
        self.epochs: dict[str, int] = {}
        self.expected_evals = 0
        self.t0 = time.time()
        self.bar = tqdm(
            total=1,
            desc="swavbench run",
            disable=not enabled,
            bar_format="{desc} {percentage:3.0f}%|{bar:20}| [{elapsed}<{remaining}{postfix}]",
        )

    def add(self, planned: list[Planned], epochs: dict[str, int] | None = None) -> None:
        known = {p.key for p in self.planned}
        self.planned += [p for p in planned if p.key not in known]
        self.epochs.update(epochs or {})
        self.update()

    def fraction(self, p: Planned) -> float:
        out = Path(p.out_dir)
        if p.kind == "eval":
            return 1.0 if (out / RECORD).is_file() else 0.0
        job = self.launcher.jobs.get(p.key) if self.launcher is not None else None
        if p.action == "done" or (job is not None and job.done()):
            return 1.0
        log = out / TRAIN_LOG
        if log.is_file() and p.name in self.epochs:
            lines = log.read_text().strip().splitlines()
            try:
                return min(0.99, json.loads(lines[-1])["epoch"] / self.epochs[p.name]) if lines else 0.0
            except (ValueError, KeyError):
                return 0.0
        return 0.0

    def update(self) -> None:
        done = [self.fraction(p) for p in self.planned]
        weights = [self.PRETRAIN_WEIGHT if p.kind == "pretrain" else 1.0 for p in self.planned]
        pending_evals = max(0, self.expected_evals - sum(p.kind == "eval" for p in self.planned))
        running = [
            p.name for p, f in zip(self.planned, done) if 0 < f < 1 or (f == 0 and p.action == "submitted")
        ]
        stage = (
            "pretraining"
            if any(p.kind == "pretrain" and f < 1 for p, f in zip(self.planned, done))
            else "evaluating"
        )
        self.bar.total = sum(weights) + pending_evals
        self.bar.n = sum(w * f for w, f in zip(weights, done))
        finished = sum(f >= 1 for f in done)
        self.bar.set_description(f"swavbench run [{stage}]", refresh=False)
        now = ", ".join(running[:2]) + (" ..." if len(running) > 2 else "")
        self.bar.set_postfix_str(
            f"{finished}/{len(self.planned) + pending_evals} jobs done" + (f"; {now}" if now else ""),
            refresh=False,
        )
        self.bar.refresh()

    def close(self) -> None:
        self.update()
        self.bar.close()


@dataclass(frozen=True)
class Pretraining:
    """A trunk the main job pretrains: the method, its preset and overrides, resources, job name, seed."""

    method: str
    preset: str
    overrides: list[str]
    resources: Resources
    name: str
    seed: int


def pretrainings(cfg: MainConfig, suite: Suite | None) -> list[Pretraining]:
    """SwAV for each seed and, unless a supervised checkpoint is given, the supervised baseline."""
    out = []
    for seed in cfg.seeds:
        swav = suite.pretrain if suite is not None else Resources()
        over = [*cfg.pretrain_overrides, f"run.seed={seed}"]
        out.append(Pretraining("swav", cfg.pretrain, over, swav, f"swav-s{seed}", seed))
        if cfg.trains_supervised:
            over = [*cfg.supervised_overrides, f"run.seed={seed}"]
            res = cfg.supervised_resources
            out.append(Pretraining("supervised", cfg.supervised, over, res, f"supervised-s{seed}", seed))
    return out


def evaluated_trunks(cfg: MainConfig, suite: Suite | None, plan: Plan) -> list[tuple[str, Suite, list[str]]]:
    """(label, its suite, its overrides) of each trunk evaluated: SwAV's, the supervised and random
    controls'. The trunks not pretrained here take the SwAV trunk's architecture."""
    if suite is None:
        return []
    try:
        m = plan.pretraining(
            "swav", cfg.pretrain, [*cfg.pretrain_overrides, f"run.seed={cfg.seeds[0]}"]
        ).model
        arch = [
            f"trunk.arch={m.arch}",
            f"trunk.small_stem={str(m.small_stem).lower()}",
            f"trunk.width_multiplier={m.width_multiplier}",
        ]
    except (ConfigError, ValueError, KeyError, FileNotFoundError):
        arch = []  # the preflight says why
    smoke = smoke_checks(suite, plan, cfg.seeds[0])
    trunks = [("swav", suite, [])]
    if cfg.supervised or cfg.supervised_checkpoint:
        trunks.append(
            ("supervised", control_suite(suite, "all", smoke=smoke), [] if cfg.trains_supervised else arch)
        )
    if cfg.random:
        trunks.append(("random", control_suite(suite, cfg.random_protocols, smoke=smoke), arch))
    return trunks


def preflight(
    cfg: MainConfig, check: Preflight, pretrains: list[Pretraining], *, trunks: list, site: Site
) -> None:
    """Every job as it will be submitted, before any submission (``Preflight.finish`` raises)."""
    for p in pretrains:
        check.pretraining(p.preset, p.overrides, p.resources, name=p.name, method=p.method)
    if cfg.supervised_checkpoint and not Path(cfg.supervised_checkpoint).expanduser().is_file():
        check.errors.append(
            f"supervised_checkpoint {cfg.supervised_checkpoint} is not a file: give the supervised trunk's "
            "weights (e.g. torchvision's resnet50 .pth), or leave it empty to pretrain the baseline"
        )
    for seed in cfg.seeds:
        for label, its_suite, extra in trunks:
            check.suite(trunk_suite(its_suite, label, seed, extra=extra))
    check.cluster_fit(site_partition=site.partition)
    check.accounts(site)
    check.finish()


def run_main(
    cfg: MainConfig,
    out: str | Path,
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    executor: str | None = None,
    suite: Suite | None = None,
    plan: Plan | None = None,
    site: Site | None = None,
) -> dict:
    """Submit (or skip, when done) every job of the main job, wait for them, return {'planned', 'failed',
    'jobs_dir'}. Datasets are read under the data root of this process (``swavbench.core.data_root``)."""
    out = Path(out)
    plan = plan or Plan()  # every config resolved once: preflight, keys and jobs read the same
    check = Preflight(cluster_of(executor or cfg.executor), plan=plan)  # every job, before any submission
    suite = check.load(suite if suite is not None else cfg.suite)
    pretrains, trunks, site = (
        pretrainings(cfg, suite),
        evaluated_trunks(cfg, suite, plan),
        site or load_site(),
    )
    preflight(cfg, check, pretrains, trunks=trunks, site=site)
    bar = Progress(enabled=progress and not dry_run)
    runs = [len(e.seeds) if len(e.seeds) > 1 else 1 for _, its, _ in trunks for e in its.entries]
    bar.expected_evals = len(cfg.seeds) * sum(runs)
    launcher = Launcher(
        out / "jobs",
        executor or cfg.executor,
        force=force,
        dry_run=dry_run,
        max_parallel=cfg.max_parallel,
        on_wait=bar.update,
        plan=plan,
        site=site,
    )
    bar.launcher = launcher
    launcher.on_planned = bar.add  # every suite's jobs join the progress line as soon as they are planned
    for p in pretrains:  # a folder holding another configuration stops the run before any submission
        launcher.check_pretrain(p.preset, p.overrides, name=p.name, method=p.method)
    jobs = []
    for p in pretrains:
        job = launcher.pretrain_job(p.preset, p.overrides, p.resources, name=p.name, method=p.method)
        epochs = plan.pretraining("swav", p.preset, p.overrides).optim.epochs if p.method == "swav" else None
        bar.add([job], {job.name: epochs} if epochs is not None else None)
        jobs.append((job, p))
    planned = [job for job, _ in jobs]
    given = {"random": "random", "supervised": str(Path(cfg.supervised_checkpoint).expanduser().resolve())}
    trained = {p.method for p in pretrains}
    for label, its_suite, extra in trunks:  # the trunks not pretrained here need no waiting
        if label != "swav" and label not in trained:
            for seed in cfg.seeds:
                planned += launcher.suite(
                    trunk_suite(its_suite, label, seed, extra=extra), given[label], prefix=f"{label}-"
                )
    failed: list[str] = []
    planned += evaluate_pretrained(launcher, jobs, trunks, failed=failed, dry_run=dry_run)
    if not dry_run:
        for key, outcome in launcher.wait().items():
            if outcome != "ok":
                failed.append(f"{launcher.state['jobs'].get(key, {}).get('name', key[:8])}: {outcome}")
    bar.close()
    return {
        "planned": planned,
        "failed": failed,
        "jobs_dir": out / "jobs",
        "gpu_hours": sum(p.gpu_hours for p in planned),
        "elapsed_s": time.time() - bar.t0,
    }


def evaluate_pretrained(
    launcher: Launcher,
    jobs: list[tuple[Planned, Pretraining]],
    trunks: list,
    *,
    failed: list[str],
    dry_run: bool,
) -> list[Planned]:
    """Each pretrained trunk's evaluations: on SLURM after its job (afterok), elsewhere once it finished
    (a failed pretraining is added to ``failed`` and its evaluations left out)."""
    planned, suites = [], {label: its_suite for label, its_suite, _ in trunks}
    slurm = launcher.cluster() == "slurm"
    for job, p in jobs:
        after = job.job_id if slurm and job.action in ("submitted", "live") else ""
        if not slurm and not dry_run and job.action in ("submitted", "live"):
            try:
                launcher.finished(job)
            except Exception as e:  # noqa: BLE001 - report it, evaluate the other trunks
                last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
                failed.append(f"{job.name}: {type(e).__name__}: {last}")
                continue
        planned += launcher.suite(
            trunk_suite(suites[p.method], p.method, p.seed, extra=[]),
            str(Path(job.out_dir) / CHECKPOINT),
            checkpoint_id=job.key,
            expect={"key": job.key, "epochs": job.epochs, "max_iters": job.max_iters},
            after=after,
            prefix=f"{p.method}-",
        )
    return planned


def datasets_of(cfg) -> set[str]:
    """The data-root folders a protocol config reads (first component of each relative dataset path)."""
    return {Path(v).parts[0] for _, v in dataset_paths(cfg) if not Path(v).expanduser().is_absolute()}


@dataclass
class DataPlan:
    """What ``swavbench run`` can evaluate with the data at hand: the suite without the protocols whose
    data is missing, whether the supervised baseline runs, and one line per dataset prepared or missing."""

    suite: Suite
    supervised: bool
    lines: list[str]


def plan_data(
    cfg: MainConfig,
    *,
    archives: dict[str, Path] | None = None,
    offline: bool = False,
    plan: Plan | None = None,
) -> DataPlan:
    """Local runs without ``../shared/data``: build the demo datasets into a cache (``swavbench.demo_data``)
    and make it the data root, then drop what still lacks data, naming it. With the data present (or another
    --data-root / $SWAVBENCH_DATA), nothing changes. ``plan``: the run's resolved configs (slurm.plan)."""
    plan = plan or Plan()
    from slurm.suite import load_suite
    from swavbench import demo_data
    from swavbench.core import data_root as roots

    suite = load_suite(cfg.suite)
    needs = {}
    for e in suite.entries:
        needs[e.name] = datasets_of(plan.entry(e, e.seeds[0]))
    sup_needs = set()
    if cfg.trains_supervised:
        from pretrain.train import AUTO_DATASET

        sup = plan.pretraining("supervised", cfg.supervised, cfg.supervised_overrides)
        data = methods.get("supervised").data(sup)
        data = AUTO_DATASET if data == "auto" else data  # auto without it: generated, unlabelled-like
        if data != "generated" and not Path(data).expanduser().is_absolute():
            sup_needs = {Path(data).parts[0]}
    wanted = set().union(*needs.values(), sup_needs)
    root, source = plan.data_root, roots.data_root()[1]
    missing = {d for d in wanted if not (root / d).exists()}
    lines: list[str] = []
    demo = sorted(missing & set(demo_data.SOURCES))
    if demo and source != f"${roots.ENV}":  # the default root lacks them: the cache takes over
        cache = demo_data.CACHE
        lines.append(f"{', '.join(demo)} not under {root}: preparing the demo data in {cache}")
        status = demo_data.prepare(cache, demo, archives=archives, offline=offline)
        for d in wanted - set(demo):  # what the default root has stays visible from the cache root
            if (root / d).exists() and not (cache / d).exists():
                (cache / d).symlink_to((root / d).resolve(), target_is_directory=True)
        plan.data_root = cache.resolve()  # the jobs read it (and this process, for the report's run)
        roots.set_data_root(cache)
        lines += [f"{d}: {msg}" for d, msg in status.items() if msg not in ("ready",)]
        root = cache
        missing = {d for d in wanted if not (root / d).exists()}
    keep = [e for e in suite.entries if not needs[e.name] & missing]
    for e in suite.entries:
        if lost := sorted(needs[e.name] & missing):
            lines.append(f"skipped: {e.name} ({e.protocol} {e.preset}): no {', '.join(lost)} under {root}")
    supervised = bool(cfg.supervised) and not sup_needs & missing
    if cfg.supervised and not supervised:
        lost = ", ".join(sorted(sup_needs))
        lines.append(f"skipped: the supervised baseline {cfg.supervised}: no {lost} under {root}")
    return DataPlan(dataclasses.replace(suite, entries=keep), supervised, lines)


def load_main_config(preset: str, overrides: list[str]) -> MainConfig:
    cfg = load_dataclass(MainConfig, MAIN_CONFIGS, preset, overrides=overrides)
    if cfg.random_protocols not in ("all", "frozen"):
        raise ConfigError(f"random_protocols must be all or frozen, got {cfg.random_protocols!r}")
    return cfg
