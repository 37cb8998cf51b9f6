import re
from pathlib import Path

import pytest
from handmade_records import write_handmade

from results.collect import collect
from results.reference import load_reference
from results.render import latex, markdown
from results.report import make_report
from results.tables import paper_tables

GOLDEN = Path(__file__).parent / "golden" / "handmade_tables.md"


@pytest.fixture
def runs(tmp_path):
    write_handmade(tmp_path)
    return tmp_path


def test_collect_gives_the_expected_frame(runs):
    df, problems, failed = collect([runs])
    # linear x2 seeds (top1 / top5 / best-epoch top1), semisup (4), svm, supervised (3), random (2)
    assert len(df) == 3 + 3 + 4 + 1 + 3 + 2
    lin = df[(df.model == "swav-a") & (df.benchmark == "linear") & (df.metric == "top1")]
    assert lin.seed.tolist() == [0, 1] and lin.value.tolist() == [74.0, 75.0]
    semi = df[df.protocol == "semisup"]
    assert (
        set(semi.benchmark) == {"semisup-1pct"}
        and set(semi.bn_mode) == {"train"}
        and set(semi.lr) == {"trunk 0.02 / head 5.0"}
    )
    linear = df[df.protocol == "linear"]
    assert set(linear.bn_mode) == {"frozen"} and set(linear.layer) == {"res5-avgpool"}
    assert set(semi.layer) == {"res5-avgpool (fine-tuned)"} and set(linear.precision) == {"fp32"}
    # a GPU record from before trunk.feature_precision extracted its frozen features with bf16 autocast
    assert set(df[df.protocol == "svm"].precision) == {"bf16"}
    assert df.gpu_hours.eq(1.0).all() and set(df.columns) >= {
        "model",
        "protocol",
        "dataset",
        "metric",
        "seed",
        "mode",
    }
    assert [Path(p.path).parent.name for p in problems] == ["broken"] and "not valid JSON" in problems[
        0
    ].reason
    assert [(f.model, f.protocol) for f in failed] == [("swav-a", "knn")] and "out of memory" in failed[
        0
    ].error


def test_tables_means_stds_deltas_and_golden_markdown(runs):
    df, _, _ = collect([runs])
    tables = paper_tables(df, load_reference(), tolerance=1.0)
    t1 = tables[0]
    cells = dict(t1.rows)["swav-a"]
    top1 = cells["linear imagenet top1"]
    assert top1.mean == 74.5 and top1.std == pytest.approx(0.7071068, abs=1e-6) and top1.n == 2
    # the published 75.3 is the official probe's best epoch: judged against the best-epoch column only
    best = cells["linear imagenet top1_best_epoch"]
    assert top1.delta is None and best.delta == pytest.approx(74.7 - 75.3) and best.reproduced
    # 95% CI of the mean of 2 runs: t_{0.975, 1} = 12.7062 (t table) x s / sqrt(2), s = 0.7071
    assert top1.ci95 == pytest.approx(12.7062 * 0.7071068 / 2**0.5, abs=1e-3)
    assert dict(t1.rows)["supervised"]["linear imagenet top1_best_epoch"].delta == pytest.approx(76.0 - 76.5)
    assert dict(t1.rows)["random"]["linear imagenet top1"].delta is None
    assert dict(t1.rows)["SwAV (published)"]["linear imagenet top1_best_epoch"].mean == 75.3
    semi = dict(tables[1].rows)["swav-a"]["semisup-1pct imagenet top1_best_epoch"]
    assert semi.delta == pytest.approx(50.0 - 53.9) and semi.reproduced is False
    svm = dict(tables[2].rows)["swav-a"]["svm voc07 mAP"]
    assert svm.delta == pytest.approx(88.0 - 88.9) and svm.reproduced
    text = "\n\n".join(markdown(t) for t in tables) + "\n"
    assert text == GOLDEN.read_text()  # reviewed by hand: 74.5 ± 6.4 (n=2) is (74, 75), -0.6 = 74.7 - 75.3


def test_latex_is_structurally_sound(runs):
    df, _, _ = collect([runs])
    for t in paper_tables(df, load_reference()):
        tex = latex(t)
        assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
        assert tex.count("{") == tex.count("}") - tex.count(r"\}") + tex.count(r"\{")
        n_cols = len(re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1))
        body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
        for line in body + [tex.split(r"\toprule")[1].split(r"\midrule")[0].strip()]:
            assert line.endswith(r"\\") and line.count(" & ") == n_cols - 1
        assert "_" not in tex.replace(r"\_", "")  # every underscore escaped
        assert r"\toprule" in tex and r"\bottomrule" in tex


