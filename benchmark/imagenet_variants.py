"""ImageNet-ReaL, -V2, -A and -R measured with a trained linear head on the frozen trunk, no retraining:
the question researchers ask of an ImageNet probe since 2020 (how much of its top-1 survives relabelling,
a new test set, adversarial and rendition images).

- ReaL (Beyer et al. 2020, "Are we done with ImageNet?"): ``real.json`` lists, for each of the 50,000
  val images in file-name order (``ILSVRC2012_val_00000001``...), its set of acceptable labels; an image
  counts as correct when the top-1 prediction is in its set, and images with an empty set are left out.
- V2 (Recht et al. 2019), matched-frequency: class folders named by class index (0 to 999).
- A (Hendrycks et al. 2021) and R (Hendrycks et al. 2021): 200 class folders named by WordNet id; the
  prediction is the arg-max over those 200 classes' logits only, as their official evaluation does.

The head is this harness' linear probe (its folder or ``linear_state.pt``: the head the record reports)
or the official ``eval_linear.py`` checkpoint (``swav_800ep_eval_linear.pth.tar``). Its outputs are the
sorted class folders of ``train`` (ImageNet's WordNet ids)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from benchmark import feature_cache
from benchmark.features import eval_transform, image_folder
from benchmark.protocol import TrunkConfig, run_and_record
from swavbench.core.data_root import resolve_fields
from swavbench.core.record import ResultRecord
from swavbench.core.state import load_checkpoint

VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


@dataclass
class ImagenetVariantsConfig:
    """The head, the class folders it was trained on, and the sets (an empty field skips that set);
    the view is the linear probe's (resize 256, center crop 224, bilinear)."""

    DATASET_FIELDS: ClassVar[tuple[str, ...]] = ("train", "val", "real_labels", "v2", "a", "r")

    dataset: str = "imagenet"
    head: str = ""  # a linear probe's folder or linear_state.pt, or the official eval_linear checkpoint
    train: str = "imagenet/train"  # only its class folder names are read
    val: str = "imagenet/val"  # class folders of the official val files (ReaL matches them by name)
    real_labels: str = "imagenet/real.json"
    v2: str = "imagenetv2-matched-frequency"
    a: str = "imagenet-a"
    r: str = "imagenet-r"
    resize: int = 256
    crop: int = 224
    batch_size: int = 256
    num_workers: int = 8
    seed: int = 0
    mode: str = "frozen-features"
    trunk: TrunkConfig = field(default_factory=TrunkConfig)


def load_head(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a trained linear head: the reported head of this harness' probe, or the
    official ``eval_linear.py`` RegLog (``state_dict`` ``[module.]linear.weight`` / ``bias``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "linear_state.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"head {path} does not exist: pass head= a linear probe's output folder or a file"
        )
    state = load_checkpoint(path, foreign=True)
    if "heads" in state and "results" in state:  # benchmark/linear.py: the head with the best top-1
        best = max(range(len(state["results"])), key=lambda i: state["results"][i]["top1_best"])
        return state["heads"][f"heads.{best}.weight"], state["heads"][f"heads.{best}.bias"]
    sd = {k.removeprefix("module."): v for k, v in state.get("state_dict", state).items()}
    if any(k.startswith("bn.") for k in sd):
        raise ValueError(f"{path}: a head with BatchNorm on unpooled features (use_bn); only global pooling")
    if "linear.weight" not in sd:
        raise ValueError(f"{path}: no linear head found (expected linear.weight or this harness' heads)")
    return sd["linear.weight"], sd["linear.bias"]


def positions(classes: list[str], wnids: list[str], root: str) -> torch.Tensor:
    """The head's output index of each class folder of ``root``."""
    missing = [c for c in classes if c not in wnids]
    if missing:
        raise ValueError(f"{root}: class folders {missing[:3]} are not among the head's classes (train=)")
    return torch.tensor([wnids.index(c) for c in classes])


def real_accuracy(predictions: list[int], labels: list[list[int]]) -> tuple[float, int]:
    """(ReaL top-1 in %, images counted): a prediction in the image's label set is correct; images whose
    set is empty are not counted."""
    hits = [p in real for p, real in zip(predictions, labels) if real]
    return 100.0 * sum(hits) / max(len(hits), 1), len(hits)


def class_folders(root: str) -> list[str]:
    """Sorted class folder names, without listing the images (ImageNet train holds 1.28M)."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir())


def run_imagenet_variants(cfg: ImagenetVariantsConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Features of each set through the frozen trunk, the head's predictions, one record for all sets."""
    if not cfg.head:
        raise ValueError("head is empty: set head= a linear probe's output folder or eval_linear checkpoint")
    cfg = resolve_fields(cfg)

    def body(loaded, device):
        weight, bias = load_head(cfg.head)
        wnids = class_folders(cfg.train)
        if len(wnids) != weight.shape[0]:
            raise ValueError(
                f"the head has {weight.shape[0]} outputs, {cfg.train} {len(wnids)} class folders"
            )
        tf = eval_transform(cfg.resize, cfg.crop)

        def logits(root: str, desc: str):
            ds = image_folder(root, tf)
            x, y = feature_cache.extract(loaded, ds, device, cfg=cfg, desc=desc)
            return x.float() @ weight.float().t() + bias.float(), y, ds

        metrics, splits = {}, {}
        if cfg.val:
            out, y, ds = logits(cfg.val, "val")
            index = positions(ds.classes, wnids, cfg.val)
            metrics["val_top1"] = 100.0 * float((out.argmax(1) == index[y]).float().mean())
            splits["val"] = len(ds)
            if cfg.real_labels:
                metrics["real_top1"], splits["real"] = real_top1(out.argmax(1), ds, cfg.real_labels)
        if cfg.v2:
            out, y, ds = logits(cfg.v2, "v2")
            index = torch.tensor([int(c) for c in ds.classes])  # folders "0".."999" sort as text
            metrics["v2_top1"] = 100.0 * float((out.argmax(1) == index[y]).float().mean())
            splits["v2"] = len(ds)
        for name in ("a", "r"):
            if getattr(cfg, name):
                out, y, ds = logits(getattr(cfg, name), f"imagenet-{name}")
                mask = positions(ds.classes, wnids, getattr(cfg, name))  # their 200 classes
                metrics[f"{name}_top1"] = 100.0 * float((out[:, mask].argmax(1) == y).float().mean())
                splits[name] = len(ds)
        return metrics, splits

    return run_and_record("imagenet-variants", cfg, checkpoint, out_dir=out_dir, body=body)


def real_top1(predictions: torch.Tensor, ds, labels_file: str) -> tuple[float, int]:  # noqa: ANN001
    """ReaL accuracy of the val images of ``ds`` (official file names) with ``real.json``'s label sets."""
    real = json.loads(Path(labels_file).read_text())
    labels = []
    for p, _ in ds.samples:
        m = VAL_NAME.search(Path(p).name)
        if not m or int(m.group(1)) > len(real):
            raise ValueError(f"{p}: ReaL needs the official val names (ILSVRC2012_val_00000001.JPEG ...)")
        labels.append(real[int(m.group(1)) - 1])
    return real_accuracy(predictions.tolist(), labels)
