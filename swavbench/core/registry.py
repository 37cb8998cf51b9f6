"""The protocol registry: every evaluation and transfer protocol is one entry here, and the command
line, suites, the launcher, ``swavbench status`` and the report read it. Adding a protocol is one
entry plus one module holding its config dataclass and its run function."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swavbench.core.paths import CONFIGS


@dataclass(frozen=True)
class Protocol:
    """One protocol (or one implementation of it, ``part_of``): its registry name (suites, records and
    ``status`` use ``record_name``), the command that runs it, where its code and presets are, and how the
    report shows its records."""

    name: str
    command: tuple[str, str]  # ``swavbench <group> <subcommand>``; presets in configs/<group>/
    module: str  # holds the config dataclass and the run function
    config_class: str
    run_function: str  # run(cfg, checkpoint, out_dir) -> ResultRecord
    paper_presets: tuple[str, ...]  # the published protocols; the first is the default
    small_preset: str  # minutes on a CPU, on the shared small data
    help: str
    benchmarks: tuple[str, ...]  # report keys of its records (``protocol`` field; semisup by label fraction)
    tables: tuple[int, ...]  # paper tables it fills (1: linear / kNN, 2: semi-supervised, 3: transfer)
    headline: tuple[str, ...]  # headline metrics, first present first (status shows one; tables all)
    resumable: bool  # continues from its own state in the output folder when requeued
    data_parallel: bool  # one process per GPU of its job, joined in one group (torchrun / SLURM tasks)
    fine_tunes: bool = False  # trains the trunk (BatchNorm in train mode) instead of probing it frozen
    # batch_size is the global optimisation batch, split over the processes (so it must divide by them);
    # False for the protocols that only extract features (each process takes its share of the images)
    global_batch: bool = True
    # a detection protocol fine-tuning the backbone: the BatchNorm mode when its config names none (the
    # report's "what ran"); None for the classification protocols, which read the pooled res5 features
    backbone_norm: str | None = None
    # the backends ``--backend`` may choose on its command line (auto: the best installed); () for none
    cli_backends: tuple[str, ...] = ()
    # the config field a suite entry's ``after`` job fills with that job's output folder (the probe whose
    # head it measures); "" for a protocol that needs no other job's output
    after_field: str = ""
    # the implementations the published numbers come from: a record of another backend is shown without a
    # verdict ("": a record that names none); () for a protocol with one implementation
    reference_backends: tuple[str, ...] = ()
    # overrides that scale a job to the paper rehearsal (swavbench/checks/rehearsal.py: two CPU processes,
    # so global batches split in two; tiny data in the real formats): size, never protocol
    rehearsal: tuple[str, ...] = ()
    # a backend of another protocol with a config class of its own (DETR of detection): records, suites and
    # ``--backend`` name that protocol; this entry's name stays the implementation's (``swavbench transfer
    # detr``, job keys); ``backend_values``: the config ``backend`` values it runs
    part_of: str = ""
    backend_values: tuple[str, ...] = ()

    @property
    def config_dir(self) -> Path:
        return CONFIGS / self.command[0]

    @property
    def presets(self) -> tuple[str, ...]:
        return (*self.paper_presets, self.small_preset)

    @property
    def record_name(self) -> str:
        """The protocol its records and suites name: the one it is a backend of, else its own."""
        return self.part_of or self.name

    @property
    def backends(self) -> list[Protocol]:
        """The entries that are backends of this protocol with config classes of their own."""
        return [p for p in PROTOCOLS.values() if p.part_of == self.name]

    def implementation(self, backend: object = None) -> Protocol:
        """The entry running a config whose ``backend`` is ``backend``: a backend entry's, else this."""
        return next((b for b in self.backends if backend in b.backend_values), self)

    def default_preset(self, backend: object = None) -> str:
        """The published recipe ``--config`` defaults to, of the implementation ``--backend`` picks."""
        return self.implementation(backend).paper_presets[0]

    def config_type(self) -> type:
        return getattr(importlib.import_module(self.module), self.config_class)

    def runner(self):
        """run(cfg, checkpoint, out_dir) of the implementation of ``cfg`` (its ``backend``)."""
        own = getattr(importlib.import_module(self.module), self.run_function)
        if not self.backends:
            return own

        def run(cfg, *args, **kwargs):
            impl = self.implementation(getattr(cfg, "backend", None))
            return (own if impl is self else impl.runner())(cfg, *args, **kwargs)

        return run

    def load_config(self, preset: str, overrides: list[str] = ()) -> Any:
        """Dataclass defaults <- the preset (a name in ``config_dir`` or a YAML path) <- overrides, in the
        config class of the implementation the preset is a recipe of; a ``backend=`` override naming
        another implementation is refused with the presets that run it."""
        from swavbench.core.config import ConfigError, load_dataclass

        impl = self._stated(preset)
        chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("backend=")]
        other = self.implementation(chosen[-1]) if chosen else impl or self
        if impl is not None and other is not impl:
            raise ConfigError(
                f"preset {preset} is a {impl.name} recipe, and backend={chosen[-1]} runs {other.name}: pick "
                f"one of its presets ({', '.join(other.presets)}) or leave the backend to the preset"
            )
        # a YAML of the user's naming no backend (impl None): the override, else this entry, chooses
        return load_dataclass(other.config_type(), self.config_dir, preset, overrides=list(overrides))

    def recipe_of(self, preset: str) -> Protocol:
        """The implementation ``preset`` is a recipe of (``_stated``), else this entry."""
        return self._stated(preset) or self

    def _stated(self, preset: str) -> Protocol | None:
        """The implementation a preset names: the entry (this or a backend) listing it, or the one whose
        backend a YAML file states; None for a YAML stating none."""
        listed = next((b for b in [self, *self.backends] if preset in b.presets), None)
        path = Path(preset)
        if listed or not self.backends or path.suffix not in (".yaml", ".yml") or not path.is_file():
            return listed or self
        import yaml

        text = yaml.safe_load(path.read_text())
        stated = text.get("backend") if isinstance(text, dict) else None
        return self.implementation(stated) if stated is not None else None


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="linear",
            command=("eval", "linear"),
            module="benchmark.linear",
            config_class="LinearConfig",
            run_function="run_linear",
            paper_presets=("linear-imagenet", "linear-imagenet-grid"),
            small_preset="linear-cifar10-small",
            help="linear probe on the frozen trunk (lr x wd grid in one pass; augmented or cached features)",
            benchmarks=("linear",),
            tables=(1,),
            headline=("top1_best_epoch", "top1", "top5"),  # best epoch: as the official eval_linear.py
            resumable=True,
            data_parallel=True,
            rehearsal=("num_workers=0", "crop=32", "resize=40", "epochs=1", "batch_size=8"),
        ),
        Protocol(
            name="knn",
            command=("eval", "knn"),
            module="benchmark.knn",
            config_class="KnnConfig",
            run_function="run_knn",
            paper_presets=("knn-imagenet",),
            small_preset="knn-cifar10-small",
            help="weighted kNN (k = 10/20/100/200, T = 0.07) on L2-normalised frozen features (faiss)",
            benchmarks=("knn",),
            tables=(1,),
            headline=("k20_top1",),
            resumable=False,
            data_parallel=True,
            global_batch=False,
            rehearsal=("num_workers=0", "crop=32", "resize=40", "batch_size=8"),
        ),
        Protocol(
            name="semisup",
            command=("eval", "semisup"),
            module="benchmark.semisup",
            config_class="SemisupConfig",
            run_function="run_semisup",
            paper_presets=("semisup-imagenet-1pct", "semisup-imagenet-10pct"),
            small_preset="semisup-cifar10-small",
            help="semi-supervised fine-tuning of trunk + linear head on a labelled subset "
            "(1 or 10 percent of the labels)",
            benchmarks=("semisup-1pct", "semisup-10pct", "semisup"),
            tables=(2,),
            headline=("top1_best_epoch", "top5_best_epoch", "top1", "top5"),  # best epoch, as eval_semisup.py
            resumable=True,
            data_parallel=True,
            fine_tunes=True,
            rehearsal=("num_workers=0", "crop=32", "resize=40", "epochs=1", "batch_size=4"),
        ),
        Protocol(
            name="lowshot",
            command=("eval", "lowshot"),
            module="benchmark.lowshot",
            config_class="LowshotConfig",
            run_function="run_lowshot",
            paper_presets=("lowshot-imagenet",),
            small_preset="lowshot-cifar10-small",
            help="low-shot ImageNet: logistic regression on frozen features of 1 / 2 / 5 / 13 images per "
            "class, fixed-seed draws, mean ± CI (MSN, Assran et al. 2022)",
            benchmarks=("lowshot",),
            tables=(),  # beyond the paper's tables
            headline=("1shot_top1", "2shot_top1", "5shot_top1", "13shot_top1"),
            resumable=False,
            data_parallel=True,
            global_batch=False,
            rehearsal=("num_workers=0", "crop=32", "resize=40", "shots=[1,2]", "draws=2", "batch_size=8"),
        ),
        Protocol(
            name="imagenet-variants",
            command=("eval", "imagenet-variants"),
            module="benchmark.imagenet_variants",
            config_class="ImagenetVariantsConfig",
            run_function="run_imagenet_variants",
            paper_presets=("imagenet-variants",),
            small_preset="imagenet-variants-cifar10-small",
            help="ImageNet-ReaL, -V2 (matched frequency), -A and -R (200-class mask) top-1 with a trained "
            "linear head (this harness' probe or the official eval_linear checkpoint), no retraining",
            benchmarks=("imagenet-variants",),
            tables=(),  # beyond the paper's tables
            headline=("val_top1", "real_top1", "v2_top1", "a_top1", "r_top1"),
            resumable=False,
            data_parallel=True,
            global_batch=False,
            after_field="head",
            rehearsal=("num_workers=0", "crop=32", "resize=40", "batch_size=8"),
        ),
        Protocol(
            name="transfer-linear",
            command=("transfer", "linear"),
            module="transfer.classification",
            config_class="TransferLinearConfig",
            run_function="run_transfer_linear",
            paper_presets=("linear-places205", "linear-inat18"),
            small_preset="linear-scene15-small",
            help="linear classification on frozen features of Places205 / iNat18 / an image folder",
            benchmarks=("linear",),
            tables=(3,),
            headline=("top1_best_epoch", "top1", "top5"),
            resumable=True,
            data_parallel=True,
            rehearsal=("num_workers=0", "crop=32", "resize=40", "epochs=1", "batch_size=8"),
        ),
        Protocol(
            name="transfer-logreg",
            command=("transfer", "logreg"),
            module="transfer.logreg_suite",
            config_class="LogregConfig",
            run_function="run_logreg",
            paper_presets=("logreg-12",),
            small_preset="logreg-shared-small",
            help="linear transfer over many datasets: L-BFGS logistic regression on frozen features, C "
            "chosen on a validation split (Kornblith et al. 2019; DINOv2)",
            benchmarks=("transfer-logreg",),
            tables=(),  # beyond the paper's tables
            headline=("mean_top1",),
            resumable=False,
            data_parallel=True,
            global_batch=False,
            rehearsal=("num_workers=0", "crop=32", "resize=40", "c_steps=3", "max_iter=100", "batch_size=8"),
        ),
        Protocol(
            name="svm",
            command=("eval", "svm"),
            module="benchmark.svm",
            config_class="SvmConfig",
            run_function="run_svm",
            paper_presets=("svm-voc07", "svm-voc07-lowshot"),
            small_preset="svm-bccd-small",
            help="VOC07 linear SVMs per class on frozen features, C by cross-validation, all-points AP "
            "(and low-shot)",
            benchmarks=("svm", "svm-lowshot"),
            tables=(3,),
            headline=("mAP",),
            resumable=False,
            data_parallel=True,
            global_batch=False,
            rehearsal=("num_workers=0", "crop=32", "resize=32", "batch_size=8"),
        ),
        Protocol(
            name="detection",
            command=("transfer", "detection"),
            module="transfer.detection",
            config_class="DetectionConfig",
            run_function="run_detection",
            paper_presets=("detection-voc0712-c4", "detection-coco-maskrcnn-fpn"),
            small_preset="detection-bccd-c4-small",
            help="fine-tune Faster R-CNN (C4 or FPN) or Mask R-CNN on the trunk and report VOC AP / AP50 / "
            "AP75 or COCO box / mask AP (backend=detectron2 or torchvision), or DETR (backend=transformers, "
            "presets detr-*)",
            benchmarks=("detection-frcnn-c4", "detection-maskrcnn-fpn", "detection-frcnn-fpn"),
            tables=(3,),
            headline=("AP50", "AP", "AP75", "box_AP", "mask_AP"),
            resumable=True,
            data_parallel=True,
            fine_tunes=True,
            backbone_norm="",
            cli_backends=("auto", "detectron2", "torchvision", "transformers"),
            reference_backends=("detectron2", ""),
            rehearsal=(
                "num_workers=0",
                "iterations=2",
                "batch_size=2",
                "min_size_train=[96]",
                "max_size_train=160",
                "min_size_test=96",
                "max_size_test=160",
                "rois_per_image=16",
                "proposals_test=50",
                "warmup_iters=1",
                "steps=[1]",
                "checkpoint_every=1",
            ),
        ),
        Protocol(
            name="detr",
            command=("transfer", "detr"),
            module="transfer.detr",
            config_class="DetrTransferConfig",
            run_function="run_detr",
            paper_presets=("detr-coco",),
            small_preset="detr-bccd-small",
            help="fine-tune DETR (transformers' port of the official code) on the trunk; COCO box AP. The "
            "transformers backend of `transfer detection` (--backend transformers)",
            benchmarks=("detection-detr",),
            tables=(3,),
            headline=("box_AP", "box_AP50", "box_AP75"),
            resumable=True,
            data_parallel=True,
            fine_tunes=True,
            backbone_norm="frozen",  # the official backbone's frozen BatchNorm (no norm setting)
            # transformers' DETR is a port of the official code; transfer/detr.py restores the official
            # initialisation, auxiliary losses and loss normalisation around it
            reference_backends=("transformers",),
            part_of="detection",
            backend_values=("transformers",),
            rehearsal=(
                "num_workers=0",
                "epochs=1",
                "batch_size=2",
                "hidden_dim=32",
                "enc_layers=1",
                "dec_layers=2",
                "ffn_dim=64",
                "num_queries=10",
                "scales=[96]",
                "max_size=160",
                "crop_scales=[96]",
                "crop_size=[64,96]",
                "test_size=96",
                "checkpoint_every=1",
            ),
        ),
    )
}