def test_report_writes_every_format_with_embedded_plots(runs, tmp_path):
    rep = make_report([runs], tmp_path / "report")
    html = rep.files["html"].read_text()
    pngs = sorted((tmp_path / "report" / "plots").glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "Failed jobs" in html and "out of memory" in html and "broken" in html
    assert rep.files["parquet"].stat().st_size > 0 and rep.files["csv"].read_text().startswith(
        "model,protocol"
    )
    assert (
        "swav-a" in rep.terminal
        and "SwAV (published)" in rep.terminal
        and "FAILED swav-a / knn" in rep.terminal
    )
    md = rep.files["markdown"].read_text()
    assert "| swav-a | 74.7 ± 6.4 (n=2) (-0.6 ✓) | 74.5 ± 6.4 (n=2) | 91.5 ± 6.4 (n=2) |" in md


def test_extra_reference_file(tmp_path):
    extra = tmp_path / "mine.csv"
    extra.write_text(
        "table,protocol,dataset,metric,model,arch,pretrain_epochs,value,source\n"
        "x,knn,cifar10-subset,k20_top1,swav,resnet18,3,33.9,our notes\n"
    )
    ref = load_reference([extra])
    assert (ref.source == "our notes").sum() == 1 and len(ref) == len(load_reference()) + 1
    assert ref[ref.source == "our notes"].pretrain_batch.isna().all()  # optional column
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv lacks columns"):
        load_reference([bad])


def test_sweep_table_heat_map_and_epoch_curve(tmp_path):
    import json

    from handmade_records import record

    values = {(300, 0.03): 60.0, (300, 0.05): 62.0, (3000, 0.03): 61.0, (3000, 0.05): 65.0}
    for (k, eps), v in values.items():
        name = f"n_prototypes={k},epsilon={eps}"
        for ep, delta in ((100, -5.0), (200, 0.0)):
            d = tmp_path / f"{k}-{eps}-{ep}"
            d.mkdir()
            (d / "result.json").write_text(
                json.dumps(
                    record(
                        "linear",
                        "imagenet",
                        {"top1": v + delta, "top1_best_epoch": v + delta},
                        name,
                        epochs=ep,
                        batch=4096,
                    )
                )
            )
    rep = make_report([tmp_path], tmp_path / "report")
    plots = {p.name for p in (tmp_path / "report" / "plots").glob("*.png")}
    assert {"sweep_linear_imagenet.png", "accuracy_vs_epochs.png", "bars_linear_imagenet.png"} <= plots
    md = rep.files["markdown"].read_text()
    sweep = md.split("### Sweep")[1].split("###")[0]
    assert sweep.count("| n_prototypes=") == 4
    # the last pretraining epoch (200) counts: 65.0 is the best top-1; the delta is to the published
    # 200-epoch batch-4096 number (73.9), not the 800-epoch one nor the batch-256 one (72.7)
    assert "| n_prototypes=3000,epsilon=0.05 | **65.0 (-8.9 ✗)** | **65.0** |" in sweep
    length = md.split("### Training length")[1]
    assert "| n_prototypes=300,epsilon=0.03 @ 100 ep | 55.0 |" in length and "@ 200 ep | 60.0 |" in length


def test_coco_mask_rcnn_records_fill_table_3_beside_the_published_box_ap(tmp_path):
    import json

    from handmade_records import record

    for model, box, mask in (("swav-a", 40.6, 36.0), ("supervised", 39.0, 35.0)):
        d = tmp_path / model
        d.mkdir()
        rec = record(
            "detection-maskrcnn-fpn",
            "coco",
            {"box_AP": box, "box_AP50": 60.0, "mask_AP": mask},
            model,
            config={"backend": "detectron2", "iterations": 90000},
        )
        (d / "result.json").write_text(json.dumps(rec))
    md = make_report([tmp_path], tmp_path / "report").files["markdown"].read_text()
    t3 = md.split("Table 3")[1].split("###")[0]
    assert "box_AP" in t3 and "mask_AP" in t3
    assert "40.6 (-1.0" in t3  # the paper's 41.6 box AP (../shared/reference/swav_paper.csv) beside ours


def test_records_of_two_configurations_under_one_name_are_not_averaged(tmp_path):
    import json

    from handmade_records import record

    from results.tables import aggregate

    cfg = {
        "mode": "augmented",
        "epochs": 100,
        "lrs": [0.3],
        "crop": 224,
        "train": "/data/a/train",
        "num_workers": 8,
    }
    recs = {
        "s0": record("linear", "imagenet", {"top1": 70.0, "top5": 90.0}, "swav", 0, config=cfg),
        # same configuration, another seed, the data elsewhere and more workers: averaged with s0
        "s1": record(
            "linear", "imagenet", {"top1": 72.0, "top5": 91.0}, "swav", 1,
            config={**cfg, "train": "/mnt/b/train", "num_workers": 2},
        ),
        # a relaunch with another schedule under the same display name: not a seed of the above
        "long": record(
            "linear", "imagenet", {"top1": 80.0, "top5": 95.0}, "swav", 0, config={**cfg, "epochs": 200}
        ),
    }  # fmt: skip
    for name, rec in recs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(rec))
    df, problems, failed = collect([tmp_path])
    assert not failed
    (conflict,) = problems
    assert (
        conflict.kind == "conflict"
        and "swav / linear / imagenet: records of 2 configurations" in conflict.reason
    )
    assert "epochs: 100 vs 200" in conflict.reason or "epochs: 200 vs 100" in conflict.reason
    agg = aggregate(df)
    top1 = agg[agg.metric == "top1"].set_index("model")
    assert len(top1) == 2 and all(m.startswith("swav [cfg ") for m in top1.index)
    by_n = top1.sort_values("n")
    assert by_n.n.tolist() == [1, 2]
    assert by_n["mean"].tolist() == pytest.approx([80.0, 71.0])  # (70 + 72) / 2, never (70 + 72 + 80) / 3


