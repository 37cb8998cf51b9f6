"""Load a ResNet trunk for evaluation from any checkpoint format the harness meets.

Formats: a swav-bench checkpoint (its config names the architecture); the official SwAV
release (flat or under "state_dict", ``module.`` prefix, head/prototype keys dropped); a
torchvision or timm state dict (``fc.*`` dropped; labelled by its file name or its conversion provenance,
never "supervised" by format: ``trunk.label=supervised`` names a supervised baseline); a VISSL checkpoint
(``classy_state_dict`` ... ``trunk`` with ``_feature_blocks.`` keys); DINO, MoCo v2 / v3 and Lightning
(solo-learn, stable-pretraining) files and ``.safetensors`` (benchmark/trunk_formats.py); or ``random``
(seeded initialisation: the floor of every table). Keys must match the trunk exactly: a checkpoint
of another architecture is refused instead of evaluating random weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark.trunk_formats import locate
from pretrain.checkpoint import FORMAT, split_trunk_state
from pretrain.config import config_from_dict
from pretrain.model import Trunk, build_trunk, parse_arch
from swavbench.core.config import flatten
from swavbench.core.state import CheckpointError, load_checkpoint


class TrunkLoadError(CheckpointError):
    """The checkpoint does not hold a trunk of the requested architecture."""


@dataclass
class TrunkSpec:
    """Which trunk to build when the checkpoint does not say (torchvision / official / VISSL files)."""

    arch: str = "resnet50"
    small_stem: bool = False
    width_multiplier: float = 1.0

    def name(self) -> str:
        """The architecture as the published tables name it, with CPU-sized variants spelled out so that
        they are never compared with full-size rows: resnet50, resnet50w2, resnet50w0.125-smallstem."""
        try:
            depth, width = parse_arch(self.arch)
        except ValueError:  # not an architecture we build: named as given
            return self.arch
        width *= self.width_multiplier
        stem = "-smallstem" if self.small_stem else ""
        return f"resnet{depth}" + (f"w{width:g}" if width != 1 else "") + stem


@dataclass
class LoadedTrunk:
    trunk: Trunk
    source: str  # path or "random"
    kind: str  # swav-bench | official-swav | torchvision | vissl | random
    spec: TrunkSpec
    sha256: str | None = None
    ignored_keys: list[str] = field(default_factory=list)  # head keys dropped on purpose
    pretrain_epochs: int | None = None  # from a swav-bench checkpoint (or its conversion's provenance)
    supervised: bool = False  # trained with labels: `swavbench pretrain --supervised` checkpoints only
    pretrain_batch: int | None = None  # pretraining global batch, from a swav-bench checkpoint
    provenance: dict | None = None  # PROVENANCE file beside a converted trunk: where it came from
    recipe: str | None = None  # the pretraining that made it, its seed aside (recipe_of)
    images_seen: int | None = None  # images its SwAV pretraining trained on (a swav-bench checkpoint's count)

    def label(self) -> str:
        """Row name in reports: random, supervised (``--supervised`` checkpoints), a swav-bench checkpoint's
        run folder, a converted file's source label, or the file stem (unknown provenance: never
        'supervised', whatever the format; ``trunk.label`` names it)."""
        if self.kind == "random":
            return "random"
        if self.supervised:
            return "supervised"
        if self.provenance and self.provenance.get("label"):
            return str(self.provenance["label"])
        path = Path(self.source)
        return path.parent.name if self.kind == "swav-bench" else path.stem


PROVENANCE_SUFFIX = ".provenance.json"


def provenance_path(path: str | Path) -> Path:
    """Where ``swavbench convert`` records the source of a converted file: ``<file>.provenance.json``."""
    return Path(f"{path}{PROVENANCE_SUFFIX}")


def read_provenance(path: Path, sha256: str) -> dict | None:
    """The provenance beside a converted file, if it is there and still describes it (the file's
    ``sha256``, hashed once by the caller)."""
    side = provenance_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrunkLoadError(f"{side}: unreadable provenance ({e}); remove it or convert again") from e
    if data.get("sha256") != sha256:
        return None  # the file was replaced since: its provenance is unknown
    return data


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _unwrap(
    ckpt: dict, path: Path, *, key: str = "", strip_prefix: str = ""
) -> tuple[str, dict[str, torch.Tensor], TrunkSpec | None]:
    """(kind, raw trunk-ish state dict, spec from the file if it has one)."""
    if ckpt.get("format") == FORMAT:
        m = config_from_dict({"model": ckpt["config"]["model"]}).model
        return "swav-bench", ckpt["state_dict"], TrunkSpec(m.arch, m.small_stem, m.width_multiplier)
    if "classy_state_dict" in ckpt:
        try:
            trunk = ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
        except (KeyError, TypeError):
            raise TrunkLoadError(
                f"{path}: VISSL checkpoint without classy_state_dict.base_model.model.trunk"
            ) from None
        return "vissl", {k.removeprefix("_feature_blocks."): v for k, v in trunk.items()}, None
    try:
        found = locate(ckpt, str(path), key=key, strip_prefix=strip_prefix or None)
    except KeyError as e:
        raise TrunkLoadError(e.args[0]) from None
    return found.harness, found.state, None


def recipe_of(ckpt: dict, sha256: str) -> str:
    """The identity of the pretraining a checkpoint comes from, its seed aside: a swav-bench checkpoint's
    stored config without the run settings a resumed run may change and without ``run.seed``; any other
    file is its own recipe (its sha256)."""
    if ckpt.get("format") != FORMAT or not isinstance(ckpt.get("config"), dict):
        return sha256[:16]
    from pretrain.train import RESUMABLE_CHANGES

    settings = {k: v for k, v in flatten(ckpt["config"]).items() if k not in (*RESUMABLE_CHANGES, "run.seed")}
    blob = json.dumps([bool(ckpt.get("supervised")), settings], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_weights(path: Path) -> dict:
    """A checkpoint file as a dict: torch files read weights-only, objects of other libraries as inert
    stand-ins (a Lightning or DINO file carries some); ``.safetensors`` through safetensors."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({e})") from e
    return load_checkpoint(path, foreign=True)


