"""Where the ResNet trunk sits in checkpoints of other harnesses, and which harness wrote the file.

A trunk is found as a key prefix P under which ``P + conv1.weight`` and ``P + layer1.0.conv1.weight``
exist, in the file's top level or in one of its dicts (``state_dict``, ``model``, DINO's ``teacher`` /
``student``). Known layouts:

- DINO (``main_dino.py``): ``teacher`` / ``student`` with ``module.`` and ``backbone.`` prefixes; the
  teacher is evaluated, as DINO's ``--checkpoint_key teacher`` does;
- MoCo v2 ``module.encoder_q.`` (``encoder_k`` is the momentum copy), MoCo v3 ``module.base_encoder.``
  (``momentum_encoder``);
- Lightning ``.ckpt`` (solo-learn, stable-pretraining): ``state_dict`` with ``backbone.``
  (``momentum_backbone.`` is the momentum copy);
- torchvision and timm ResNets (the same key names, no prefix), flat or as ``safetensors``.

``key`` and ``strip_prefix`` choose by hand (as DINO's ``--checkpoint_key``). When several trunks remain
and none is the online encoder, the error lists them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger("swavbench.trunk")

ANCHORS = ("conv1.weight", "layer1.0.conv1.weight")  # what makes a prefix a ResNet trunk
# the online (evaluated) encoder of each layout, best first; momentum / target copies are never chosen
ONLINE = (
    "",
    "module.",
    "backbone.",
    "module.backbone.",
    "encoder_q.",
    "module.encoder_q.",
    "base_encoder.",
    "module.base_encoder.",
    "encoder.",
    "module.encoder.",
    "model.",
    "trunk.",
)
DICT_KEYS = ("state_dict", "model", "teacher", "student", "state")  # where a trunk's dict may sit


@dataclass
class Located:
    """A trunk found in a checkpoint: its tensors under torchvision names, and how it was found."""

    state: dict[str, torch.Tensor]
    harness: str  # dino | moco-v2 | moco-v3 | lightning | official-swav | torchvision
    key: str  # the dict it came from ("": the top level)
    prefix: str
    outside: int  # tensors of the file left out (heads, momentum copies, the other DINO network)


def tensors_of(obj: object) -> dict[str, torch.Tensor]:
    """The tensor entries of a dict (other values, such as a Lightning file's stand-ins, left out)."""
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}


def prefixes(state: dict[str, torch.Tensor]) -> list[str]:
    """Every prefix under which ``state`` holds a ResNet trunk."""
    found = [k[: -len(ANCHORS[0])] for k in state if k.endswith(ANCHORS[0])]
    return sorted(p for p in found if p + ANCHORS[1] in state)


def _dig(ckpt: dict, key: str, path: str) -> object:
    obj: object = ckpt
    for part in key.split("."):
        if not isinstance(obj, dict) or part not in obj:
            have = ", ".join(repr(k) for k in ckpt) if isinstance(ckpt, dict) else "none"
            raise KeyError(f"{path}: no {key!r} in the checkpoint (its top-level keys: {have})")
        obj = obj[part]
    return obj


def harness_of(ckpt: dict, prefix: str, state: dict[str, torch.Tensor]) -> str:
    """Which harness wrote the file, from its layout."""
    if "teacher" in ckpt and "student" in ckpt:
        return "dino"
    if "pytorch-lightning_version" in ckpt or ("hyper_parameters" in ckpt and "state_dict" in ckpt):
        return "lightning"
    if "encoder_q." in prefix:
        return "moco-v2"
    if "base_encoder." in prefix:
        return "moco-v3"
    if any(k.removeprefix("module.").startswith(("projection_head.", "prototypes.")) for k in state):
        return "official-swav"
    return "torchvision"


def locate(ckpt: dict, path: str, *, key: str = "", strip_prefix: str | None = None) -> Located:
    """The trunk in ``ckpt`` (read from ``path``, named in errors); KeyError when nothing or several
    equally likely trunks are found, naming the candidates and the setting that picks one."""
    if key:
        places = {key: tensors_of(_dig(ckpt, key, path))}
    else:
        places = {"": tensors_of(ckpt), **{k: tensors_of(ckpt.get(k)) for k in DICT_KEYS}}
        if "teacher" in ckpt:  # DINO: the teacher is the network DINO evaluates
            places = {"teacher": places["teacher"], **places}
    candidates = [(k, p) for k, state in places.items() for p in prefixes(state) if strip_prefix in (None, p)]
    if not candidates:
        asked = f" under prefix {strip_prefix!r}" if strip_prefix is not None else ""
        sample = next((list(s)[:4] for s in places.values() if s), [])
        raise KeyError(
            f"{path}: no ResNet trunk found{asked} (looked for *conv1.weight and *layer1.0.conv1.weight in "
            f"{', '.join(repr(k or 'the top level') for k in places)}; keys look like {sample}). "
            "Name it with trunk.key= and trunk.strip_prefix="
        )
    online = [c for c in candidates if c[1] in ONLINE]
    best = sorted(online, key=lambda c: ONLINE.index(c[1]))[:1] if online else candidates
    if len(best) > 1 or (strip_prefix is None and not online and len(candidates) > 1):
        listing = ", ".join(f"trunk.key={k or '(top level)'} trunk.strip_prefix={p}" for k, p in candidates)
        raise KeyError(f"{path} holds several trunks and none is a known online encoder: {listing}")
    k, p = best[0]
    state = {name[len(p) :]: v for name, v in places[k].items() if name.startswith(p)}
    found = Located(state, harness_of(ckpt, p, places[k]), k, p, len(places[k]) - len(state))
    if found.harness != "torchvision" or k or p:
        log.info(
            "trunk: %s layout, key %r, prefix %r (%d tensors of the file left out)",
            found.harness,
            k or "(top level)",
            p,
            found.outside,
        )
    return found