def test_transfer_probe_seeds_under_two_data_roots_are_one_configuration(tmp_path):
    """transfer-linear records carry the ``linear`` key; their dataset location (``root`` of its config,
    besides train / val) is not configuration, so seeds run under two data roots average."""
    import json

    from handmade_records import record

    from results.tables import aggregate

    cfg = {
        "mode": "cached",
        "epochs": 100,
        "lrs": [0.3],
        "root": "/a/places205",
        "train": "train",
        "val": "val",
    }
    recs = {
        "s0": record("linear", "places205", {"top1": 50.0}, "swav", 0, config=cfg),
        "s1": record(
            "linear", "places205", {"top1": 52.0}, "swav", 1, config={**cfg, "root": "/b/places205"}
        ),
    }
    for name, rec in recs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(rec))
    df, problems, _ = collect([tmp_path])
    agg = aggregate(df)
    top1 = agg[agg.metric == "top1"]
    assert not problems and top1["n"].tolist() == [2] and top1["mean"].tolist() == pytest.approx([51.0])


def test_configurations_filling_different_metrics_do_not_conflict(tmp_path):
    import json

    from handmade_records import record

    cfg = {"ks": [5], "temperature": 0.07}
    recs = {
        "k5": record("knn", "cifar10", {"k5_top1": 30.0}, "random", 0, config=cfg),
        "k10": record("knn", "cifar10", {"k10_top1": 31.0}, "random", 0, config={**cfg, "ks": [10]}),
    }
    for name, rec in recs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(rec))
    df, problems, _ = collect([tmp_path])
    assert not problems and set(df.model) == {"random"} and len(df) == 2


def test_published_lookup_keys_on_epochs_and_batch_and_gives_no_verdict_when_unknown():
    from results.reference import published

    ref = load_reference()
    look = dict(dataset="imagenet", metric="top1_best_epoch", verdict=True)
    assert published(ref, "swav", "linear", pretrain_epochs=400, pretrain_batch=256, **look)[0] == 74.3
    assert published(ref, "swav", "linear", pretrain_epochs=400, pretrain_batch=4096, **look)[0] == 74.6
    assert published(ref, "swav", "linear", pretrain_epochs=800, **look)[0] == 75.3  # one batch published
    assert published(ref, "swav", "linear", pretrain_epochs=400, **look) is None  # 74.6 or 74.3: unknown
    assert published(ref, "swav", "linear", pretrain_epochs=None, **look) is None  # official / VISSL file
    assert published(ref, "swav", "linear", pretrain_epochs=300, pretrain_batch=4096, **look) is None
    tiny = "resnet50w0.125-smallstem"  # a CPU-sized trunk is no ResNet-50
    assert published(ref, "swav", "linear", arch=tiny, pretrain_epochs=800, **look) is None
    # the published row of a table: the longest schedule at the largest batch
    assert published(ref, "swav", "linear", dataset="imagenet", metric="top1_best_epoch")[0] == 75.3


