"""Submit suites, pretrain -> evaluate pipelines and sweeps through submitit (SLURM, local or
debug executor, one code path), idempotently: every job has a key from (checkpoint sha256 or
pretraining-config hash, protocol, protocol-config hash, seed); a job whose record says ok is
skipped, a queued or running copy is never submitted twice, failed or missing ones are
re-submitted. Everything a launch did is in ``RUN_DIR/launch.json``.

Relaunch safety: one launcher at a time per run directory (a lease that holds across hosts; a second
one waits, then stops with a message); every submission is recorded with a tag derived from (run
directory, job keys) *before* it is made and found again by that tag (SLURM job comment, local process
environment) if the launcher died before saving the job id, or launch.json was lost; --force cancels the
run's live jobs before submitting their replacements; a scheduler that cannot answer stops the launch
instead of reading as "nothing runs"; a pretraining folder holds one configuration (another one is
refused, naming the differences)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import submitit

from benchmark.feature_cache import CACHE_ENV
from benchmark.trunk import sha256_of
from pretrain import methods
from slurm import lease
from slurm.plan import Plan
from slurm.scheduler import (
    FINISHED_STATES,
    Scheduler,
    SchedulerUnavailable,
    job_tag,
    max_array_size,
    tagged_environment,
)
from slurm.site import Site, load_site
from slurm.suite import Resources, Suite, cpus_per_task, pieces
from swavbench.core import durable, interrupt, registry, tracking
from swavbench.core.config import dataclass_from_dict, differences
from swavbench.core.data_root import set_data_root
from swavbench.core.environment import temporary_environment
from swavbench.core.paths import (
    ARRAYS,
    CHECKPOINT,
    LAUNCH_LOCK,
    LAUNCH_STATE,
    PRETRAIN_SETTINGS,
    RECORD,
    REPLACED,
    epoch_checkpoint,
)

__all__ = ["FINISHED_STATES", "LaunchBusy", "Launcher", "SchedulerUnavailable", "SubmissionFailed"]


class LaunchBusy(RuntimeError):
    """Another launcher holds the run directory."""


class SubmissionFailed(RuntimeError):
    """The scheduler refused a submission (sbatch error: partition, account, limits)."""


def _submission_failed(name: str, e: Exception) -> SubmissionFailed:
    detail = str(e).strip().splitlines()
    return SubmissionFailed(
        f"the scheduler refused job {name}: {detail[-1] if detail else type(e).__name__}. Jobs submitted "
        "before it keep running; fix the cause (partition, account, limits in the suite's resources) and "
        "launch again: what was submitted is adopted, not submitted twice"
    )


class ConfigConflict(ValueError):
    """A pretraining folder holds a run of another configuration."""


def read_settings(path: Path) -> dict:
    """A pretraining folder's settings.json, or ConfigConflict naming it and the fix when it does not parse
    (it is written atomically: a damaged one was edited or copied by hand)."""
    try:
        held = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        held = e
    if isinstance(held, dict):
        return held
    why = held if isinstance(held, Exception) else "not a mapping"
    raise ConfigConflict(
        f"{path} is not the settings of a pretraining ({why}). Nothing was submitted. Restore it, or "
        "remove it: the folder's checkpoint is then checked against the configuration instead"
    )


_HELD: dict[Path, list] = {}  # run directory -> [its lease, launchers of this process using it]


def _lock_run_dir(run_dir: Path, *, wait_s: float) -> Path:
    """Hold ``run_dir``'s launch lease (slurm.lease: it holds across hosts, on any shared filesystem).
    Launchers of one process share it; another process waits up to ``wait_s``, then LaunchBusy names the
    holder."""
    key = run_dir.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return key
    run_dir.mkdir(parents=True, exist_ok=True)

    def waiting(holder: str) -> None:
        print(f"swavbench launch: waiting for {holder} to finish with {run_dir}", flush=True)

    try:
        held = lease.acquire(run_dir / LAUNCH_LOCK, wait_s=wait_s, on_wait=waiting)
    except lease.LeaseBusy as e:
        raise LaunchBusy(
            f"{run_dir} is being launched by {e}; two launchers at once could submit the same jobs twice. "
            f"Wait for it to finish (watch it with: swavbench status {run_dir}) and launch again: what it "
            f"submitted is then skipped or adopted. If that launcher is gone, its lease "
            f"{run_dir / LAUNCH_LOCK} is taken over {lease.STALE_S:.0f} s after its last heartbeat"
        ) from None
    _HELD[key] = [held, 1]
    return key


def _check_lease(key: Path | None) -> None:
    """Refuse to submit once another launcher has taken this one's lease over (it looked dead to it)."""
    held = _HELD.get(key) if key is not None else None
    if held is not None and held[0].lost:
        raise LaunchBusy(
            f"another launcher took over the launch lease of {key} (this one sent no heartbeat for "
            f"{lease.STALE_S:.0f} s): stopped before submitting more; what was submitted is in launch.json"
        )


def _unlock_run_dir(key: Path) -> None:
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]
        held[0].release()


