"""``swavbench gpu-check --out DIR``: every GPU path of the harness measured and verified in one short GPU
window (one GPU, a few minutes), run first whenever a GPU is lent. ``--cpu-dry-run`` runs every step's code
path on the CPU at toy size (CI runs it), so the check cannot fail on a typo when the GPU finally comes.

Steps (each timed, each failure recorded without stopping the others; the report is rewritten after every
step, so a run cut short keeps what it measured): the CUDA tests; the pretraining step benchmark (ours vs
the straightforward step vs ours + torch.compile vs the bare trunk's forward + backward); the loader with
colour / blur on the GPU; torchrun pretraining on NCCL with SyncBatchNorm, a checkpoint and an exact resume;
kNN with faiss on the GPU against faiss on the CPU; the first iterations of the VOC07+12 C4 detection
preset on a tiny VOC tree with both backends. Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from swavbench.core import durable
from swavbench.core.commands import command

REPO = Path(__file__).resolve().parents[2]
GOALS = {"ours_vs_straightforward": 1.3, "ours_vs_floor": 0.6}  # issue #21, same run


class Skipped(Exception):  # noqa: N818 - a step that cannot run here, with the reason
    """A step that cannot run on this machine (the reason is recorded)."""


@dataclass
class Context:
    out: Path
    dry: bool  # toy sizes on the CPU
    cuda: bool

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.cuda else "cpu")


def images_dir(ctx: Context) -> str:
    """Real JPEGs for the pretraining steps: the shared BCCD images, else generated ones."""
    from swavbench.core.data_root import resolve

    bccd = resolve("bccd/JPEGImages")
    return str(bccd) if bccd.is_dir() else "generated"


def cuda_test_files() -> list[Path]:
    """Every test module with tests marked ``cuda`` (they skip without CUDA)."""
    marker = "pytest.mark.cuda"
    return sorted(p for p in (REPO / "tests").rglob("test_*.py") if marker in p.read_text(errors="replace"))


OPTIONAL_MISSING = "not installed"  # the skip reason of tests of an optional package (e.g. DALI) left out


def step_cuda_tests(ctx: Context) -> dict:
    """pytest of every test marked ``cuda``: on the CPU they must skip cleanly (with the reason); on a GPU
    none may skip, except those of an optional package the machine lacks (listed in the figures)."""
    files = cuda_test_files()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-m",
            "cuda",
            "-p",
            "no:cacheprovider",
            *map(str, files),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-500:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    durable.write_text(ctx.out / "cuda_tests.log", res.stdout + res.stderr)
    reasons = re.findall(r"^SKIPPED \[(\d+)\] [^:]+:\d+: (.*)$", res.stdout, flags=re.M)
    optional = [r for _, r in reasons if OPTIONAL_MISSING in r]
    figures = {"files": [str(f.relative_to(REPO)) for f in files], "summary": summary, **counts}
    if optional:
        figures["optional_missing"] = optional
    if res.returncode not in (0, 5) or counts.get("failed") or counts.get("error"):
        raise RuntimeError(f"CUDA tests: {summary} (cuda_tests.log)")
    if ctx.cuda and sum(int(n) for n, r in reasons if OPTIONAL_MISSING not in r):
        raise RuntimeError(f"CUDA tests skipped on a GPU machine: {summary} (cuda_tests.log)")
    return figures


def pretrain_config(ctx: Context, *extra: str):
    from pretrain.config import load_config

    if ctx.dry:
        return load_config(
            "tiny", [f"data.path={images_dir(ctx)}", "optim.batch_size=4", "data.num_workers=0", *extra]
        )
    return load_config(
        "rn50-800ep-bs4096",
        [f"data.path={images_dir(ctx)}", "optim.batch_size=64", "optim.lr_scaling=linear", *extra],
    )


def step_pretrain_bench(ctx: Context) -> dict:
    """Training step images/s (data loading excluded), peak memory: ours, the straightforward step, ours +
    torch.compile (GPU only: compiling on a CPU takes minutes), the bare trunk forward + backward floor."""
    from swavbench.checks.pretrain_bench import FLOOR, OURS, PLAIN, time_steps

    cfg = pretrain_config(ctx)
    peaks: dict[str, int] = {}
    times = time_steps(
        cfg, 2 if ctx.dry else 10, warmup=1 if ctx.dry else 3, compile_variant=ctx.cuda, peaks=peaks
    )
    bs = cfg.optim.batch_size
    rate = {k: bs / statistics.median(v) for k, v in times.items()}
    figures = {
        "config": "tiny" if ctx.dry else "rn50-800ep-bs4096",
        "images_per_gpu": bs,
        "images_per_s": rate,
        "peak_memory_gib": {k: v / 2**30 for k, v in peaks.items()},
        "ours_vs_straightforward": rate[OURS] / rate[PLAIN],
        "ours_vs_floor": rate[OURS] / rate[FLOOR],
    }
    return figures


def step_gpu_augment(ctx: Context) -> dict:
    """The loader's work per core (decode, crops, flips, uint8) against the reference, and the batch colour /
    blur on the training device: milliseconds per batch of every crop."""
    from pretrain.batch_augment import BatchAugment
    from pretrain.data import MultiCropDataset
    from swavbench.checks.pretrain_bench import time_pipelines

    cfg = pretrain_config(ctx, "data.pipeline=fast")
    root = Path(cfg.data.path)
    n = 8 if ctx.dry else 64
    rates = time_pipelines(cfg, root, n, repeats=1)
    fast = MultiCropDataset(root, cfg.data, 0)
    items = [fast[(0, i)] for i in range(min(cfg.optim.batch_size, len(fast)))]
    crops = [torch.stack(c).to(ctx.device) for c in zip(*items)]
    aug = BatchAugment(cfg.data)
    ms = []
    for rep in range(2 if ctx.dry else 6):
        g = torch.Generator().manual_seed(rep)
        if ctx.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = [aug(c, g) for c in crops]
        if ctx.cuda:
            torch.cuda.synchronize()
        ms.append(1000 * (time.perf_counter() - t0))
    if not all(torch.isfinite(o).all() for o in out):
        raise RuntimeError("the batch colour / blur produced non-finite values")
    return {
        "loader_images_per_s_per_core": {k: statistics.median(v) for k, v in rates.items()},
        "augment_device": str(ctx.device),
        "augment_ms_per_batch": statistics.median(ms[1:] if len(ms) > 1 else ms),
        "batch": len(items),
        "crops": [tuple(c.shape) for c in crops],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pretrain(ctx: Context, out: Path, iters: int, *, resume: bool) -> subprocess.CompletedProcess:
    common = [
        f"data.path={images_dir(ctx)}",
        f"run.max_iters={iters}",
        "run.log_every_iters=1",
        "run.sync_bn=true",
        "run.deterministic=true",
    ]
    if ctx.dry:
        overrides = ["optim.batch_size=4", "data.num_workers=0", "run.precision=fp32", *common]
        preset = "tiny"
    else:
        overrides = ["optim.batch_size=64", "optim.lr_scaling=linear", "run.precision=bf16", *common]
        preset = "rn50-800ep-bs4096"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
    cmd += ["--master_port", str(_free_port()), "-m", "swavbench", "pretrain", "--config", preset]
    cmd += [*(["--resume"] if resume else []), "--out", str(out), *overrides]  # --resume: optional path
    env = {**os.environ, "PYTHONPATH": str(REPO), "SWAVBENCH_PROCESS_GROUP": "1", "OMP_NUM_THREADS": "2"}
    env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # deterministic cuBLAS: the resume must give the same losses
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    durable.write_text(out.with_suffix(".log"), res.stdout + res.stderr)
    if res.returncode:
        raise RuntimeError(f"torchrun pretraining failed ({out.with_suffix('.log')}): {res.stderr[-800:]}")
    return res


def step_torchrun_resume(ctx: Context) -> dict:
    """torchrun --nproc_per_node 1 pretraining in a process group (NCCL on the GPU, gloo on the CPU) with
    SyncBatchNorm layers: N iterations straight, and N/2 then a resume to N: the same losses."""
    from pretrain.train import TRAIN_LOG, read_log

    n = 4 if ctx.dry else 50
    base = ctx.out / "torchrun"
    t0 = time.perf_counter()
    _pretrain(ctx, base / "straight", n, resume=False)
    wall = time.perf_counter() - t0
    _pretrain(ctx, base / "resumed", n // 2, resume=False)
    res = _pretrain(ctx, base / "resumed", n, resume=True)
    straight, _ = read_log(base / "straight" / TRAIN_LOG)
    resumed, _ = read_log(base / "resumed" / TRAIN_LOG)
    a = [r["loss"] for r in straight if "loss" in r]
    b = [r["loss"] for r in resumed if "loss" in r]
    if len(a) != n or len(b) != n:
        raise RuntimeError(f"expected {n} logged losses, got {len(a)} and {len(b)}")
    worst = max(abs(x - y) for x, y in zip(a, b))
    backend = "nccl" if ctx.cuda else "gloo"
    if not re.search(r"resum", res.stdout + res.stderr, re.IGNORECASE):
        raise RuntimeError("the second run did not say it resumed")
    if worst > 1e-6:
        raise RuntimeError(f"resumed losses differ from the straight run by up to {worst:.3g}")
    return {"iterations": n, "backend": backend, "max_loss_difference": worst, "straight_wall_s": wall}


def step_knn_faiss(ctx: Context) -> dict:
    """The same exact inner-product search by the kNN protocol's faiss path (a GPU index where faiss-gpu and
    CUDA exist) and by a faiss CPU index: the same neighbours."""
    import faiss

    from benchmark.knn import nearest_neighbors

    gpu_faiss = hasattr(faiss, "StandardGpuResources")
    if ctx.cuda and not gpu_faiss:
        raise Skipped("faiss has no GPU support here: pip install -e '.[gpu]' (faiss-gpu)")
    g = torch.Generator().manual_seed(0)
    n_train, n_test, dim = (500, 100, 64) if ctx.dry else (100_000, 10_000, 2048)
    train = torch.nn.functional.normalize(torch.randn(n_train, dim, generator=g), dim=1)
    test = torch.nn.functional.normalize(torch.randn(n_test, dim, generator=g), dim=1)
    t0 = time.perf_counter()
    sims, idx = nearest_neighbors(train, test, 20, backend="faiss")
    t_protocol = time.perf_counter() - t0
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(train.numpy())
    t0 = time.perf_counter()
    cpu_sims, cpu_idx = cpu.search(test.numpy(), 20)
    t_cpu = time.perf_counter() - t0
    same = float((idx.numpy() == cpu_idx).mean())
    diff = float(abs(sims.numpy() - cpu_sims).max())
    if diff > 1e-4 or same < 0.999:
        raise RuntimeError(
            f"faiss {'GPU' if ctx.cuda else 'protocol'} vs CPU: {same:.4f} same ids, sims {diff:.2g}"
        )
    return {
        "index": "GPU" if ctx.cuda and gpu_faiss else "CPU",
        "same_neighbours": same,
        "max_similarity_difference": diff,
        "protocol_s": t_protocol,
        "faiss_cpu_s": t_cpu,
        "shape": [n_train, n_test, dim],
    }


def step_detection(ctx: Context) -> dict:
    """The VOC07+12 C4 preset's first iterations on a tiny generated VOC tree with each installed backend:
    seconds per iteration from two runs (few and more iterations; set-up and evaluation cancel out)."""
    from swavbench.checks import rehearsal_data
    from swavbench.core.registry import for_preset
    from transfer.detection_config import detectron2_available

    root = rehearsal_data.write_all(ctx.out / "data")
    voc = root / "VOCdevkit"
    preset = "detection-voc0712-c4"
    entry = for_preset(preset)
    few, more = (1, 3) if ctx.dry else (5, 25)
    figures: dict = {}
    backends = ["torchvision", *(["detectron2"] if detectron2_available() else [])]
    for backend in backends:
        walls = {}
        for iters in (few, more):
            overrides = [
                f"train_roots=[{voc / 'VOC2007'},{voc / 'VOC2012'}]",
                f"test_root={voc / 'VOC2007'}",
                f"iterations={iters}",
                "steps=[1000000]",
                "checkpoint_every=0",
                f"backend={backend}",
                "num_workers=2",
            ]
            if ctx.dry:
                overrides += ["batch_size=2", "min_size_train=[96]", "max_size_train=160", "min_size_test=96"]
                overrides += ["max_size_test=160", "rois_per_image=16", "proposals_test=50", "warmup_iters=1"]
                overrides += ["trunk.arch=resnet50", "trunk.width_multiplier=0.125"]
                if backend == "detectron2":
                    overrides.append('detectron2_overrides=["TEST.PRECISE_BN.NUM_ITER","1"]')
            cfg = entry.load_config(preset, overrides)
            t0 = time.perf_counter()
            rec = entry.runner()(cfg, "random", ctx.out / entry.name / f"{backend}-{iters}")
            walls[iters] = time.perf_counter() - t0
            if rec.status != "ok":
                raise RuntimeError(f"{backend}: {rec.error}")
        figures[backend] = {
            "s_per_iter": (walls[more] - walls[few]) / (more - few),
            "batch": cfg.batch_size,
            "iterations": [few, more],
        }
    if "detectron2" not in figures:
        figures["detectron2"] = "not installed (bash .ci/install-detectron2 .venv)"
    return figures


STEPS: list[tuple[str, Callable[[Context], dict]]] = [
    ("cuda_tests", step_cuda_tests),
    ("pretrain_bench", step_pretrain_bench),
    ("gpu_augment", step_gpu_augment),
    ("torchrun_resume", step_torchrun_resume),
    ("knn_faiss", step_knn_faiss),
    ("detection_speed", step_detection),
]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def markdown(report: dict) -> str:
    """The report as a Markdown page: machine, every step's status, time and figures, the goals."""
    lines = [
        f"# GPU check ({'CPU dry run' if report['dry_run'] else report['device']})",
        "",
        f"{report['started']}; torch {report['torch']}; command `{report['command']}`",
        "",
        "| step | status | s | figures |",
        "|---|---|---|---|",
    ]
    for name, s in report["steps"].items():
        figs = s.get("error") or s.get("reason") or _fmt(s.get("figures", {}))
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.1f} | {figs.replace('|', '/')} |")
    bench = report["steps"].get("pretrain_bench", {}).get("figures")
    if bench:
        lines += ["", "Goals (issue #21, same run):"]
        for key, goal in GOALS.items():
            ok = "met" if bench[key] >= goal else "NOT met"
            lines.append(f"- {key}: {bench[key]:.2f} (goal >= {goal}): {ok}")
    return "\n".join(lines) + "\n"