def test_unknown_epochs_and_cpu_sized_trunks_get_no_verdict(tmp_path):
    import json

    from handmade_records import record

    recs = {
        "official": record("linear", "imagenet", {"top1_best_epoch": 70.0}, "swav-official", epochs=None),
        "bs256": record("linear", "imagenet", {"top1_best_epoch": 74.0}, "swav-q", epochs=400, batch=256),
        "small": record(
            "linear", "imagenet", {"top1_best_epoch": 9.0}, "swav-tiny", arch="resnet50w0.125-smallstem"
        ),
    }
    old = record("linear", "imagenet", {"top1_best_epoch": 75.0}, "swav-old", epochs=800)
    recs["old"] = {k: v for k, v in old.items() if k != "trunk_arch"}  # written before trunk_arch existed
    for name, rec in recs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(rec))
    df, _, _ = collect([tmp_path])
    rows = dict(paper_tables(df, load_reference())[0].rows)
    assert rows["swav-old"]["linear imagenet top1_best_epoch"].delta is None  # its width is unknown
    col = "linear imagenet top1_best_epoch"
    assert rows["swav-official"][col].delta is None
    assert rows["swav-q"][col].delta == pytest.approx(74.0 - 74.3)
    assert rows["swav-tiny"][col].delta is None


def test_five_detection_runs_show_their_mean_and_confidence_interval(tmp_path):
    import json
    import statistics

    from handmade_records import record

    ap50 = [82.0, 82.4, 81.6, 82.9, 82.1]
    for seed, v in enumerate(ap50):
        d = tmp_path / f"det-s{seed}"
        d.mkdir()
        rec = record("detection-frcnn-c4", "voc0712", {"AP50": v, "AP": 55.0, "AP75": 60.0}, "swav-a", seed)
        (d / "result.json").write_text(json.dumps({**rec, "config": {"backend": "detectron2"}}))
    df, _, _ = collect([tmp_path])
    t3 = next(t for t in paper_tables(df, load_reference()) if t.title.startswith("Table 3"))
    cell = dict(t3.rows)["swav-a"]["detection-frcnn-c4 voc0712 AP50"]
    mean, sd = statistics.mean(ap50), statistics.stdev(ap50)
    half = 2.7764 * sd / 5**0.5  # t_{0.975, 4} = 2.7764 (t table)
    assert cell.n == 5 and cell.mean == pytest.approx(mean) and cell.ci95 == pytest.approx(half, abs=1e-3)
    assert cell.text() == f"{mean:.1f} ± {half:.1f} (n=5) ({mean - 82.6:+.1f} ✓)"


def test_detection_from_another_backend_is_shown_without_a_verdict(tmp_path):
    import json

    from handmade_records import record

    for model, backend in (("swav-d2", "detectron2"), ("swav-tv", "torchvision")):
        (tmp_path / model).mkdir()
        rec = record("detection-frcnn-c4", "voc0712", {"AP50": 82.0, "AP": 55.0, "AP75": 60.0}, model)
        (tmp_path / model / "result.json").write_text(json.dumps({**rec, "config": {"backend": backend}}))
    df, _, _ = collect([tmp_path])
    t3 = next(t for t in paper_tables(df, load_reference()) if t.title.startswith("Table 3"))
    d2, tv = dict(t3.rows)["swav-d2"], dict(t3.rows)["swav-tv"]
    col = "detection-frcnn-c4 voc0712 AP50"
    assert d2[col].delta == pytest.approx(82.0 - 82.6) and d2[col].footnote == ""
    assert tv[col].delta is None and tv[col].text() == "82.0†"
    assert "† torchvision backend" in t3.note and "† torchvision backend" in markdown(t3)
    det = df[df.model == "swav-d2"]  # not the probe's layer / BN: the whole backbone, its configured norm
    assert set(det.layer) == {"backbone res2-res5 (fine-tuned)"} and set(det.bn_mode) == {""}