def read_launch_state(path: Path) -> dict:
    """``RUN_DIR/launch.json`` ({"jobs": {}} when absent); a damaged file is a ValueError naming it and the
    fix, before anything is submitted."""
    if not path.is_file():
        return {"jobs": {}}
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("jobs"), dict):
            raise ValueError("it holds no 'jobs' mapping")
    except (ValueError, OSError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(
            f"{path} is damaged ({e}); it records what this run directory submitted, so nothing was "
            "submitted. Restore it from a backup, or, after cancelling this run's queued and running jobs "
            f"(squeue / scancel), move it aside and launch again: finished evaluations and pretrainings are "
            "kept by their records and checkpoints"
        ) from None
    return state


def stable_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def eval_tasks(entry) -> int:
    """Processes per node of a suite entry's job: one per reserved GPU for a data-parallel protocol (they
    join one group; ``resources.tasks_per_node`` overrides, e.g. CPU processes), else one."""
    if not registry.get(entry.protocol).data_parallel:
        return 1
    return entry.resources.tasks_per_node or max(1, entry.resources.gpus)


def max_gpu_hours(r: Resources) -> float:
    return r.gpus * r.nodes * r.time_min / 60


def describe(r: Resources) -> str:
    split = f" in {pieces(r)} pieces of {r.piece_min}min" if pieces(r) > 1 else ""
    return (
        f"nodes={r.nodes} gpus/node={r.gpus} cpus={r.cpus} mem={r.mem_gb}G time={r.time_min}min{split} "
        f"(<= {max_gpu_hours(r):g} GPU-h)"
    )


def retry_requeue(env, delays: tuple[float, ...] = (1.0, 2.0, 4.0)) -> None:
    """Make submitit's ``scontrol requeue`` (one try) retry with pauses: a controller busy at the moment of
    a preemption must not lose the job. ``env``: the job environment submitit's signal handler uses."""
    if env is None or getattr(env, "_requeue_retries", False) or not hasattr(env, "_requeue"):
        return
    once = env._requeue

    def requeue(countdown: int) -> None:
        for delay in (*delays, None):
            try:
                return once(countdown)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
                if delay is None:
                    raise
                print(f"scontrol requeue failed ({e}); trying again in {delay:g} s", flush=True)
                time.sleep(delay)

    env._requeue, env._requeue_retries = requeue, True


def run_interruptible(job, work, *, cooperative: bool):
    """Run ``work()`` inside a submitit job; every interruption (time limit or preemption) counts
    against ``job.max_requeues``. ``cooperative``: the scheduler's warning signal only asks the loops to
    save at their next step boundary (swavbench.core.interrupt), then this job is requeued through submitit
    (its ``checkpoint()``: the same callable, which continues from the saved state); if no loop takes the
    request within ``interrupt`` grace (set-up, feature extraction, evaluation), submitit's handler
    requeues it at once and it restarts from its last saved state. Not cooperative (the protocol keeps no
    state within an epoch): submitit's handler requeues the job at the signal. On SLURM, SIGTERM (how
    preemption usually arrives) does the same as the warning signal, and the requeue is retried."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return work()
    sig = env._usr_sig()
    limit = getattr(job, "max_requeues", 3)
    # on SLURM, preemption often sends only SIGTERM (USR2 needs PreemptParameters=send_user_signal): it
    # asks for the same save-and-requeue as the time-limit warning
    also = (signal.SIGTERM,) if env.cluster == "slurm" else ()

    def count(e: object) -> None:
        job.interruptions = getattr(job, "interruptions", 0) + 1
        if job.interruptions > limit:
            raise RuntimeError(
                f"{e}; interrupted {job.interruptions} times (time limits and preemptions), more than "
                f"max_requeues={limit}: not requeued. Launch again to continue from the saved state"
            )
        print(f"{e}; requeued ({job.interruptions} of at most {limit})", flush=True)

    submitit_handler = signal.getsignal(sig)
    retry_requeue(getattr(getattr(submitit_handler, "__self__", None), "env", None))

    def requeue_now(signum: int, frame) -> None:  # submitit: checkpoint() -> this callable, requeue, exit
        count(f"signal {signal.Signals(signum).name} outside a step boundary")
        if callable(submitit_handler):
            submitit_handler(signum, frame)

    if not cooperative:
        for s in (sig, *also):
            signal.signal(s, requeue_now)
        return work()
    fallback = requeue_now if env.global_rank == 0 else None
    with interrupt.cooperative(sig, also=also, fallback=fallback, grace_s=20.0 if also else 45.0) as requeue:
        try:
            return work()
        except interrupt.Interrupted as e:
            count(e)
            if env.global_rank != 0:  # rank 0 requeues the job, which ends this task too
                time.sleep(600)
                raise
            if callable(requeue):
                requeue(sig, None)
            raise


class CheckpointMismatch(RuntimeError):
    """The checkpoint an evaluation job finds is not the one it was launched for."""


def check_identity(path: str, expect: dict | None) -> None:
    """CheckpointMismatch unless ``path`` is the checkpoint the job was launched for: a file's sha256, or a
    pipeline's pretraining (its folder's key) at the epoch it evaluates (``epochs``: finished, ``epoch``: an
    intermediate checkpoint). A --force re-run or a replaced file must never be evaluated in its place."""
    from swavbench.core.state import CheckpointError, load_checkpoint

    if not expect or path == "random":
        return
    where = f"{path} is not the checkpoint this evaluation was launched for"
    if "sha256" in expect and (got := sha256_of(path)) != expect["sha256"]:
        raise CheckpointMismatch(
            f"{where}: its sha256 is {got[:12]}..., it was {expect['sha256'][:12]}... at launch (the file "
            "was replaced); launch again to evaluate the new file"
        )
    if "key" not in expect:
        return
    settings = Path(path).parent / PRETRAIN_SETTINGS
    held = read_settings(settings).get("key") if settings.is_file() else expect["key"]
    if held != expect["key"]:
        raise CheckpointMismatch(f"{where}: {settings} names another pretraining configuration ({held})")
    try:
        ckpt = load_checkpoint(path, mmap=True)  # its epoch only: the job reads the weights next
    except CheckpointError as e:
        raise CheckpointMismatch(f"{where}: {e}") from None
    epoch, iteration = ckpt.get("epoch", -1), ckpt.get("iteration", 0)
    if "epoch" in expect and epoch != expect["epoch"]:
        raise CheckpointMismatch(f"{where}: it is from epoch {epoch}, the job evaluates {expect['epoch']}")
    capped = bool(expect.get("max_iters") and iteration >= expect["max_iters"])
    done = epoch >= expect.get("epochs", 0) or capped
    if not done:
        raise CheckpointMismatch(
            f"{where}: its pretraining is at epoch {epoch} of {expect['epochs']} (re-run or still running); "
            "launch again once it has finished"
        )


class OlderJob(RuntimeError):
    """A job pickled by an earlier swav-bench, whose layout this version does not read."""


def current_layout(job: object, fields: tuple[str, ...]) -> None:
    """Refuse a requeued job that an earlier swav-bench pickled (it lacks ``fields``) with the fix: launch
    again, which resubmits it under this version (the run continues from its saved state)."""
    if missing := [f for f in fields if f not in vars(job)]:
        raise OlderJob(
            f"{type(job).__name__} for {getattr(job, 'out_dir', '?')} was submitted by an earlier swav-bench "
            f"(it has no {', '.join(missing)}): run the same launch command again to resubmit it under "
            "this version; it continues from its saved state"
        )


class EvalJob(submitit.helpers.Checkpointable):
    """One protocol run; what submitit pickles and runs on the node. On timeout or preemption it is
    requeued (at most max_requeues times, both counted): protocols with state (linear, semi-supervised,
    detection) save it at the signal and continue from it; the others restart."""

    def __init__(
        self,
        protocol: str,
        preset: str,
        overrides: list[str],
        *,
        seed: int,
        checkpoint: str,
        out_dir: str,
        data_root: str = "",
        max_requeues: int = 3,
        config: dict | None = None,
        expect: dict | None = None,
    ):
        """``config``: the resolved protocol config (``asdict``) frozen at launch: the job and every requeue
        of it run exactly that, whatever happens to the preset files meanwhile. ``expect``: the identity of
        the checkpoint it evaluates (check_identity)."""
        self.protocol, self.preset, self.overrides, self.seed = protocol, preset, overrides, seed
        self.config, self.expect = config, expect
        # not ``self.checkpoint``: that name is submitit's requeue method (Checkpointable.checkpoint)
        self.trunk_checkpoint, self.out_dir, self.data_root = checkpoint, out_dir, data_root
        self.max_requeues, self.interruptions = max_requeues, 0

    def __call__(self) -> dict:
        job_logging()
        export_job_environment()  # the tasks of a data-parallel protocol join one group
        current_layout(self, ("trunk_checkpoint", "data_root", "config", "expect"))
        if self.data_root:
            set_data_root(self.data_root)
        check_identity(self.trunk_checkpoint, self.expect)
        entry = registry.get(self.protocol)
        cfg = (
            dataclass_from_dict(entry.implementation(self.config.get("backend")).config_type(), self.config)
            if self.config
            else Plan().protocol(self.protocol, self.preset, self.overrides, seed=self.seed)
        )
        # the run's frozen-feature protocols share their features (benchmark/feature_cache.py)
        run_dir = Path(self.out_dir).resolve().parents[1]
        shared = {CACHE_ENV: os.environ.get(CACHE_ENV) or str(run_dir / "features"), **wandb_group(run_dir)}
        with temporary_environment(shared):
            record = run_interruptible(
                self,
                lambda: entry.runner()(cfg, self.trunk_checkpoint, self.out_dir),
                cooperative=entry.resumable,
            )
        return record.metrics


def job_logging() -> None:
    """Inside a job: INFO messages (resumed from which checkpoint, unreadable files set aside) go to the
    job's log, as they do on the command line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


