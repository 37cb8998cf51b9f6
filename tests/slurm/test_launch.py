"""Launch, idempotence, pipelines, failures and requeue: on the local executor and on a real
SLURM cluster (../shared/slurm/slurm-local.sh, started by the fixture; needs root)."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import submitit
import yaml

from slurm.launch import Launcher, PretrainJob
from slurm.status import job_table
from slurm.suite import Resources, load_suite
from swavbench.core.state import load_checkpoint


@pytest.fixture
def tiny_suite(tmp_path, generated_data) -> Path:
    g = generated_data.parent
    res = {"cpus": 1, "mem_gb": 1, "time_min": 10}
    common = [f"train={g / 'train'}", f"val={g / 'val'}", "num_workers=0", "trunk.width_multiplier=0.125"]
    jobs = [
        {
            "protocol": "knn",
            "preset": "knn-cifar10-small",
            "overrides": [*common, "ks=[5]"],
            "resources": res,
        },
        {
            "protocol": "linear",
            "preset": "linear-cifar10-small",
            "overrides": [*common, "epochs=2"],
            "resources": res,
        },
        {
            "protocol": "knn",
            "preset": "knn-cifar10-small",
            "name": "knn-k10",
            "overrides": [*common, "ks=[10]"],
            "seeds": [0, 1],
            "resources": res,
        },
    ]
    path = tmp_path / "tiny-suite.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "jobs": jobs}))
    return path


def ok_records(run_dir: Path) -> list[str]:
    recs = [json.loads(p.read_text()) for p in (run_dir / "evals").glob("*/result.json")]
    return sorted(r["status"] for r in recs)


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_suite_runs_and_relaunch_is_idempotent(executor, tiny_suite, tmp_path, request):
    if executor == "slurm":
        request.getfixturevalue("slurm_cluster")
    run = tmp_path / "run"
    suite = load_suite(str(tiny_suite))
    first = Launcher(run, executor)
    planned = first.suite(suite, "random")
    assert [p.action for p in planned] == ["submitted"] * 4 and len({p.key for p in planned}) == 4
    assert set(first.wait().values()) == {"ok"}
    assert ok_records(run) == ["ok"] * 4
    again = Launcher(run, executor).suite(suite, "random")
    assert [p.action for p in again] == ["done"] * 4  # nothing submitted
    victim = Path(planned[1].out_dir) / "result.json"
    victim.unlink()
    third = Launcher(run, executor)
    actions = [p.action for p in third.suite(suite, "random")]
    assert actions == ["done", "submitted", "done", "done"]  # exactly the missing one
    assert set(third.wait().values()) == {"ok"} and victim.is_file()
    rows = job_table(run)
    assert [r["state"] for r in rows] == ["done"] * 4 and all(r["result"] for r in rows)


def test_pipeline_evals_wait_for_pretraining_and_failure_blocks_them(
    slurm_cluster, tiny_suite, tmp_path, generated_data, monkeypatch
):
    # submitit waits 15 s for the result file of a job that ended without one (cancelled dependents)
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 2)
    suite = load_suite(str(tiny_suite))
    res = Resources(cpus=1, mem_gb=2, time_min=10)
    good = Launcher(tmp_path / "good", "slurm")
    planned = good.pipeline("tiny", [f"data.path={generated_data}", "run.max_iters=4"], suite, resources=res)
    pre, evals = planned[0], planned[1:]
    assert pre.kind == "pretrain" and all(p.depends_on == pre.job_id for p in evals)
    assert set(good.wait().values()) == {"ok"}
    t = accounting_times([pre.job_id] + [p.job_id for p in evals])
    assert all(t[p.job_id][0] >= t[pre.job_id][1] for p in evals)  # each eval started after pretraining ended

    bad = Launcher(tmp_path / "bad", "slurm")
    planned = bad.pipeline("tiny", [f"data.path={tmp_path / 'no-such-folder'}"], suite, resources=res)
    outcome = bad.wait()
    assert "not a directory" in outcome[planned[0].key] or "Error" in outcome[planned[0].key]
    rows = {r["name"]: r for r in job_table(tmp_path / "bad")}
    assert rows["pretrain"]["state"] == "failed"
    for p in planned[1:]:
        assert rows[p.name]["state"] == "failed" and "dependency" in rows[p.name]["result"]
        assert not (Path(p.out_dir) / "result.json").exists()  # never ran


def accounting_times(job_ids: list[str], *, timeout_s: float = 60) -> dict[str, list[str]]:
    """Start and end of each job as slurmdbd records them. The database lags the controller (a run on
    2026-12-02 read sacct before an array task's row arrived), so poll until every job has both."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID,Start,End", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
        ).stdout
        t = {line.split("|")[0]: line.split("|")[1:] for line in out.split()}
        if all(j in t and "Unknown" not in t[j] for j in job_ids) or time.monotonic() > deadline:
            return t
        time.sleep(1)