def load_trunk(
    source: str | Path, spec: TrunkSpec | None = None, seed: int = 0, *, key: str = "", strip_prefix: str = ""
) -> LoadedTrunk:
    """Build the trunk and load weights from ``source`` (a file, or 'random'), strictly. ``key`` /
    ``strip_prefix``: where the trunk sits in a file of another harness (default: found, and logged)."""
    spec = spec or TrunkSpec()
    if str(source) == "random":
        torch.manual_seed(seed)
        return LoadedTrunk(
            build_trunk(spec.arch, small_stem=spec.small_stem, width_multiplier=spec.width_multiplier),
            "random",
            "random",
            spec,
            recipe=f"random:{spec.name()}",
        )
    path = Path(source)
    ckpt = read_weights(path)
    kind, raw, file_spec = _unwrap(ckpt, path, key=key, strip_prefix=strip_prefix)
    spec = file_spec or spec
    state, ignored = split_trunk_state(raw)
    trunk = build_trunk(spec.arch, small_stem=spec.small_stem, width_multiplier=spec.width_multiplier)
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        shapes = [
            f"{k} {list(state[k].shape)} in the file, {list(expected[k].shape)} here" for k in wrong_shape
        ]
        for name, keys in (("wrong shape", shapes), ("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {name} (first: {', '.join(keys[:3])})")
        raise TrunkLoadError(
            f"{path} ({kind}) does not match a {spec.arch} trunk (small_stem={spec.small_stem}, "
            f"width x{spec.width_multiplier}): {'; '.join(parts)}. "
            "Pass the architecture the checkpoint was trained with."
        )
    trunk.load_state_dict(state, strict=True)
    sha = sha256_of(path)  # once: the record's identity, the provenance check and the recipe
    prov = read_provenance(path, sha) if kind != "swav-bench" else None
    if kind == "swav-bench":
        epochs, supervised = ckpt.get("epoch"), bool(ckpt.get("supervised"))
        batch = (ckpt.get("batch_plan") or {}).get("global_batch")
    elif prov:
        epochs, supervised = prov.get("pretrain_epochs"), bool(prov.get("supervised"))
        batch = prov.get("pretrain_batch")
    else:
        epochs, supervised, batch = None, False, None
    return LoadedTrunk(
        trunk,
        str(path),
        kind,
        spec,
        sha,
        ignored,
        epochs,
        supervised,
        pretrain_batch=batch,
        provenance=prov,
        recipe=recipe_of(ckpt, sha),
        images_seen=ckpt.get("images_seen") if kind == "swav-bench" else None,
    )
