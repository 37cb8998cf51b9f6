"""The GPU check's dry run: every step's code path on the CPU at toy size, so the script cannot fail on a
typo when a GPU finally comes; and without a GPU the real check refuses with the way out."""

import json
import math

from swavbench.checks import gpu_check


def test_cpu_dry_run_runs_every_step(tmp_path, capsys):
    rc = gpu_check.run(tmp_path, dry_run=True)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = report["steps"]
    assert list(steps) == [name for name, _ in gpu_check.STEPS]
    failed = {k: v.get("error") for k, v in steps.items() if v["status"] != "ok"}
    assert rc == 0 and not failed, failed
    # the CUDA tests exist and skip cleanly here, with the reason
    cuda = steps["cuda_tests"]["figures"]
    assert "tests/pretrain/test_gpu.py" in cuda["files"] and cuda["skipped"] >= 4 and not cuda.get("passed")
    bench = steps["pretrain_bench"]["figures"]
    assert set(bench["images_per_s"]) >= {
        "ours (one trunk call per resolution)",
        "straightforward (per crop)",
    }
    assert all(v > 0 for v in bench["images_per_s"].values())
    assert steps["gpu_augment"]["figures"]["augment_ms_per_batch"] > 0
    loader = steps["gpu_augment"]["figures"]["loader_images_per_s_per_core"]
    assert loader["DALI on CPU, 1 thread: decode + all ops"] > 0  # the anchor (test extra installs DALI)
    torchrun = steps["torchrun_resume"]["figures"]
    assert torchrun["backend"] == "gloo" and torchrun["max_loss_difference"] <= 1e-6  # exact resume
    assert steps["knn_faiss"]["figures"]["same_neighbours"] >= 0.999
    # seconds per iteration from the difference of two short runs: a number (at toy size it is noise)
    assert steps["detection_speed"]["figures"]["torchvision"]["iterations"] == [1, 3]
    assert math.isfinite(steps["detection_speed"]["figures"]["torchvision"]["s_per_iter"])
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# GPU check (CPU dry run)") and all(f"| {name} | ok |" in md for name in steps)
    assert "ours_vs_floor" in md


def test_without_a_gpu_the_real_check_refuses(tmp_path, capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal without one is not exercised here")
    assert gpu_check.run(tmp_path, dry_run=False) == 2
    assert "--cpu-dry-run" in capsys.readouterr().err