def job_logs(run: Path, job_id: str) -> str:
    return "".join(p.read_text(errors="replace") for p in (run / "submitit").glob(f"{job_id}*/*_log.*"))


@pytest.mark.parametrize("signals", ["TERM+USR2", "TERM"])
def test_preempted_pretraining_requeues_and_matches_an_uninterrupted_run(
    slurm_cluster, tmp_path, generated_data, signals
):
    """On the real cluster. Preemption: SIGTERM then USR2 reach the job's processes (submitit's own
    preemption), or SIGTERM alone (SLURM's preemption without PreemptParameters=send_user_signal, here
    ``scancel --signal=TERM``); the trainer checkpoints at the next iteration (between the periodic
    checkpoints), the job is requeued with the same callable, and the run ends on the uninterrupted
    numbers. (DataLoader workers under the same signals: the linear-probe test below, and
    tests/pretrain/test_resume_safety.py.)"""
    overrides = [f"data.path={generated_data}", "optim.epochs=6", "run.checkpoint_every_iters=4"]
    PretrainJob("tiny", overrides, str(tmp_path / "straight"))()  # uninterrupted, in this process
    launcher = Launcher(tmp_path / "requeue", "slurm")
    planned = launcher.pipeline(
        "tiny", overrides, load_suite("cpu-small"), resources=Resources(cpus=2, mem_gb=2, time_min=10)
    )
    job = launcher.jobs[planned[0].key]
    for p in planned[1:]:  # the cpu-small evals are not part of this test
        subprocess.run(["scancel", p.job_id])
    deadline = time.time() + 300
    while not (Path(planned[0].out_dir) / "checkpoint.pth").exists() and time.time() < deadline:
        time.sleep(0.2)
    if signals == "TERM":
        subprocess.run(["scancel", "--signal=TERM", planned[0].job_id], check=True)
    else:
        job._interrupt()  # submitit's preemption: scancel --signal SIGTERM, then USR2, to the job's processes
    job.result()
    hist = subprocess.run(
        ["sacct", "-n", "-D", "-X", "-P", "-o", "State", "-j", planned[0].job_id],
        capture_output=True,
        text=True,
    ).stdout
    assert "REQUEUED" in hist
    logs = job_logs(tmp_path / "requeue", planned[0].job_id)
    assert "on the scheduler's signal; state saved" in logs, logs[-3000:]
    assert "requeued (1 of at most 3)" in logs, logs[-3000:]
    assert "resumed from" in logs, logs[-3000:]
    a = [json.loads(x)["loss"] for x in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    b = [
        json.loads(x)["loss"] for x in (Path(planned[0].out_dir) / "train_log.jsonl").read_text().splitlines()
    ]
    assert len(a) == len(b) == 60 and a == pytest.approx(b, rel=1e-5)
    assert load_checkpoint(Path(planned[0].out_dir) / "checkpoint.pth")["epoch"] == 6


def test_preempted_linear_probe_saves_its_position_requeues_and_matches_an_uninterrupted_run(
    slurm_cluster, tmp_path, generated_data
):
    from benchmark.linear import run_linear
    from slurm.plan import Plan

    g = generated_data.parent
    overrides = [f"train={g / 'train'}", f"val={g / 'val'}", "num_workers=0", "trunk.width_multiplier=0.125"]
    overrides += ["mode=augmented", "epochs=6", "batch_size=16"]
    suite_yaml = tmp_path / "linear.yaml"
    suite_yaml.write_text(
        yaml.safe_dump(
            {
                "name": "linear",
                "jobs": [
                    {
                        "protocol": "linear",
                        "preset": "linear-cifar10-small",
                        "overrides": overrides,
                        "resources": {"cpus": 2, "mem_gb": 2, "time_min": 10},
                    }
                ],
            }
        )
    )
    straight = run_linear(
        Plan().protocol("linear", "linear-cifar10-small", overrides, seed=0), "random", tmp_path / "s"
    )
    launcher = Launcher(tmp_path / "run", "slurm")
    (p,) = launcher.suite(load_suite(str(suite_yaml)), "random")
    deadline = time.time() + 300
    while not (Path(p.out_dir) / "linear_state.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    launcher.jobs[p.key]._interrupt()
    launcher.jobs[p.key].result()
    logs = job_logs(tmp_path / "run", p.job_id)
    assert "on the scheduler's signal; state saved" in logs, logs[-3000:]
    assert "requeued (1 of at most 3)" in logs, logs[-3000:]
    rec = json.loads((Path(p.out_dir) / "result.json").read_text())
    assert rec["status"] == "ok" and rec["metrics"] == pytest.approx(straight.metrics, abs=1e-6)


def test_two_task_pretraining_joins_ddp_through_the_job_environment(tmp_path, generated_data):
    """tasks_per_node=2 on the local executor: submitit starts two processes, PretrainJob exports RANK /
    WORLD_SIZE / MASTER_ADDR from submitit's JobEnvironment and they train as one DDP job (half the steps)."""
    launcher = Launcher(tmp_path / "ddp", "local")
    res = Resources(cpus=2, mem_gb=2, time_min=10, tasks_per_node=2)
    p = launcher.pretrain_job(
        "tiny", [f"data.path={generated_data}", "optim.epochs=1", "data.num_workers=0"], res
    )
    launcher.finished(p)
    log = [json.loads(x) for x in (Path(p.out_dir) / "train_log.jsonl").read_text().splitlines()]
    n_images = sum(1 for f in generated_data.rglob("*.png"))
    assert log[-1]["iteration"] == n_images // (
        16 * 2
    )  # batch 16 per process, 2 processes: half a single run's steps
    assert load_checkpoint(Path(p.out_dir) / "checkpoint.pth")["epoch"] == 1


def test_two_task_evaluations_run_as_one_data_parallel_job(tmp_path, tiny_suite):
    """tasks_per_node=2 on the local executor: the two processes of each evaluation job join one group
    through submitit's JobEnvironment, the record says so, and the numbers are the one-process ones."""
    one = Launcher(tmp_path / "one", "local")
    one.suite(load_suite(str(tiny_suite)), "random")
    assert set(one.wait().values()) == {"ok"}
    raw = yaml.safe_load(tiny_suite.read_text())
    for job in raw["jobs"]:
        job["resources"] = {**job["resources"], "cpus": 2, "tasks_per_node": 2}
    tiny_suite.write_text(yaml.safe_dump(raw))
    two = Launcher(tmp_path / "two", "local", max_parallel=1)
    two.suite(load_suite(str(tiny_suite)), "random")
    assert set(two.wait().values()) == {"ok"}
    recs = {}
    for run in ("one", "two"):
        for path in (tmp_path / run / "evals").glob("*/result.json"):
            recs[(run, path.parent.name.rsplit("-", 1)[0])] = json.loads(path.read_text())
    names = {name for _, name in recs}
    assert len(names) == 4
    for name in names:
        a, b = recs[("one", name)], recs[("two", name)]
        assert (a["world_size"], b["world_size"], len(b["devices"])) == (1, 2, 2), name
        assert b["metrics"] == pytest.approx(a["metrics"], abs=1e-4), name  # float sums in another order


def test_jobs_run_the_config_frozen_at_launch(tmp_path, generated_data):
    """A preset edited between launch and the job's start (or a requeue) does not change what runs."""
    g = generated_data.parent
    preset = tmp_path / "knn-mine.yaml"
    settings = {"train": str(g / "train"), "val": str(g / "val"), "resize": 32, "crop": 32, "num_workers": 0}
    preset.write_text(yaml.safe_dump({**settings, "ks": [5]}))
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        yaml.safe_dump({"name": "s", "jobs": [{"protocol": "knn", "preset": str(preset), "name": "knn"}]})
    )
    launcher = Launcher(tmp_path / "run", "debug")  # the debug executor runs a job when asked for its result
    (p,) = launcher.suite(load_suite(str(suite)), "random")
    preset.write_text(yaml.safe_dump({**settings, "ks": [7]}))
    assert launcher.wait() == {p.key: "ok"}
    rec = json.loads((Path(p.out_dir) / "result.json").read_text())
    assert rec["config"]["ks"] == [5] and "k5_top1" in rec["metrics"]