def test_detr_records_are_judged_against_the_published_detr_row(tmp_path):
    """transformers' DETR is the reference implementation of the DETR row: a verdict against 42.1, frozen
    BatchNorm stated."""
    import json

    from handmade_records import record

    (tmp_path / "d").mkdir()
    rec = record("detection-detr", "coco", {"box_AP": 41.9, "box_AP50": 62.0, "box_AP75": 44.0}, "swav-a")
    rec["config"] = {"backend": "transformers", "freeze_at": 2}
    (tmp_path / "d" / "result.json").write_text(json.dumps(rec))
    df, _, _ = collect([tmp_path])
    t3 = next(t for t in paper_tables(df, load_reference()) if t.title.startswith("Table 3"))
    cells = dict(t3.rows)["swav-a"]
    cell = cells["detection-detr coco box_AP"]
    assert cell.footnote == "" and cell.delta == pytest.approx(41.9 - 42.1)
    assert cells["detection-detr coco box_AP50"].delta is None  # no published DETR AP50: shown, not judged
    assert set(df[df.model == "swav-a"].bn_mode) == {"frozen"}


def test_a_dataset_label_from_a_record_cannot_write_outside_the_plots_folder(tmp_path):
    """Labels in records are free text from elsewhere: plot file names are built from them made safe."""
    import json

    from handmade_records import record

    runs = tmp_path / "runs"
    for model in ("swav-a", "random"):
        (runs / model).mkdir(parents=True)
        rec = record("linear", "../../../escape", {"top1": 60.0}, model)
        (runs / model / "result.json").write_text(json.dumps(rec))
    out = tmp_path / "deep" / "er" / "report"
    make_report([runs], out)
    pngs = list(tmp_path.rglob("*.png"))
    assert pngs and all((out / "plots") in p.parents for p in pngs), pngs
    assert [p.name for p in pngs if "escape" in p.name] == ["bars_linear_.._.._.._escape.png"]  # "/" -> "_"


def test_a_nan_or_inf_seed_is_shown_counted_flagged_and_ranks_nothing(tmp_path):
    """A diverged seed (NaN) is neither dropped from the mean and n nor allowed to rank; inf is not best."""
    import json
    import math

    from handmade_records import record

    from results.comparison import verdict_lines
    from results.tables import aggregate

    nan, inf = float("nan"), float("inf")
    values = {"swav-a": [70.0, nan, 72.0], "random": [10.0, 11.0, 12.0], "supervised": [inf] * 3}
    for model, seeds in values.items():
        for seed, v in enumerate(seeds):
            (tmp_path / f"{model}-{seed}").mkdir()
            rec = record("knn", "imagenet", {"k20_top1": v}, model, seed=seed)
            (tmp_path / f"{model}-{seed}" / "result.json").write_text(json.dumps(rec))  # NaN / Infinity
    df, problems, _ = collect([tmp_path])
    flagged = sorted(Path(p.path).parent.name for p in problems if p.kind == "not-finite")
    assert flagged == ["supervised-0", "supervised-1", "supervised-2", "swav-a-1"] and len(df) == 9
    agg = aggregate(df).set_index("model")
    assert math.isnan(agg.loc["swav-a", "mean"]) and agg.loc["swav-a", "n"] == 3  # not the mean of 2
    assert math.isinf(agg.loc["supervised", "mean"]) and agg.loc["random", "mean"] == pytest.approx(11.0)
    lines = "\n".join(verdict_lines(df))
    assert "nan (n=3, not finite)" in lines and ">" not in lines.split("->")[-1], lines
    rep = make_report([tmp_path], tmp_path / "report")
    assert "NOT-FINITE" in rep.terminal and "k20_top1=nan" in rep.terminal
    assert "inf (n=3, not finite)" in rep.terminal