def get(name: str) -> Protocol:
    """The entry of ``name``, or a KeyError listing every protocol."""
    if name not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}; protocols: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def for_preset(preset: str) -> Protocol:
    """The entry whose presets include ``preset`` (preset names are unique across protocols)."""
    found = [p for p in PROTOCOLS.values() if preset in p.presets]
    if not found:
        raise KeyError(f"no protocol has a preset {preset!r}")
    return found[0]


def in_group(group: str) -> list[Protocol]:
    """Entries run by ``swavbench <group> ...`` (eval, transfer), in registry order."""
    return [p for p in PROTOCOLS.values() if p.command[0] == group]


def benchmark_id(protocol: str, config: dict) -> str:
    """The report key of a run of ``protocol`` with ``config``: its entry's one key (``linear`` for both
    probes), semisup runs split by label fraction (the published tables key them that way), low-shot SVM
    runs apart from the full-data SVM (their mAP is the same protocol's, but they are another job of another
    configuration: one table cell, one run). A name of no entry (a version-1 record's) is its own key."""
    if protocol == "semisup":
        m = re.search(r"(\d+)pct", str(config.get("subset", "")))
        return f"semisup-{m.group(1)}pct" if m else "semisup"
    if protocol == "svm" and config.get("low_shot_ks"):
        return "svm-lowshot"
    entry = PROTOCOLS.get(protocol)
    return entry.benchmarks[0] if entry is not None and len(entry.benchmarks) == 1 else protocol


