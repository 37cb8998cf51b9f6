"""Every paper preset resolves to the published protocol: a table of the values the paper (appendix A.5,
Tables 1-3) and the reference code state, checked against the resolved config, field by field."""

import pytest

from swavbench.core.registry import PROTOCOLS

VOC07_SVM_COSTS = [0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0]  # VISSL voc07 config

# preset -> {field: published value}; source in the comment
PUBLISHED = {
    # paper A.5 / official eval_linear.py: SGD 0.3, momentum 0.9, wd 1e-6, cosine, 100 epochs, batch 256
    "linear-imagenet": dict(
        epochs=100,
        batch_size=256,
        lrs=[0.3],
        weight_decays=[1e-6],
        momentum=0.9,
        schedule="cosine",
        final_lr=0.0,
        nesterov=False,
        crop=224,
        resize=256,
    ),
    # the same probe with an lr x wd grid in one pass (not a published protocol: a search around it)
    "linear-imagenet-grid": dict(
        epochs=100, batch_size=256, lrs=[0.03, 0.1, 0.3, 1.0], weight_decays=[0.0, 1e-6], schedule="cosine"
    ),
    # paper A.5 "mostly follow PIRL": lr 0.01 / 10 three times at equal intervals, wd 1e-4, momentum 0.9
    "linear-places205": dict(
        epochs=28,
        batch_size=256,
        lrs=[0.01],
        weight_decays=[1e-4],
        momentum=0.9,
        nesterov=False,
        schedule="multistep",
        milestones=[7, 14, 21],
        gamma=0.1,
        crop=224,
        resize=256,
    ),
    "linear-inat18": dict(
        epochs=84,
        batch_size=256,
        lrs=[0.01],
        weight_decays=[1e-4],
        momentum=0.9,
        nesterov=False,
        schedule="multistep",
        milestones=[21, 42, 63],
        gamma=0.1,
        crop=224,
        resize=256,
    ),
    # official eval_semisup.py: 20 epochs, x0.2 at 12 and 16, no wd; 1%: 0.02 / 5, 10%: 0.01 / 0.2
    "semisup-imagenet-1pct": dict(
        epochs=20,
        batch_size=256,
        trunk_lr=0.02,
        head_lr=5.0,
        milestones=[12, 16],
        gamma=0.2,
        weight_decay=0.0,
        subset="subset:imagenet-1pct",
    ),
    "semisup-imagenet-10pct": dict(
        epochs=20,
        batch_size=256,
        trunk_lr=0.01,
        head_lr=0.2,
        milestones=[12, 16],
        gamma=0.2,
        weight_decay=0.0,
        subset="subset:imagenet-10pct",
    ),
    # paper A.5 VOC07 SVM: resize 256, center crop 224; Goyal et al. / VISSL cost grid, 3-fold CV
    "svm-voc07": dict(
        resize=256,
        crop=224,
        std=[0.229, 0.224, 0.225],
        costs=VOC07_SVM_COSTS,
        cv_folds=3,
        positive_weight=2.0,
        difficult_in_training="negative",
        low_shot_ks=[],
    ),
    # Goyal et al. 2019 low-shot: k in 1..96, 5 draws, (classes - 1) x k sampled negatives
    "svm-voc07-lowshot": dict(
        resize=256,
        crop=224,
        costs=VOC07_SVM_COSTS,
        low_shot_ks=[1, 2, 4, 8, 16, 32, 64, 96],
        low_shot_samples=5,
        low_shot_negatives="sampled",
    ),
    # DINO eval_knn.py setting the harness follows: k in {10, 20, 100, 200}, T 0.07, 256 / 224
    "knn-imagenet": dict(
        ks=[10, 20, 100, 200],
        temperature=0.07,
        resize=256,
        crop=224,
        interpolation="bicubic",
        std=[0.229, 0.224, 0.225],
    ),
    # MSN (Assran et al. 2022) Sec. 5.1 / logistic_eval.py: 1, 2, 5 images per class and 1% (~13), three
    # subsets each, cyanure lambd 0.0025; the view of DINO's eval_knn.py, whose features it shares
    "lowshot-imagenet": dict(
        shots=[1, 2, 5, 13],
        draws=3,
        lambd=0.0025,
        resize=256,
        crop=224,
        interpolation="bicubic",
        std=[0.229, 0.224, 0.225],
    ),
    # the official eval_linear.py val view (Resize 256, CenterCrop 224) under the trained head; the four sets
    "imagenet-variants": dict(
        resize=256,
        crop=224,
        val="imagenet/val",
        real_labels="imagenet/real.json",
        v2="imagenetv2-matched-frequency",
        a="imagenet-a",
        r="imagenet-r",
    ),
    # Kornblith et al. 2019 sec. 3: L-BFGS logistic regression, C among 45 log-spaced values in [1e-6, 1e5]
    # chosen on a validation split of train, 224 px center crops; their Table 1's 12 datasets
    "logreg-12": dict(
        c_min=1e-6,
        c_max=1e5,
        c_steps=45,
        resize=224,
        crop=224,
        names=[
            "food101",
            "cifar10",
            "cifar100",
            "birdsnap",
            "sun397",
            "cars",
            "aircraft",
            "voc2007",
            "dtd",
            "pets",
            "caltech101",
            "flowers",
        ],
    ),
}