def run(out: str | Path, *, dry_run: bool, only: list[str] | None = None) -> int:
    """Every step (or ``only`` those), the report after each; 0 when none failed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not dry_run
    if not dry_run and not torch.cuda.is_available():
        print(
            "swavbench gpu-check: no CUDA GPU here; use --cpu-dry-run to check the code paths",
            file=sys.stderr,
        )
        return 2
    ctx = Context(out, dry_run, cuda)
    report = {
        "device": torch.cuda.get_device_name() if cuda else "CPU",
        "dry_run": dry_run,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "command": " ".join(["swavbench", *sys.argv[1:]]) if "gpu-check" in sys.argv else "gpu_check.run",
        "steps": {},
    }
    for name, fn in STEPS:
        if only and name not in only:
            continue
        print(f"gpu-check: {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            entry = {"status": "ok", "figures": fn(ctx)}
        except Skipped as e:
            entry = {"status": "skipped", "reason": str(e)}
        except Exception as e:  # recorded; the other steps still run
            entry = {
                "status": "failed",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
            }
        entry["seconds"] = time.perf_counter() - t0
        report["steps"][name] = entry
        print(f"gpu-check: {name} {entry['status']} in {entry['seconds']:.1f} s", flush=True)
        durable.write_text(out / "gpu_check.json", json.dumps(report, indent=2, default=str) + "\n")
        durable.write_text(out / "gpu_check.md", markdown(report))
    print(markdown(report))
    return 1 if any(s["status"] == "failed" for s in report["steps"].values()) else 0


def _run_command(args: argparse.Namespace) -> int:
    """Measure and verify every GPU path in one short GPU window (report: Markdown + JSON)

    Run first whenever a GPU is available: CUDA tests, pretraining step benchmark, GPU augmentation, torchrun
    NCCL pretraining with resume, faiss GPU kNN, detection iterations. --cpu-dry-run runs every step's code
    path on the CPU at toy size.
    """
    return run(args.out, dry_run=args.cpu_dry_run, only=args.only)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "gpu-check", run=_run_command)
    p.add_argument("--out", required=True, help="folder for gpu_check.md / gpu_check.json and step logs")
    p.add_argument("--cpu-dry-run", action="store_true", help="toy sizes on the CPU (what CI runs)")
    p.add_argument("--only", nargs="+", choices=[n for n, _ in STEPS], help="run only these steps")
