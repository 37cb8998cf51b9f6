"""Detection transfer end to end on real BCCD images: both backends train a few iterations, evaluate and
write a record with AP numbers; the torchvision model carries the trunk's weights; runs resume; NaN stops
cleanly."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.trunk import TrunkSpec, load_trunk
from swavbench.core.config import load_dataclass
from transfer.cli import TRANSFER_CONFIGS
from transfer.detection import DetectionConfig, run_detection
from transfer.detection_config import validate

TINY = [
    "iterations=4",
    "checkpoint_every=2",
    "min_size_train=[160]",
    "max_size_train=224",
    "min_size_test=160",
    "max_size_test=224",
    "rois_per_image=32",
    "num_workers=0",
    "steps=[3]",
    "warmup_iters=2",
]


def smoke_config(root: Path, *extra: str) -> DetectionConfig:
    return load_dataclass(
        DetectionConfig,
        TRANSFER_CONFIGS,
        "detection-bccd-c4-small",
        overrides=[f"train_roots=[{root}]", f"test_root={root}", *TINY, *extra],
    )


def check_record(out: Path, backend: str) -> dict:
    rec = json.loads((out / "result.json").read_text())
    assert (
        rec["status"] == "ok"
        and (rec["protocol"], rec["benchmark"]) == ("detection", "detection-frcnn-c4")
        and rec["dataset"] == "bccd"
    )
    assert rec["config"]["backend"] == backend and rec["splits"] == {"train": 6, "test": 4}
    for key in ("AP", "AP50", "AP75", "AP50_RBC", "AP50_WBC", "AP50_Platelets"):
        assert 0.0 <= rec["metrics"][key] <= 100.0 and math.isfinite(rec["metrics"][key])
    assert rec["metrics"]["skipped_boxes"] == 1.0  # BloodImage_00343
    return rec


def test_torchvision_smoke_and_resume(bccd_mini, tmp_path):
    out = tmp_path / "det"
    cfg = smoke_config(bccd_mini, "iterations=2")
    run_detection(cfg, "random", out)
    state = torch.load(out / "detection_state.pth", weights_only=False)
    assert state["batch"] == 2 and len(state["history"]) == 2
    first = state["history"]
    # the state as the loop of before the step loop wrote it (its position in ``iteration``) still continues
    first = [{**h, "written": "before"} for h in first]  # marked: a restart would not keep them
    old = {k: state[k] for k in ("key", "model", "optimizer")}
    torch.save({**old, "history": first, "iteration": 2}, out / "detection_state.pth")
    # the same run asked for 4 iterations continues from its state instead of starting over
    run_detection(smoke_config(bccd_mini), "random", out)
    state = torch.load(out / "detection_state.pth", weights_only=False)
    assert [h["iteration"] for h in state["history"]] == [1, 2, 3, 4] and state["history"][:2] == first
    rec = check_record(out, "torchvision")
    assert json.loads((out / "detection_config.json").read_text())["iterations"] == 4
    assert rec["metrics"]["final_loss"] == pytest.approx(state["history"][-1]["loss"])


def test_reused_out_with_another_checkpoint_does_not_continue_its_fine_tuning(bccd_mini, tmp_path):
    from pretrain.model import build_trunk

    files = []
    for seed in (1, 2):  # two different trunks of the preset's architecture, as torchvision files
        torch.manual_seed(seed)
        files.append(tmp_path / f"trunk{seed}.pth")
        torch.save(build_trunk("resnet18", small_stem=True, width_multiplier=0.25).state_dict(), files[-1])
    out = tmp_path / "det"
    cfg = smoke_config(bccd_mini, "iterations=2")
    run_detection(cfg, str(files[0]), out)
    first = torch.load(out / "detection_state.pth", weights_only=True)
    assert first["batch"] == 2
    run_detection(smoke_config(bccd_mini), str(files[1]), out)  # same --out, 4 iterations, another trunk
    second = torch.load(out / "detection_state.pth", weights_only=True)
    # started over from the second trunk: all 4 iterations ran on it, none continued the first model
    assert [h["iteration"] for h in second["history"]] == [1, 2, 3, 4] and second["key"] != first["key"]
    assert second["history"][0]["loss"] != first["history"][0]["loss"]
    # the same trunk asked for more iterations still continues its own state
    run_detection(smoke_config(bccd_mini, "iterations=6"), str(files[1]), out)
    third = torch.load(out / "detection_state.pth", weights_only=True)
    assert third["history"][:4] == second["history"] and third["batch"] == 6


def test_torchvision_model_uses_the_trunk_weights():
    from transfer.detection_torchvision import build_model

    loaded = load_trunk("random", TrunkSpec("resnet18", True, 0.25), seed=3)
    reference = {k: v.clone() for k, v in loaded.trunk.state_dict().items()}
    cfg = DetectionConfig(norm="frozen", classes=["a", "b"])
    model = build_model(loaded.trunk, cfg, 2)
    body, head = model.backbone, model.roi_heads.box_head
    torch.testing.assert_close(body.layer3[0].conv1.weight, reference["layer3.0.conv1.weight"])
    torch.testing.assert_close(head[0][1].conv2.weight, reference["layer4.1.conv2.weight"])
    torch.testing.assert_close(
        body.bn1.running_var, reference["bn1.running_var"]
    )  # frozen BN keeps the statistics
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # 2 classes + background
    fpn = build_model(
        load_trunk("random", TrunkSpec("resnet18", True, 0.25), seed=3).trunk, DetectionConfig(head="fpn"), 2
    )
    torch.testing.assert_close(fpn.backbone.body.layer2[1].conv1.weight, reference["layer2.1.conv1.weight"])


def test_warm_up_and_pixel_statistics_come_from_the_config():
    from transfer.detection_torchvision import build_model, lr_at

    cfg = DetectionConfig(lr=0.1, warmup_iters=1000, warmup_factor=0.333, steps=[18000, 22000])
    # Detectron2's WarmupMultiStepLR: factor * (1 - a) + a with a = it / warmup_iters, then the steps
    expected = {0: 0.0333, 500: 0.1 * (0.333 * 0.5 + 0.5), 1000: 0.1, 18000: 0.01, 23999: 0.001}
    for it, want in expected.items():
        assert lr_at(it, cfg) == pytest.approx(want)
    model = build_model(load_trunk("random", TrunkSpec("resnet18", True, 0.25)).trunk, cfg, 2)
    assert model.transform.image_std == pytest.approx([58.395 / 255, 57.12 / 255, 57.375 / 255])
    assert model.transform.image_mean == pytest.approx([0.485, 0.456, 0.406])
    with pytest.raises(ValueError, match="warmup_factor must be in"):
        validate(DetectionConfig(warmup_factor=0.0))


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_state(bccd_mini, tmp_path):
    out = tmp_path / "nan"
    run_detection(smoke_config(bccd_mini, "iterations=2"), "random", out)
    with pytest.raises(FloatingPointError, match="lower lr"):
        run_detection(
            smoke_config(bccd_mini, "lr=1e30", "iterations=8", "warmup_iters=0", "clip_grad_norm=0"),
            "random",
            out,
        )
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "failed" and "FloatingPointError" in rec["error"]
    assert torch.load(out / "detection_state.pth", weights_only=False)["batch"] >= 2


def test_detectron2_smoke(bccd_mini, tmp_path):
    pytest.importorskip("detectron2", reason="no Detectron2 (tests/install-detectron2.sh installs it)")
    out = tmp_path / "d2"
    cfg = smoke_config(
        bccd_mini,
        "backend=detectron2",
        "trunk.arch=resnet50",
        "trunk.small_stem=false",
        "proposals_test=100",
        "warmup_factor=0.333",
    )
    run_detection(cfg, "random", out)
    rec = check_record(out, "detectron2")
    m = rec["metrics"]
    for key in ("AP", "AP50", "AP75"):  # Detectron2's own evaluator on the same predictions
        assert m[key] == pytest.approx(m[f"d2_{key}"], abs=1e-9)
    d2_cfg = (out / "detectron2_config.yaml").read_text()
    assert (
        "Res5ROIHeadsExtraNorm" in d2_cfg
        and "STRIDE_IN_1X1: false" in d2_cfg
        and "POST_NMS_TOPK_TEST: 100" in d2_cfg
    )
    assert len(list((out / "detectron2").glob("*/last_checkpoint"))) == 1  # one folder per trunk + config
    solver, model = yaml.safe_load(d2_cfg)["SOLVER"], yaml.safe_load(d2_cfg)["MODEL"]
    assert solver["WARMUP_FACTOR"] == 0.333 and solver["WARMUP_ITERS"] == cfg.warmup_iters
    assert model["PIXEL_STD"] == [58.395, 57.12, 57.375] and model["PIXEL_MEAN"] == [123.675, 116.28, 103.53]


def test_extra_norm_is_named_as_in_moco():
    pytest.importorskip("detectron2", reason="no Detectron2 (tests/install-detectron2.sh installs it)")
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import transfer.detection_detectron2  # noqa: F401 - registers Res5ROIHeadsExtraNorm

    cfg = get_cfg()
    cfg.MODEL.DEVICE, cfg.MODEL.ROI_HEADS.NAME, cfg.MODEL.RESNETS.NORM = "cpu", "Res5ROIHeadsExtraNorm", "BN"
    keys = set(build_model(cfg).state_dict())
    assert {"roi_heads.res5.norm.weight", "roi_heads.res5.norm.running_var"} <= keys  # MoCo's names
    assert "roi_heads.res5.2.conv3.weight" in keys and not any(k.startswith("roi_heads.res5.3") for k in keys)


def test_detectron2_refuses_a_small_stem(bccd_mini, tmp_path):
    pytest.importorskip("detectron2", reason="no Detectron2 (tests/install-detectron2.sh installs it)")
    with pytest.raises(ValueError, match="small .* stem: use backend=torchvision"):
        run_detection(smoke_config(bccd_mini, "backend=detectron2"), "random", tmp_path / "x")


def test_two_processes_fine_tune_as_one_data_parallel_job(bccd_mini, tmp_path):
    """Both backends under 2 gloo processes: one DistributedDataParallel job (half the batch each, BatchNorm
    over the whole batch), predictions of both shards scored together, one record saying world size 2.
    Numbers are not compared with one process: the RPN / RoI samplers draw from each process' own random
    stream (as on GPUs), so they agree in distribution only."""
    from ddp_helpers import detection_in_group, run_ddp

    cases = [(smoke_config(bccd_mini, "batch_size=2"), str(tmp_path / "tv"))]
    try:
        import detectron2  # noqa: F401

        d2 = smoke_config(
            bccd_mini, "batch_size=2", "backend=detectron2", "trunk.arch=resnet50", "trunk.small_stem=false"
        )
        cases.append((d2, str(tmp_path / "d2")))
    except ImportError:
        print("Detectron2 not installed: its data-parallel run is not checked (tests/install-detectron2.sh)")
    per_rank = run_ddp(detection_in_group, 2, cases)
    for a, b in zip(*per_rank):  # every process ends with the same numbers
        assert a == b, {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
    for (cfg, out), metrics in zip(cases, per_rank[0]):
        rec = check_record(Path(out), cfg.backend)
        assert rec["world_size"] == 2 and len(rec["devices"]) == 2 and rec["metrics"] == metrics
    state = torch.load(tmp_path / "tv" / "detection_state.pth", weights_only=False)
    assert state["batch"] == 4 and len(state["history"]) == 4