GROUP_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def export_job_environment() -> None:
    """Inside a submitit job: the process-group variables are the job's own, never inherited from the
    shell that launched it (SLURM exports the submitting environment). A multi-task job gets RANK /
    LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT from submitit's JobEnvironment, so the training code
    joins the process group as under torchrun; a one-task job gets none (it runs alone)."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return
    for name in GROUP_VARIABLES:
        os.environ.pop(name, None)
    if env.num_tasks <= 1:
        return
    os.environ.update(
        RANK=str(env.global_rank),
        LOCAL_RANK=str(env.local_rank),
        WORLD_SIZE=str(env.num_tasks),
        LOCAL_WORLD_SIZE=str(env.num_tasks // max(1, env.num_nodes)),
        MASTER_ADDR=env.hostnames[0] if env.hostnames else "127.0.0.1",
    )
    # SLURM_JOB_ID differs between the tasks of an array (job_id is "<array>_<task>" for all of them)
    job = os.environ.get("SLURM_JOB_ID", "") or str(env.job_id).split("_")[0]
    os.environ["MASTER_PORT"] = str(20000 + int(job) % 20000 if job.isdigit() else 29500)


def wandb_group(run_dir: Path) -> dict[str, str]:
    """A job's W&B group (with W&B on): the one its environment names, else its run directory's name, so
    a run directory or a sweep is one group whichever launcher in whichever process submitted its jobs."""
    return {tracking.GROUP_ENV: os.environ.get(tracking.GROUP_ENV) or run_dir.name}


class PretrainJob(submitit.helpers.Checkpointable):
    """A pretraining of one method (``pretrain.methods``: SwAV or the supervised baseline) that resumes from
    its own checkpoint: at the scheduler's signal it saves at the next step and is requeued through
    ``checkpoint()`` (inherited: this same callable)."""

    def __init__(
        self,
        preset: str,
        overrides: list[str],
        out_dir: str,
        *,
        method: str = "swav",
        data_root: str = "",
        max_requeues: int = 3,
        settings: dict | None = None,
    ):
        """``settings``: the resolved config frozen at launch (``pretrain_settings``); requeues run it too."""
        self.preset, self.overrides, self.out_dir, self.method = preset, overrides, out_dir, method
        self.settings = settings
        self.data_root, self.max_requeues, self.interruptions = data_root, max_requeues, 0

    def __call__(self) -> str:
        job_logging()
        export_job_environment()
        current_layout(self, ("method", "data_root", "settings"))
        if self.data_root:
            set_data_root(self.data_root)
        method = methods.get(self.method)
        cfg = (
            method.from_settings(self.settings) if self.settings else method.load(self.preset, self.overrides)
        )
        work = lambda: str(method.run(cfg, self.out_dir))  # noqa: E731
        with temporary_environment(wandb_group(Path(self.out_dir).resolve().parent)):
            return run_interruptible(self, work, cooperative=True)


def pretrain_settings(plan: Plan, preset: str, overrides: list[str], *, method: str) -> tuple[dict, int, int]:
    """(config as frozen at launch, number of epochs, iteration cap or 0) of a pretraining preset."""
    m = methods.get(method)
    cfg = plan.pretraining(method, preset, overrides)
    return (m.settings(cfg), *m.schedule(cfg))


@dataclass
class Planned:
    name: str
    key: str
    kind: str  # eval | pretrain
    out_dir: str
    action: str = ""  # submitted | done | live | dry-run
    job_id: str = ""
    depends_on: str = ""
    resources: str = ""
    gpu_hours: float = 0.0  # upper bound: gpus x nodes x time limit
    epochs: int = 0  # pretraining: the epochs its checkpoint must reach to count as done
    max_iters: int = 0  # pretraining: ... or these iterations (run.max_iters; 0: none)
    protocol: str = ""  # evaluation: its implementation's registry name (detr apart from detection)


def pretraining_done(out: Path, epochs: int, max_iters: int = 0) -> bool:
    """The run in ``out`` reached ``epochs``, or ``max_iters`` iterations (its latest checkpoint says so)."""
    from swavbench.core.state import CheckpointError, load_checkpoint

    if not (out / CHECKPOINT).is_file():
        return False
    try:
        ckpt = load_checkpoint(out / CHECKPOINT)
        return ckpt["epoch"] >= epochs or bool(max_iters and ckpt.get("iteration", 0) >= max_iters)
    except (CheckpointError, KeyError):
        return False


def pretraining_progress(out: Path) -> str:
    from swavbench.core.state import CheckpointError, load_checkpoint

    try:
        return f"its checkpoint is at epoch {load_checkpoint(out / CHECKPOINT)['epoch']}"
    except (CheckpointError, KeyError):
        return "no readable checkpoint"


class Launcher:
    """Submits jobs of one run directory and keeps its launch.json."""

    def __init__(
        self,
        run_dir: str | Path,
        executor: str = "auto",
        *,
        force: bool = False,
        dry_run: bool = False,
        max_requeues: int = 3,
        max_parallel: int = 0,
        on_wait=None,
        lock_wait_s: float = 60.0,
        squeue_retry_delays: tuple[float, ...] | None = None,
        plan: Plan | None = None,
        site: Site | None = None,
    ):
        """``max_parallel``: local / debug executors run at most this many jobs at once (0: no limit);
        ``on_wait()`` is called about once a second while this launcher waits (progress display);
        ``lock_wait_s``: how long to wait for another launcher of ``run_dir`` before LaunchBusy;
        ``squeue_retry_delays``: pauses between squeue attempts (default SQUEUE_RETRY_DELAYS);
        ``plan``: the launch's resolved configs, shared with its preflight (slurm.plan); ``site``: the
        cluster's account / qos / extra sbatch options (slurm.site; default: the cluster file's)."""
        self.run_dir = Path(run_dir)
        self.plan = plan or Plan()
        self.site = site or load_site()
        self.executor_kind, self.force, self.dry_run, self.max_requeues = (
            executor,
            force,
            dry_run,
            max_requeues,
        )
        self.max_parallel, self.on_wait = max_parallel, on_wait
        self.on_planned = (
            None  # called with a suite's planned jobs before they are submitted (progress display)
        )
        self.adopted: list[tuple] = []  # (job id, tag, its scheduler) of live jobs of an earlier launch
        self._others: dict[str, Scheduler] = {}  # schedulers of other executors that ran jobs of this run
        self._lock = None if dry_run else _lock_run_dir(self.run_dir, wait_s=lock_wait_s)
        self.scheduler = Scheduler(self.cluster(), retry_delays=squeue_retry_delays)
        self.state_path = self.run_dir / LAUNCH_STATE
        self.data_root = str(self.plan.data_root)  # jobs read their datasets under the plan's root
        durable.remove_stale_temps(self.run_dir)
        self.state = read_launch_state(self.state_path)
        self._touched: set[str] = set()  # keys of launch.json entries this launcher wrote
        self._arrays: dict[str, list[tuple[str, int]]] | None = None  # key -> (array tag, task), read once
        self.jobs: dict[str, submitit.Job] = {}

    def close(self) -> None:
        """Release the run directory for other launchers (also done when the process ends)."""
        if self._lock is not None:
            _unlock_run_dir(self._lock)
            self._lock = None

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- bookkeeping ----------------------------------------------------------------------
    def save(self) -> None:
        """Write the entries this launcher touched into launch.json, keeping the others as they are on disk
        (another launcher of this process, sharing the lock, may have written them)."""
        on_disk = read_launch_state(self.state_path)
        on_disk["jobs"].update({k: self.state["jobs"][k] for k in self._touched})
        durable.write_json(self.state_path, on_disk)
        self.state["jobs"] = {**on_disk["jobs"], **self.state["jobs"]}

    def cluster(self) -> str:
        if self.executor_kind != "auto":
            return self.executor_kind
        return "slurm" if shutil.which("sbatch") else "local"

    def executor(
        self, name: str, r: Resources, tasks_per_node: int = 1, *, dependency: str = "", tag: str = ""
    ) -> submitit.Executor:
        cluster = self.cluster()
        ex = submitit.AutoExecutor(
            folder=str(self.run_dir / "submitit" / "%j"),
            cluster=cluster,
            slurm_max_num_timeout=self.max_requeues + pieces(r) - 1,  # a job in pieces: requeued between
        )
        params = dict(
            name=name,
            timeout_min=min(r.time_min, r.piece_min or r.time_min),
            cpus_per_task=cpus_per_task(r, tasks_per_node),
            mem_gb=r.mem_gb,
            nodes=r.nodes,
            tasks_per_node=tasks_per_node,
        )
        if r.gpus:
            params["gpus_per_node"] = r.gpus
        if cluster == "slurm":
            # --requeue: SLURM itself requeues the job after a node failure or a preemption in requeue mode,
            # whatever the site's JobRequeue default; the job continues from its saved state
            extra = {"kill_on_invalid_dep": "yes", "requeue": True, **self.site.slurm_options(r)}
            if tag:  # how a relaunch finds this job if its id was never saved
                extra["comment"] = tag
            if dependency:
                extra["dependency"] = f"afterok:{dependency}"
            params["slurm_additional_parameters"] = extra
            if tasks_per_node * r.nodes > 1:  # a process that dies ends the step: the others would wait on it
                params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
            if r.partition or self.site.partition:
                params["slurm_partition"] = r.partition or self.site.partition
            if r.constraint:
                params["slurm_constraint"] = r.constraint
        ex.update_parameters(**params)
        return ex

    def is_live(self, job_id: str, *, tag: str = "") -> bool:
        """Queued or running right now (squeue for SLURM, the process for the local executor); raises
        SchedulerUnavailable when SLURM cannot say."""
        return self.scheduler.is_live(job_id, tag=tag)

    def _scheduler_of(self, key: str) -> Scheduler:
        """The scheduler of the executor that submitted job ``key`` (a run launched locally and relaunched on
        SLURM must look its local jobs up among processes, not in squeue)."""
        kind = self.state["jobs"].get(key, {}).get("executor") or self.cluster()
        if kind == self.scheduler.kind:
            return self.scheduler
        return self._others.setdefault(kind, Scheduler(kind, retry_delays=self.scheduler.retry_delays))

    def _decide(self, p: Planned, *, done: bool) -> bool:
        """True when the job must be submitted; sets p.action otherwise."""
        prev = self.state["jobs"].get(p.key) or self._recover(p)
        if done and not self.force:
            p.action, p.job_id = "done", prev.get("job_id", "")
            return False
        job_id, tag = prev.get("job_id", ""), prev.get("tag", "")
        scheduler = self._scheduler_of(p.key)
        if not job_id and tag:  # recorded before submission, the id never saved: find it by its tag
            job_id = scheduler.find(tag, prev.get("task"))
            if job_id and not self.dry_run:  # a dry run holds no lock: it writes nothing
                prev["job_id"] = job_id
                self._touched.add(p.key)
                self.save()
        if scheduler.is_live(job_id, tag=tag):
            if self.force and not self.dry_run:  # a live job of the old run would read the new one's files
                print(f"swavbench launch: --force: cancelling live job {job_id} ({p.name})", flush=True)
                scheduler.cancel(job_id, tag=tag)
                self._set_aside(Path(p.out_dir))
                return True
            p.action, p.job_id = "live", job_id
            self.adopted.append((job_id, tag, scheduler))
            return False
        if self.dry_run:
            p.action = "dry-run"
            return False
        if done:  # --force on a finished job: its folder is kept aside and the job starts from nothing
            self._set_aside(Path(p.out_dir))
        return True

    def _recover(self, p: Planned) -> dict:
        """The entry of a live job of ``p`` that launch.json does not list (deleted, or damaged and moved
        aside), found by its derived tag (slurm.scheduler.job_tag); {} when there is none."""
        if self._arrays is None:  # SLURM arrays: the keys by task index, written before submitting
            self._arrays = {}
            for f in sorted((self.run_dir / ARRAYS).glob("*.json")):
                with contextlib.suppress(OSError, ValueError, TypeError):
                    for task, key in enumerate(json.loads(f.read_text())):
                        self._arrays.setdefault(key, []).append((f.stem, task))
        for tag, task in [(job_tag(self.run_dir, [p.key]), None), *self._arrays.get(p.key, [])]:
            job_id = self.scheduler.find(tag, task)
            if not job_id:
                continue
            print(f"swavbench launch: {p.name}: live job {job_id} found by its tag, not in {LAUNCH_STATE}")
            entry = {**asdict(p), "action": "submitted", "job_id": job_id, "tag": tag, "task": task}
            entry["executor"] = self.cluster()
            if not self.dry_run:
                self.state["jobs"][p.key] = entry
                self._touched.add(p.key)
                self.save()
            return entry
        return {}

    def _set_aside(self, out: Path) -> None:
        if out.exists():
            target = self.run_dir / REPLACED / f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            durable.move_aside(out, target)

    def _tick(self) -> None:
        if self.on_wait is not None:
            self.on_wait()
        time.sleep(1.0)

    def throttle(self) -> None:
        """Local executors have no queue: hold the next submission while max_parallel jobs run."""
        if not self.max_parallel or self.cluster() == "slurm":
            return
        while (
            sum(not j.done() for j in self.jobs.values())
            + sum(sched.is_live(job_id, tag=tag) for job_id, tag, sched in self.adopted)
            >= self.max_parallel
        ):
            for _, _, sched in self.adopted:
                sched.refresh()
            self.scheduler.refresh()
            self._tick()

    def _intend(self, p: Planned, extra: dict, *, tag: str, task: int | None = None) -> None:
        """Record a submission before making it (``tag``: how a relaunch finds the job if this launcher
        dies before the id is saved; ``task``: its index in a SLURM array)."""
        _check_lease(self._lock)
        self._touched.add(p.key)
        self.state["jobs"][p.key] = {
            **asdict(p),
            **extra,
            "action": "submitting",
            "job_id": "",
            "tag": tag,
            "task": task,
            "executor": self.cluster(),
            "submitted_at": time.time(),
        }

    def _record(self, p: Planned, job: submitit.Job) -> None:
        p.action, p.job_id = "submitted", str(job.job_id)
        self.jobs[p.key] = job
        self.state["jobs"][p.key].update(action="submitted", job_id=p.job_id)
        self.save()

    def _submit_one(self, p: Planned, extra: dict, *, make_executor, fn) -> None:
        """Record, submit and save one job (local processes carry the tag in their environment)."""
        tag = job_tag(self.run_dir, [p.key])
        self._intend(p, extra, tag=tag)
        self.save()
        with tagged_environment(tag):
            try:
                job = make_executor(tag).submit(fn)
            except Exception as e:  # noqa: BLE001 - sbatch's error, said plainly
                raise _submission_failed(p.name, e) from e
        self._record(p, job)

    # -- suites and pipelines ----------------------------------------------------------------
    def suite(
        self,
        suite: Suite,
        checkpoint: str,
        checkpoint_id: str | None = None,
        *,
        after: str = "",
        prefix: str = "",
        expect: dict | None = None,
    ) -> list[Planned]:
        """One job per (suite entry, seed) on ``checkpoint``; ``after``: SLURM job id to wait for;
        ``prefix``: added to job names (e.g. the trunk's label)."""
        if checkpoint_id is None:
            checkpoint_id = sha256_of(checkpoint) if checkpoint != "random" else "random"
            expect = expect or ({"sha256": checkpoint_id} if checkpoint != "random" else None)
        planned: list[Planned] = []
        by_job: dict[tuple[str, int], Planned] = {}
        # an entry with ``after`` waits for that entry's job of its seed, whose folder fills its config
        for stage in ([e for e in suite.entries if not e.after], [e for e in suite.entries if e.after]):
            todo: list[tuple[Planned, object, int, object]] = []
            staged: list[Planned] = []
            for entry in stage:
                for seed in entry.seeds:
                    cfg, dep, protocol = self.plan.entry(entry, seed), after, registry.get(entry.protocol)
                    if entry.after:
                        first = by_job.get((entry.after, seed)) or by_job[entry.after, 0]
                        setattr(cfg, protocol.after_field, first.out_dir)
                        dep = self._after(first, default=after)
                    # by the implementation's name: a suite naming DETR ``detection`` finds its ``detr`` jobs
                    impl = protocol.implementation(getattr(cfg, "backend", None))
                    key = stable_hash([checkpoint_id, impl.name, asdict(cfg), seed])
                    name = f"{prefix}{entry.name}-s{seed}"
                    out = self.run_dir / "evals" / f"{name}-{key[:8]}"
                    p = Planned(
                        name,
                        key,
                        "eval",
                        str(out),
                        depends_on=dep,
                        resources=describe(entry.resources),
                        gpu_hours=max_gpu_hours(entry.resources),
                        protocol=impl.name,
                    )
                    staged.append(p)
                    by_job[entry.name, seed] = p
                    rec = out / RECORD
                    done = rec.is_file() and json.loads(rec.read_text()).get("status") == "ok"
                    if self._decide(p, done=done):
                        todo.append((p, entry, seed, cfg))
            planned += staged
            if self.on_planned is not None and staged:
                self.on_planned(staged)
            self._submit_evals(todo, f"{prefix}{suite.name}", checkpoint, expect=expect)
        return planned

    def _after(self, first: Planned, *, default: str) -> str:
        """The dependency of a job that needs ``first``'s output: its SLURM id while it is queued or running
        (local executors: wait here until it ended), else ``default``."""
        if first.action == "dry-run":
            return first.name
        if first.action not in ("submitted", "live"):
            return default
        if self.cluster() == "slurm":
            return first.job_id
        self.finished(first)
        return default

    def _submit_evals(self, todo: list, array_name: str, checkpoint: str, *, expect: dict | None) -> None:
        """Submit (planned, entry, seed, config) jobs: on SLURM one array per group of jobs asking for the
        same resources after the same job; locally one by one."""
        if self.cluster() == "slurm":
            groups: dict[str, list] = {}
            for item in todo:
                shape = [asdict(item[1].resources), eval_tasks(item[1]), item[0].depends_on]
                groups.setdefault(json.dumps(shape, sort_keys=True), []).append(item)
            size = max_array_size()
            chunks = [items[i : i + size] for items in groups.values() for i in range(0, len(items), size)]
            for items in chunks:  # arrays of at most MaxArraySize tasks: sbatch rejects larger ones
                tag = job_tag(self.run_dir, [p.key for p, *_ in items])
                if len(items) > 1:
                    (self.run_dir / ARRAYS).mkdir(exist_ok=True)
                    durable.write_json(self.run_dir / ARRAYS / f"{tag}.json", [p.key for p, *_ in items])
                for i, (p, e, seed, _) in enumerate(items):  # one array: task i is the i-th job
                    self._intend(
                        p, self._eval_extra(e, seed, checkpoint), tag=tag, task=i if len(items) > 1 else None
                    )
                self.save()
                first, entry = items[0][0], items[0][1]
                ex = self.executor(
                    array_name if len(items) > 1 else first.name,
                    entry.resources,
                    eval_tasks(entry),
                    dependency=first.depends_on,
                    tag=tag,
                )
                try:
                    with ex.batch():
                        jobs = [
                            ex.submit(self._eval_job(e, seed, checkpoint, p=p, cfg=cfg, expect=expect))
                            for p, e, seed, cfg in items
                        ]
                except Exception as err:  # noqa: BLE001 - sbatch's error, said plainly
                    raise _submission_failed(first.name, err) from err
                for (p, *_), job in zip(items, jobs):
                    self._record(p, job)
            return
        for p, entry, seed, cfg in todo:
            self.throttle()
            self._submit_one(
                p,
                self._eval_extra(entry, seed, checkpoint),
                make_executor=lambda tag, p=p, entry=entry: self.executor(
                    p.name, entry.resources, eval_tasks(entry), dependency=p.depends_on, tag=tag
                ),
                fn=self._eval_job(entry, seed, checkpoint, p=p, cfg=cfg, expect=expect),
            )

    def _eval_job(
        self, entry, seed: int, checkpoint: str, *, p: Planned, cfg, expect: dict | None
    ) -> EvalJob:
        return EvalJob(
            entry.protocol,
            entry.preset,
            entry.overrides,
            seed=seed,
            checkpoint=checkpoint,
            out_dir=p.out_dir,
            data_root=self.data_root,
            max_requeues=self.max_requeues + pieces(entry.resources) - 1,
            config=asdict(cfg),
            expect=expect,
        )

    @staticmethod
    def _eval_extra(entry, seed: int, checkpoint: str) -> dict:
        return {
            "protocol": entry.protocol,
            "preset": entry.preset,
            "seed": seed,
            "checkpoint": checkpoint,
            "resources": asdict(entry.resources),
        }

    def pretrain_job(
        self,
        preset: str,
        overrides: list[str],
        resources: Resources,
        *,
        name: str = "pretrain",
        method: str = "swav",
    ) -> Planned:
        """Submit a pretraining job of ``method`` (pretrain.methods) unless its final checkpoint exists or
        it is live; returns without waiting. The checkpoint is ``Path(p.out_dir) / 'checkpoint.pth'``.
        The folder ``RUN_DIR/<name>`` holds one configuration: another one raises ConfigConflict before
        anything is submitted."""
        key, settings, epochs, max_iters = self.check_pretrain(preset, overrides, name=name, method=method)
        out = self.run_dir / name
        p = Planned(
            name,
            key,
            "pretrain",
            str(out),
            resources=describe(resources),
            gpu_hours=max_gpu_hours(resources),
            epochs=epochs,
            max_iters=max_iters,
        )
        if self._decide(p, done=pretraining_done(out, epochs, max_iters)):
            self.throttle()
            if not self.dry_run:
                out.mkdir(parents=True, exist_ok=True)
                durable.write_json(out / PRETRAIN_SETTINGS, {"key": key, "settings": settings})
            tasks = resources.tasks_per_node or max(1, resources.gpus)
            self._submit_one(
                p,
                {
                    "preset": preset,
                    "overrides": overrides,
                    "method": method,
                    "resources": asdict(resources),
                },
                make_executor=lambda tag: self.executor(name, resources, tasks_per_node=tasks, tag=tag),
                fn=PretrainJob(
                    preset,
                    overrides,
                    str(out),
                    method=method,
                    data_root=self.data_root,
                    max_requeues=self.max_requeues + pieces(resources) - 1,
                    settings=settings,
                ),
            )
        return p

    def check_pretrain(
        self, preset: str, overrides: list[str], *, name: str = "pretrain", method: str = "swav"
    ) -> tuple[str, dict, int, int]:
        """(key, settings, epochs, max_iters) of a pretraining; ConfigConflict when ``RUN_DIR/<name>`` holds
        another configuration (its checkpoints would be evaluated under the new key, or resumed as a hybrid).
        Call it for every pretraining of a launch before submitting any."""
        settings, epochs, max_iters = pretrain_settings(self.plan, preset, overrides, method=method)
        key = stable_hash(["pretrain", settings])
        out = self.run_dir / name
        path = out / PRETRAIN_SETTINGS
        if not path.is_file():  # no settings written (an older or hand-made folder): its checkpoint says
            self._check_held_checkpoint(out, method, self.plan.pretraining(method, preset, overrides))
            return key, settings, epochs, max_iters
        held = read_settings(path)
        if held.get("key") == key:
            return key, settings, epochs, max_iters
        diffs = differences(methods.get(method).upgrade(held.get("settings", {})), settings)
        if not diffs:  # written before some settings existed: the same run, under the folder's key
            return held["key"], settings, epochs, max_iters
        shown = "; ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")
        raise ConfigConflict(
            f"{out} holds a pretraining run of another configuration ({shown}; its settings are in {path}). "
            "Nothing was submitted. Launch the new configuration into another run directory or under "
            "another pretraining name, or remove "
            f"{out} (and its evaluations) to replace it"
        )

    @staticmethod
    def _check_held_checkpoint(out: Path, method: str, cfg) -> None:
        """ConfigConflict when ``out``'s checkpoint (without settings.json) is of another configuration."""
        from swavbench.core.state import CheckpointError, load_checkpoint

        try:
            ckpt = load_checkpoint(out / CHECKPOINT)
        except CheckpointError:
            return  # none, or unreadable: the run starts (or its own resume logic sets it aside)
        diffs = methods.get(method).conflicts(ckpt, cfg)
        if diffs:
            shown = "; ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")
            raise ConfigConflict(
                f"{out / CHECKPOINT} is a pretraining of another configuration ({shown}) and {out} has no "
                f"{PRETRAIN_SETTINGS}. Nothing was submitted. Launch the new configuration into another run "
                f"directory or under another pretraining name, or remove {out} to replace it"
            )

    def finished(self, p: Planned) -> None:
        """Block until ``p``'s job ended (local / debug executors: SLURM chains with dependencies instead);
        raises when it failed, including a pretraining adopted from an earlier launch that stopped early."""
        if p.key in self.jobs:
            job = self.jobs[p.key]
            while not job.done():
                self._tick()
            job.results()  # raises when it failed (one result per task)
        else:
            tag, scheduler = self.state["jobs"].get(p.key, {}).get("tag", ""), self._scheduler_of(p.key)
            while scheduler.is_live(p.job_id, tag=tag):
                scheduler.refresh()
                self._tick()
        if p.kind == "pretrain" and p.epochs and not pretraining_done(Path(p.out_dir), p.epochs, p.max_iters):
            raise RuntimeError(
                f"pretraining {p.name} (job {p.job_id}) ended before its {p.epochs} epochs "
                f"({pretraining_progress(Path(p.out_dir))}); its log is under {self.run_dir / 'submitit'}. "
                "Launch again to resume it; its evaluations were not started"
            )

    def pipeline(
        self,
        preset: str,
        overrides: list[str],
        suite: Suite,
        *,
        resources: Resources,
        name: str = "pretrain",
        method: str = "swav",
        prefix: str = "",
        eval_epochs: list[int] = (),
    ) -> list[Planned]:
        """Pretraining job, then the suite on its final checkpoint (SLURM: afterok; local: after it ends) and,
        for each of ``eval_epochs``, on the intermediate checkpoint ``ckp-<epoch>.pth`` the run keeps."""
        if eval_epochs:
            cfg = self.plan.pretraining(method, preset, overrides)
            methods.get(method).check_eval_epochs(cfg, list(eval_epochs))
        p = self.pretrain_job(preset, overrides, resources, name=name, method=method)
        after = p.job_id if p.action in ("submitted", "live") else ""
        if after and self.cluster() != "slurm":  # local / debug executors have no dependencies: wait here
            self.finished(p)
            after = ""
        ckpt = str(Path(p.out_dir) / CHECKPOINT)
        dep = after if self.cluster() == "slurm" else ""
        final = {"key": p.key, "epochs": p.epochs, "max_iters": p.max_iters}
        evals = self.suite(suite, ckpt, checkpoint_id=p.key, after=dep, prefix=prefix, expect=final)
        for e in eval_epochs:
            evals += self.suite(
                suite,
                str(Path(p.out_dir) / epoch_checkpoint(e)),
                checkpoint_id=f"{p.key}@{e}",
                expect={"key": p.key, "epoch": e},
                after=dep,
                prefix=f"{prefix}ep{e}-",
            )
        return [p, *evals]

    def wait(self) -> dict[str, str]:
        """Block until every job submitted by this launcher ended; key -> 'ok' or the error."""
        out = {}
        for key, job in self.jobs.items():
            try:
                job.results()  # one per task (multi-task pretraining)
                out[key] = "ok"
            except Exception as e:  # noqa: BLE001 - a failed job is reported, not raised
                out[key] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        return out