def for_benchmark(benchmark: str) -> Protocol | None:
    """The first entry whose records carry ``benchmark`` (``linear`` records of both linear
    protocols read the same way), else the first whose keys share its family (``semisup-5pct``:
    semisup), or None for a record of no registered protocol."""
    exact = next((p for p in PROTOCOLS.values() if benchmark in p.benchmarks), None)
    family = benchmark.split("-")[0]
    return exact or next(
        (p for p in PROTOCOLS.values() if any(b.split("-")[0] == family for b in p.benchmarks)), None
    )


def for_record(protocol: str, benchmark: str) -> Protocol | None:
    """The entry of a record: of the entries its ``protocol`` names (the protocol and its backends) the
    one whose report keys hold ``benchmark``, else the protocol's, else the one its report key belongs to
    (``for_benchmark``), else None."""
    named = [p for p in PROTOCOLS.values() if p.record_name == protocol]
    return (
        next((p for p in named if benchmark in p.benchmarks), None)
        or PROTOCOLS.get(protocol)
        or (for_benchmark(benchmark))
    )


def benchmarks_of_table(table: int) -> list[str]:
    """Report keys of the protocols that fill ``table``, in registry order (the column order)."""
    out: list[str] = []
    for p in PROTOCOLS.values():
        if table in p.tables:
            out += [b for b in p.benchmarks if b not in out]
    return out


def beyond_paper_benchmarks() -> list[str]:
    """Report keys of the protocols the paper's tables do not hold (low-shot, ImageNet variants, the
    many-dataset transfer), in registry order: the report's "beyond the paper" table."""
    return list(dict.fromkeys(b for p in PROTOCOLS.values() if not p.tables for b in p.benchmarks))


def all_benchmarks() -> list[str]:
    """Every report key, tables 1, 2, 3 in order, each once."""
    return list(dict.fromkeys(b for t in (1, 2, 3) for b in benchmarks_of_table(t)))