def test_pipeline_evaluates_intermediate_epochs(tmp_path, generated_data):
    g = generated_data.parent
    suite_yaml = tmp_path / "knn.yaml"
    suite_yaml.write_text(
        yaml.safe_dump(
            {
                "name": "knn",
                "jobs": [
                    {
                        "protocol": "knn",
                        "preset": "knn-cifar10-small",
                        "overrides": [f"train={g / 'train'}", f"val={g / 'val'}", "num_workers=0", "ks=[5]"],
                    }
                ],
            }
        )
    )
    overrides = [
        f"data.path={generated_data}",
        "optim.epochs=2",
        "run.keep_epoch_checkpoints=1",
        "data.num_workers=0",
    ]
    launcher = Launcher(tmp_path / "run", "local")
    with pytest.raises(ValueError, match="keep_epoch_checkpoints"):
        launcher.pipeline(
            "tiny",
            [*overrides[:2], "run.keep_epoch_checkpoints=0"],
            load_suite(str(suite_yaml)),
            resources=Resources(cpus=1, mem_gb=2, time_min=10),
            eval_epochs=[1],
        )
    planned = launcher.pipeline(
        "tiny",
        overrides,
        load_suite(str(suite_yaml)),
        resources=Resources(cpus=1, mem_gb=2, time_min=10),
        eval_epochs=[1],
    )
    assert [p.name for p in planned] == ["pretrain", "knn-cifar10-small-s0", "ep1-knn-cifar10-small-s0"]
    assert set(launcher.wait().values()) == {"ok"}
    epochs = sorted(
        json.loads((Path(p.out_dir) / "result.json").read_text())["pretrain_epochs"] for p in planned[1:]
    )
    assert epochs == [1, 2]