def test_two_pretrainings_under_one_name_are_not_seeds_and_a_run_counts_once(tmp_path):
    """Records of one row name from different pretraining recipes are split (a conflict), runs of one
    recipe at several seeds are averaged, and the same run recorded twice counts once (a duplicate)."""
    import json

    from handmade_records import record

    from results.tables import aggregate

    def write(folder, seed, recipe, *, value=50.0, created="2026-11-23T00:00:00+00:00"):
        rec = {**record("knn", "imagenet", {"k20_top1": value}, "pretrain", seed=seed), "created": created}
        rec.update(trunk_recipe=recipe, checkpoint=f"/runs/{recipe}/s{seed}/checkpoint.pth")
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "result.json").write_text(json.dumps(rec))

    write("a/s0", 0, "recipe-a", value=50.0)
    write("a/s1", 1, "recipe-a", value=52.0)
    write("b/s0", 0, "recipe-b", value=40.0)
    write("a/s1-again", 1, "recipe-a", value=53.0, created="2026-11-24T00:00:00+00:00")  # relaunched
    df, problems, _ = collect([tmp_path])
    kinds = sorted(p.kind for p in problems)
    assert kinds == ["conflict", "duplicate"], problems
    (dup,) = [p for p in problems if p.kind == "duplicate"]
    assert dup.path.endswith("a/s1/result.json")  # the older of the two is left out
    agg = aggregate(df)
    rows = {r.model: (r["mean"], r["n"]) for _, r in agg.iterrows()}
    assert len(rows) == 2 and sorted(rows.values()) == [(40.0, 1), (pytest.approx((50 + 53) / 2), 2)]
    assert all(m.startswith("pretrain [cfg ") for m in rows)
    (conflict,) = [p for p in problems if p.kind == "conflict"]
    assert "trunk_recipe: recipe-a vs recipe-b" in conflict.reason


def test_a_trunks_recipe_ignores_the_seed_and_what_a_resumed_run_may_change():
    from benchmark.trunk import recipe_of
    from pretrain.checkpoint import FORMAT
    from pretrain.config import load_config

    def recipe(*overrides):
        cfg = load_config("tiny", list(overrides))
        return recipe_of({"format": FORMAT, "config": cfg.to_dict()}, "f" * 64)

    assert recipe("run.seed=0") == recipe("run.seed=3") == recipe("run.seed=3", "data.num_workers=4")
    assert recipe("run.seed=0") != recipe("run.seed=0", "model.n_prototypes=[40]")
    assert recipe_of({"state_dict": {}}, "ab" * 32) == "ab" * 8  # any other file: its own sha256


def test_imagenet_knn_is_judged_against_dinos_published_row_beside_its_calibration_rows(tmp_path):
    """Issue #36 item 2: DINO's Table 2 numbers for the released SwAV ResNet-50 (65.7 kNN) and its ResNet-50
    calibration rows (DeepCluster-v2 67.1, BYOL 64.8, MoCo v2 61.9) reach the report with their source."""
    import json

    from handmade_records import record

    ref = load_reference()
    knn = ref[(ref.benchmark == "knn") & (ref.dataset == "imagenet") & (ref.metric == "k20_top1")]
    rows = {(r.model, r.arch): r.value for r in knn.itertuples()}
    assert rows == {
        ("swav", "resnet50"): 65.7,
        ("swav", "resnet50w2"): 67.3,
        ("swav", "resnet50w5"): 67.1,
        ("deepcluster-v2", "resnet50"): 67.1,
        ("byol", "resnet50"): 64.8,
        ("moco-v2", "resnet50"): 61.9,
    }
    assert all("DINO (Caron et al. 2021) Table 2" in s for s in knn.source)
    d = tmp_path / "swav-a"
    d.mkdir()
    rec = record("knn", "imagenet", {"k20_top1": 64.9, "k10_top1": 64.5}, "swav-a")
    rec.update(pretrain_epochs=800, pretrain_batch=4096)
    (d / "result.json").write_text(json.dumps(rec))
    md = make_report([tmp_path], tmp_path / "report").files["markdown"].read_text()
    t1 = md.split("Table 1")[1].split("###")[0]
    assert "64.90 (-0.8" in t1 or "64.9 (-0.8" in t1, t1  # beside DINO's 65.7 for the same schedule
    for name, value in (
        ("byol (published)", "64.8"),
        ("moco-v2 (published)", "61.9"),
        ("SwAV (published)", "65.7"),
    ):
        (line,) = [ln for ln in t1.splitlines() if name in ln]
        assert value in line


