"""One feature cache for the frozen-feature protocols (kNN, the cached linear probe, the SVMs): the features
of one trunk on one split through one view are extracted once and shared by every protocol and retry that
asks for them. Enabled by ``$SWAVBENCH_FEATURE_CACHE`` (a folder; launched jobs use ``RUN_DIR/features``
unless it is set; ``off`` turns the cache off, also for launches).

A file's key hashes what made it: the trunk (the checkpoint's sha256, or a random trunk's weights), the
split's images (their paths and labels, in order), the view (the transform's parameters) and the precision.
Files are written whole and atomically (the durable writer), so readers never see a partial one; a file
that vanishes or does not read (evicted, damaged) is a miss. The folder is bounded
(``$SWAVBENCH_FEATURE_CACHE_GB``, 20 by default): after each write the least recently used files go first."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from benchmark import features
from swavbench.core import durable, ranks
from swavbench.core.state import CheckpointError, load_checkpoint

log = logging.getLogger("swavbench.features")

CACHE_ENV = "SWAVBENCH_FEATURE_CACHE"
SIZE_ENV = "SWAVBENCH_FEATURE_CACHE_GB"
SUFFIX = ".features.pt"
OFF = "off"  # $SWAVBENCH_FEATURE_CACHE=off: every protocol extracts its own features


def trunk_identity(loaded) -> str:  # noqa: ANN001 - benchmark.trunk.LoadedTrunk
    """The file's sha256, or for a random trunk the hash of its weights (its seed decides them)."""
    if loaded.sha256:
        return loaded.sha256
    h = hashlib.sha256()
    for name, t in sorted(loaded.trunk.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return "weights:" + h.hexdigest()


def split_identity(dataset) -> str | None:  # noqa: ANN001 - an ImageFolder or a VOCImages split
    """The images of a split in order (paths and labels), hashed; None for a dataset without a list."""
    items = getattr(dataset, "samples", None) or [
        (str(p), i) for i, p in enumerate(getattr(dataset, "paths", []))
    ]
    if not items:
        return None
    return hashlib.sha256(json.dumps([[str(p), int(y)] for p, y in items]).encode()).hexdigest()


def evict(folder: Path, max_bytes: float, *, keep: Path) -> list[Path]:
    """Remove the least recently used cache files until the folder holds at most ``max_bytes``."""
    files = []
    for p in folder.glob(f"*{SUFFIX}"):
        try:
            files.append((p.stat().st_mtime, p.stat().st_size, p))
        except FileNotFoundError:  # removed by another job meanwhile
            continue
    total, gone = sum(size for _, size, _ in files), []
    for _, size, p in sorted(files):
        if total <= max_bytes:
            break
        if p != keep:
            p.unlink(missing_ok=True)
            total -= size
            gone.append(p)
    return gone


def _entry(loaded, dataset, cfg) -> tuple[Path, str] | None:  # noqa: ANN001
    """(file, key) of ``dataset``'s features through ``cfg``'s view and precision; None without a cache."""
    folder = os.environ.get(CACHE_ENV, "")
    split = split_identity(dataset) if folder and folder != OFF else None
    if not split:
        return None
    view = repr(getattr(dataset, "transform", None))
    blob = json.dumps([trunk_identity(loaded), split, view, cfg.trunk.feature_precision])
    return Path(folder) / (hashlib.sha256(blob.encode()).hexdigest()[:32] + SUFFIX), blob


def lookup(loaded, dataset, *, cfg, desc: str) -> tuple | None:  # noqa: ANN001
    """The cached (features, labels) of ``dataset`` when every process finds them, else None (nothing is
    extracted): a protocol that needs a few images can take them from a whole split another one cached."""
    return _read(_entry(loaded, dataset, cfg), desc)


def _read(entry: tuple[Path, str] | None, desc: str) -> tuple | None:
    if entry is None:
        return None
    path, blob = entry
    try:
        hit = load_checkpoint(path) if path.is_file() else None
    except CheckpointError:  # evicted while read, or damaged: extracted again
        hit = None
    if not ranks.all_ranks(hit is not None and hit.get("key") == blob):
        return None
    if ranks.is_main():
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # recently used: evicted last
    log.info("features of %s from the cache (%s)", desc, path.name)
    return hit["features"], hit["labels"]


def extract(loaded, dataset, device: torch.device, *, cfg, desc: str) -> tuple:  # noqa: ANN001
    """``features.extract_features`` of ``loaded.trunk`` on ``dataset`` as a protocol's ``cfg`` asks (its
    global ``batch_size``, ``num_workers``, ``trunk.feature_precision``), through the cache when one is set:
    every process of the job loads the file, or every process extracts (rank 0 then writes it)."""
    entry = _entry(loaded, dataset, cfg)  # the trunk hashed once
    hit = _read(entry, desc)
    if hit is not None:
        return hit
    kw = {
        "batch_size": max(1, cfg.batch_size // ranks.world_size()),  # this process' share
        "num_workers": cfg.num_workers,
        "desc": desc,
        "precision": cfg.trunk.feature_precision,
    }
    feats, labels = features.extract_features(loaded.trunk, dataset, device, **kw)
    if entry is not None and ranks.is_main():
        path, blob = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        durable.torch_save({"key": blob, "features": feats, "labels": labels}, path)
        evict(path.parent, float(os.environ.get(SIZE_ENV, "20")) * 2**30, keep=path)
    return feats, labels