def test_a_job_after_another_reads_its_output_and_follows_its_identity(tmp_path, generated_data):
    """A suite entry with ``after`` (ImageNet-variants after the probe whose head it measures): submitted once
    the probe ended (local executor; SLURM: afterok, rehearsed in test_rehearsal), its config names the
    probe's folder, and a changed probe changes both jobs' keys, so a relaunch redoes both."""
    g = generated_data.parent
    common = [f"train={g / 'train'}", f"val={g / 'val'}", "num_workers=0", "trunk.width_multiplier=0.125"]
    res = {"cpus": 1, "mem_gb": 1, "time_min": 10}

    def suite(epochs: int):
        jobs = [
            {
                "protocol": "imagenet-variants",
                "preset": "imagenet-variants-cifar10-small",
                "after": "probe",
                "resources": res,
            }
            | {"overrides": common},
            {"protocol": "linear", "preset": "linear-cifar10-small", "name": "probe", "resources": res}
            | {"overrides": [*common, f"epochs={epochs}"]},
        ]
        jobs = jobs[::-1]  # the probe first: an entry may only follow an earlier one
        path = tmp_path / f"after-{epochs}.yaml"
        path.write_text(yaml.safe_dump({"name": "after", "jobs": jobs}))
        return load_suite(str(path))

    run = tmp_path / "run"
    launcher = Launcher(run, "local")
    probe, variants = launcher.suite(suite(2), "random")
    assert (probe.action, variants.action) == ("submitted", "submitted")
    assert set(launcher.wait().values()) == {"ok"}
    rec = json.loads((Path(variants.out_dir) / "result.json").read_text())
    linear = json.loads((Path(probe.out_dir) / "result.json").read_text())
    assert rec["config"]["head"] == probe.out_dir
    # the probe's head on the same val images: its top-1 (one image of float noise between extractions)
    assert rec["metrics"]["val_top1"] == pytest.approx(linear["metrics"]["top1"], abs=100 / 40 + 1e-9)
    assert [p.action for p in Launcher(run, "local").suite(suite(2), "random")] == ["done", "done"]
    again = Launcher(run, "local")
    changed = again.suite(suite(3), "random")
    assert [p.action for p in changed] == ["submitted", "submitted"]
    assert (
        changed[1].key != variants.key
        and json.loads((Path(changed[1].out_dir) / "result.json").read_text() if again.wait() else "{}")[
            "config"
        ]["head"]
        == changed[0].out_dir
    )


def test_a_job_pickled_by_an_earlier_version_is_refused_with_the_fix(tmp_path):
    """A requeued job whose pickle lacks a field of today's layout (an earlier swav-bench's) is refused,
    naming the fix, before it touches its folder; today's jobs survive the pickle round trip."""
    import pickle

    from slurm.launch import EvalJob, OlderJob

    ev = EvalJob("knn", "knn-cifar10-small", [], seed=0, checkpoint="random", out_dir=str(tmp_path / "e"))
    pre = PretrainJob("tiny", [], str(tmp_path / "p"))
    for job, field in ((ev, "config"), (pre, "settings")):
        old = pickle.loads(pickle.dumps(job))
        assert vars(old) == vars(job)
        del old.__dict__[field]
        with pytest.raises(OlderJob, match=f"earlier swav-bench.*no {field}.*run the same launch command"):
            old()
    assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()