def test_protocols_beyond_the_paper_get_their_own_table_saying_no_published_reference(tmp_path):
    """Issue #36: low-shot, ImageNet variants and the many-dataset transfer are not in the paper's tables;
    the report shows them in a table of their own, mean ± CI over seeds, and says where nothing published
    exists to compare with."""
    import json
    import statistics

    from handmade_records import record

    lowshot = [61.0, 62.5, 60.2]
    for seed, v in enumerate(lowshot):
        rec = record("lowshot", "imagenet", {"1shot_top1": v - 20, "13shot_top1": v}, "swav-a", seed)
        (tmp_path / f"lowshot-s{seed}").mkdir()
        (tmp_path / f"lowshot-s{seed}" / "result.json").write_text(json.dumps(rec))
    recs = {
        "variants": record("imagenet-variants", "imagenet", {"real_top1": 81.0, "v2_top1": 62.0}, "swav-a"),
        "logreg": record("transfer-logreg", "transfer-12", {"mean_top1": 80.5}, "swav-a"),
        "linear": record("linear", "imagenet", {"top1": 75.0, "top1_best_epoch": 75.1}, "swav-a"),
    }
    for name, rec in recs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(rec))
    df, _, _ = collect([tmp_path])
    tables = paper_tables(df, load_reference())
    (beyond,) = [t for t in tables if t.title.startswith("Beyond the paper")]
    assert not any("lowshot" in c.header for t in tables if t.title.startswith("Table") for c in t.columns)
    headers = [c.header for c in beyond.columns]
    assert headers == [
        "lowshot imagenet 1shot_top1",
        "lowshot imagenet 13shot_top1",
        "imagenet-variants imagenet real_top1",
        "imagenet-variants imagenet v2_top1",
        "transfer-logreg transfer-12 mean_top1",
    ]
    rows = dict(beyond.rows)
    cell = rows["swav-a"]["lowshot imagenet 13shot_top1"]
    half = 4.3027 * statistics.stdev(lowshot) / 3**0.5  # t_{0.975, 2} = 4.3027 (t table)
    assert cell.n == 3 and cell.mean == pytest.approx(statistics.mean(lowshot))
    assert cell.ci95 == pytest.approx(half, abs=1e-3)
    assert rows["swav-a"]["imagenet-variants imagenet real_top1"].mean == 81.0
    assert {c.text() for c in rows["published reference"].values()} == {"no published reference"}
    assert set(rows["published reference"]) == set(headers)
    assert "no published reference" in markdown(beyond)


def test_records_carry_their_registry_name_and_land_in_their_entrys_table(tmp_path):
    """Schema 3: ``protocol`` is the registry name, ``benchmark`` the report key. A schema-1 record is renamed
    on reading (detection-* -> detection, linear on a transfer dataset -> transfer-linear), its report key
    kept; a schema-2 DETR record (``detr``) becomes ``detection``. Rows go to the table of their protocol's
    entry: a transfer probe on a dataset no name rule knows (flowers) lands in Table 3, the ImageNet probe in
    Table 1."""
    import json

    from handmade_records import record

    from swavbench.core.record import SCHEMA_VERSION, upgrade

    cases = {
        ("detection-frcnn-fpn", "coco", ()): ("detection", "detection-frcnn-fpn"),
        ("detection-detr", "coco", ()): ("detection", "detection-detr"),
        ("linear", "places205", ()): ("transfer-linear", "linear"),
        ("linear", "imagenet", ()): ("linear", "linear"),
        ("semisup", "imagenet", ("subset", "subset:imagenet-1pct")): ("semisup", "semisup-1pct"),
    }
    for (old, dataset, extra), (name, key) in cases.items():
        v1 = record(old, dataset, {"top1": 1.0}, "swav", config=dict([extra]) if extra else None)
        new = upgrade(v1)
        assert (new["protocol"], new["benchmark"], new["schema_version"]) == (name, key, SCHEMA_VERSION), old
    v2 = record("detr", "coco", {"box_AP": 1.0}, "swav")
    v2 |= {"benchmark": "detection-detr", "schema_version": 2}
    assert (upgrade(v2)["protocol"], upgrade(v2)["benchmark"]) == ("detection", "detection-detr")
    metrics = {"top1": 90.0, "top1_best_epoch": 91.0, "top5": 99.0}
    flowers = {
        **record("transfer-linear", "flowers", metrics, "swav"),
        "benchmark": "linear",
        "schema_version": SCHEMA_VERSION,
    }
    for name, rec in {"flowers": flowers, "imagenet": record("linear", "imagenet", metrics, "swav")}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(rec))
    df, problems, _ = collect([tmp_path])
    assert not problems and set(df.protocol) == {"linear", "transfer-linear"}
    headers = {
        t.title.split(" —")[0]: [c.header for c in t.columns] for t in paper_tables(df, load_reference())
    }
    assert "linear imagenet top1_best_epoch" in headers["Table 1"]
    assert "linear flowers top1_best_epoch" in headers["Table 3"]
    assert not any("flowers" in h for h in headers["Table 1"])