# detection: paper A.5 on MoCo's C4 recipe (VOC) / the 1x R50-FPN recipe (COCO); torchvision pixel statistics
TORCHVISION_PIXELS = dict(pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
DETECTION = {
    "detection-voc0712-c4": dict(
        head="c4",
        extra_norm=True,
        norm="syncbn",
        freeze_at=0,
        iterations=24000,
        batch_size=16,
        lr=0.1,
        steps=[18000, 22000],
        gamma=0.1,
        warmup_iters=1000,
        warmup_factor=0.333,
        min_size_train=list(range(480, 801, 32)),
        min_size_test=800,
        use_07_metric=True,
        backend="detectron2",
        **TORCHVISION_PIXELS,
    ),
    "detection-coco-maskrcnn-fpn": dict(
        head="fpn",
        masks=True,
        norm="syncbn",
        freeze_at=0,
        iterations=90000,
        batch_size=16,
        steps=[60000, 80000],
        min_size_train=list(range(640, 801, 32)),
        min_size_test=800,
        backend="detectron2",
        **TORCHVISION_PIXELS,
    ),
}
PUBLISHED |= DETECTION
# SwAV Table 3 DETR: the paper's recipe (300 epochs, AdamW, transformer lr 1e-4, backbone lr from {1e-5,
# 5e-5, 1e-4}: SwAV's 5e-5 in the facebookresearch/swav README's DETR command), wd 1e-4, x0.1 after 200
# epochs, batch 64 (4 x 16 GPUs), with facebookresearch/detr main.py's defaults
PUBLISHED["detr-coco"] = dict(
    epochs=300,
    lr_drop=200,
    batch_size=64,
    lr=1e-4,
    lr_backbone=5e-5,
    weight_decay=1e-4,
    clip_max_norm=0.1,
    num_queries=100,
    hidden_dim=256,
    enc_layers=6,
    dec_layers=6,
    ffn_dim=2048,
    nheads=8,
    dropout=0.1,
    aux_loss=True,
    class_cost=1.0,
    bbox_cost=5.0,
    giou_cost=2.0,
    bbox_loss_coef=5.0,
    giou_loss_coef=2.0,
    eos_coef=0.1,
    scales=list(range(480, 801, 32)),
    max_size=1333,
    crop_scales=[400, 500, 600],
    crop_size=[384, 600],
    test_size=800,
    freeze_at=2,
    init="detr",
)


def _presets():
    for entry in PROTOCOLS.values():
        for preset in entry.paper_presets:
            yield entry, preset


def test_every_paper_preset_is_in_the_table():
    assert {p for _, p in _presets()} == set(PUBLISHED), "every paper preset has a row, every row a preset"


def test_the_paper_suite_runs_voc_detection_five_times():
    from slurm.suite import load_suite

    voc = next(e for e in load_suite("paper").entries if e.preset == "detection-voc0712-c4")
    assert voc.seeds == [0, 1, 2, 3, 4]  # paper A.5: the mean of 5 runs


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_paper_preset_resolves_to_the_published_values(preset):
    entry = next(e for e, p in _presets() if p == preset)
    cfg = entry.load_config(preset)
    got = {k: getattr(cfg, k) for k in PUBLISHED[preset]}
    assert got == PUBLISHED[preset]


def test_the_five_voc_runs_are_five_jobs_of_their_own(tmp_path):
    """The paper suite's VOC07+12 entry plans one job per seed, each with its own output folder, so the
    table's mean ± CI is over 5 records."""
    from slurm.launch import Launcher
    from slurm.suite import load_suite

    paper = load_suite("paper")
    voc = [e for e in paper.entries if e.preset == "detection-voc0712-c4"]
    suite = type(paper)(**{**paper.__dict__, "entries": voc})
    planned = Launcher(tmp_path, "local", dry_run=True).suite(suite, "random")
    assert sorted(p.name.rsplit("-s", 1)[1] for p in planned) == ["0", "1", "2", "3", "4"]
    assert len({p.out_dir for p in planned}) == 5 and {p.action for p in planned} == {"dry-run"}
