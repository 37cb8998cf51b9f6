"""What every protocol shares: the trunk settings, loading it, timing, and writing the record
(status 'failed' with the error when the protocol raises, so a sweep never loses track of it). Under
torchrun or a multi-task SLURM job the processes join one group first and the protocol runs data-parallel;
the first process writes the record."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import torch

from benchmark.trunk import LoadedTrunk, TrunkSpec, load_trunk
from swavbench.core import durable, interrupt, ranks, registry, tracking
from swavbench.core.data_root import missing_dataset_hint
from swavbench.core.distributed import init_distributed
from swavbench.core.paths import RECORD
from swavbench.core.record import ResultRecord, allocation_gpus, device_name, write_record


@dataclass
class ImageFolderSplits:
    """The dataset fields of the ImageNet-style protocols (train / val class folders), named under the
    data root (swavbench.core.data_root); their configs extend it, so these fields come first."""

    DATASET_FIELDS: ClassVar[tuple[str, ...]] = ("train", "val")

    dataset: str = "imagenet"
    train: str = "imagenet/train"
    val: str = "imagenet/val"


@dataclass
class TrunkConfig:
    """Architecture used for files that do not name one (torchvision, official SwAV, VISSL, random)."""

    arch: str = "resnet50"
    small_stem: bool = False
    width_multiplier: float = 1.0
    label: str = (
        ""  # row name in reports; "" = derived from the checkpoint (random / supervised / run folder)
    )
    # where the trunk sits in a file of another harness, as DINO's --checkpoint_key (default: found and
    # logged; benchmark/trunk_formats.py): the dict (teacher, state_dict, ...) and the prefix to strip
    key: str = ""
    strip_prefix: str = ""
    # frozen-feature extraction (kNN, SVM, cached linear): fp32 as the reference code, or bf16 autocast on
    # GPUs (faster, opt-in; in the record's config)
    feature_precision: str = "fp32"


def state_key(loaded: LoadedTrunk, cfg: Any, *, ignore: tuple[str, ...] = ("num_workers",)) -> str:
    """What a protocol's resumable state in its output folder belongs to: the trunk (file hash, or
    'random' and its architecture) and the protocol's config except the ``ignore`` fields (how it runs,
    or a longer schedule that continues the run). State of another key is not resumed."""
    trunk = loaded.sha256 or f"{loaded.source}:{asdict(loaded.spec)}"
    settings = {k: v for k, v in asdict(cfg).items() if k not in ignore}
    blob = json.dumps([trunk, settings], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


Body = Callable[[LoadedTrunk, torch.device], tuple[dict[str, float], dict[str, int]]]


def run_and_record(
    protocol: str,
    cfg: Any,
    checkpoint: str,
    *,
    out_dir: str | Path,
    body: Body,
    global_batch: int | None = None,
) -> ResultRecord:
    """Load the trunk, run ``body`` -> (metrics, split sizes), write out_dir/result.json either way.
    The record's dataset and seed are ``cfg.dataset`` and ``cfg.seed``; ``global_batch``: images per
    optimisation step over all processes (recorded; None: no training)."""
    dataset, seed = cfg.dataset, cfg.seed
    info = init_distributed()
    device = ranks.local_device(info.local_rank)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if ranks.is_main():
        durable.remove_stale_temps(out_dir)  # left by a killed earlier run of this protocol here
    loaded: LoadedTrunk | None = None
    t = cfg.trunk
    try:
        spec = TrunkSpec(t.arch, t.small_stem, t.width_multiplier)
        loaded = load_trunk(checkpoint, spec, seed, key=t.key, strip_prefix=t.strip_prefix)
        name = f"{protocol} {dataset} {t.label or loaded.label()} s{seed}"
        with tracking.evaluation(out_dir, name=name, kind=protocol, config=asdict(cfg)) as tracker:
            metrics, splits = body(loaded, device)  # its loops log their curves into the tracker
            tracker.summary(metrics)
    except interrupt.Interrupted:  # state saved at the scheduler's signal: the requeued job continues it
        raise
    except Exception as e:
        hint = missing_dataset_hint(cfg)  # a missing dataset: say which data root was used and how to set one
        error = f"{type(e).__name__}: {e}{hint}" + (f" (process {info.rank})" if info.rank else "")
        record = _record(
            protocol, cfg, checkpoint, loaded=loaded, t0=t0, device=device, global_batch=global_batch
        )
        record.status, record.error, record.checkpoint = "failed", error, str(checkpoint)
        # by every process that failed (the others may wait on it), unless one already said why this run
        # failed: a process that then times out in a collective would hide the cause
        first = Path(out_dir) / RECORD
        earlier = json.loads(first.read_text()) if info.world_size > 1 and first.is_file() else {}
        if not (earlier.get("status") == "failed" and earlier.get("created", "") >= started):
            write_record(record, out_dir)
        if hint and isinstance(e, FileNotFoundError):
            raise FileNotFoundError(f"{e}{hint}") from e
        raise
    record = _record(
        protocol, cfg, checkpoint, loaded=loaded, t0=t0, device=device, global_batch=global_batch
    )
    record.metrics, record.splits = metrics, splits
    record.devices = ranks.all_gather_objects(device_name(device))
    record.gpu_hours = record.wall_time_s * allocation_gpus(info.world_size, device) / 3600
    if ranks.is_main():
        write_record(record, out_dir)
    return record


def _record(
    protocol: str,
    cfg: Any,
    checkpoint: str,
    *,
    loaded: LoadedTrunk | None,
    t0: float,
    device: torch.device,
    global_batch: int | None,
) -> ResultRecord:
    """An ok record of no metrics yet: the protocol's settings, how it ran (since ``t0``, on ``device``)
    and the trunk (what its config says when it did not load)."""
    t = cfg.trunk
    spec = loaded.spec if loaded else TrunkSpec(t.arch, t.small_stem, t.width_multiplier)
    trunk = {}
    if loaded is not None:
        trunk = dict(
            pretrain_epochs=loaded.pretrain_epochs,
            pretrain_batch=loaded.pretrain_batch,
            trunk_provenance=loaded.provenance,
            trunk_recipe=loaded.recipe,
            pretrain_images_seen=loaded.images_seen,
        )
    entry = registry.PROTOCOLS.get(protocol)  # a backend's records name the protocol it is a backend of
    return ResultRecord(
        protocol=entry.record_name if entry else protocol,
        # the report key: the config's own (detection's depends on its head) or the registry's
        benchmark=getattr(cfg, "report_key", None) or registry.benchmark_id(protocol, asdict(cfg)),
        status="ok",
        metrics={},
        checkpoint=loaded.source if loaded else str(checkpoint),
        checkpoint_sha256=loaded.sha256 if loaded else None,
        trunk_kind=loaded.kind if loaded else "unknown",
        arch=spec.arch,
        dataset=cfg.dataset,
        splits={},
        config=asdict(cfg),
        seed=cfg.seed,
        wall_time_s=time.perf_counter() - t0,
        device=device_name(device),
        model=t.label or (loaded.label() if loaded else Path(str(checkpoint)).stem),
        world_size=ranks.world_size(),
        devices=[device_name(device)],
        global_batch=global_batch,
        trunk_arch=spec.name(),
        **trunk,
    )
