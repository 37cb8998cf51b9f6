"""Classification transfer (paper Table 3): the linear probe of benchmark/linear.py on frozen
features of another dataset, read in its own format:

- ``places205``: Places205 file lists, one ``relative/path.jpg label`` line per image
  (``trainvalsplit_places205/{train,val}_places205.csv``), paths relative to ``root``;
- ``inat18``: iNaturalist 2018 ``train2018.json`` / ``val2018.json`` (COCO-like: ``images``
  with ``id`` / ``file_name``, ``annotations`` with ``image_id`` / ``category_id``), paths
  relative to ``root``;
- ``imagefolder``: ``root/<class>/<image>`` folders (the small scene preset).

VOC07 classification is benchmark/svm.py (linear SVMs), as in the paper.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from PIL import Image
from torch.utils.data import Dataset

from benchmark.features import image_folder_splits
from benchmark.linear import LinearConfig, run_linear
from swavbench.core.record import ResultRecord


@dataclass
class TransferLinearConfig(LinearConfig):
    """LinearConfig + where and in which format the transfer dataset lives (train/val: list or json files)."""

    DATASET_FIELDS: ClassVar[tuple[str, ...]] = (
        "train",
        "val",
        "root",
    )  # under the data root (swavbench.core.data_root)

    format: str = "places205"  # places205 | inat18 | imagefolder
    root: str = ""  # image folder the list / json paths are relative to


class LabelledFiles(Dataset):
    """Images with integer labels given by a file (the list / json formats); ``classes`` are the label ids."""

    def __init__(
        self, root: Path, items: list[tuple[str, int]], classes: list, *, source: Path, transform=None
    ):
        self.root, self.items, self.classes, self.source, self.transform = (
            root,
            items,
            classes,
            source,
            transform,
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        rel, label = self.items[i]
        path = self.root / rel
        try:
            with Image.open(path) as im:
                x = im.convert("RGB")
        except OSError as e:
            raise OSError(
                f"cannot read image {path} (listed in {self.source}): {e}; fix the file or remove its entry"
            ) from None
        return (self.transform(x) if self.transform else x), label


def read_places205_list(path: str | Path) -> list[tuple[str, int]]:
    """``relative/path.jpg label`` lines; a malformed line is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Places205 list {path} is missing: pass the trainvalsplit_places205/*.csv file"
        )
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise ValueError(
                f"{path}:{n}: expected 'relative/path.jpg label' with an integer label >= 0, got {line!r}"
            )
        items.append((parts[0], int(parts[1])))
    if not items:
        raise ValueError(f"Places205 list {path} has no entries")
    return items


def read_inat_json(path: str | Path) -> tuple[list[tuple[str, int]], list[int]]:
    """(file_name, category_id) of every annotated image, and the sorted category ids of the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"iNaturalist annotation file {path} is missing: pass train2018.json / val2018.json"
        )
    try:
        data = json.loads(path.read_text())
        files = {im["id"]: im["file_name"] for im in data["images"]}
        labels = {a["image_id"]: a["category_id"] for a in data["annotations"]}
        categories = sorted(c["id"] for c in data.get("categories", [])) or sorted(set(labels.values()))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not an iNaturalist annotation file (images[id, file_name], "
            f"annotations[image_id, category_id]): {type(e).__name__}: {e}"
        ) from None
    unlabelled = [i for i in files if i not in labels]
    if unlabelled:
        raise ValueError(f"{path}: {len(unlabelled)} image(s) have no annotation, e.g. id {unlabelled[0]}")
    missing = set(labels) - set(files)
    if missing:
        raise ValueError(
            f"{path}: annotations refer to {len(missing)} image id(s) not in 'images', "
            f"e.g. {sorted(missing)[0]}"
        )
    return [(files[i], labels[i]) for i in files], categories


def places205_splits(cfg: TransferLinearConfig, transform) -> tuple[LabelledFiles, LabelledFiles]:
    train, val = read_places205_list(cfg.train), read_places205_list(cfg.val)
    n_classes = max(label for _, label in train) + 1
    bad = [(p, y) for p, y in val if y >= n_classes]
    if bad:
        raise ValueError(
            f"{cfg.val}: label {bad[0][1]} ({bad[0][0]}) does not occur in the training list {cfg.train}"
        )
    classes = list(range(n_classes))
    root = Path(cfg.root)
    return (
        LabelledFiles(root, train, classes, source=Path(cfg.train), transform=transform),
        LabelledFiles(root, val, classes, source=Path(cfg.val), transform=transform),
    )


def inat18_splits(cfg: TransferLinearConfig, transform) -> tuple[LabelledFiles, LabelledFiles]:
    (train, cats), (val, _) = read_inat_json(cfg.train), read_inat_json(cfg.val)
    index = {c: i for i, c in enumerate(cats)}
    for items, source in ((train, cfg.train), (val, cfg.val)):
        unknown = {c for _, c in items if c not in index}
        if unknown:
            raise ValueError(
                f"{source}: category id(s) {sorted(unknown)[:5]} are not among the training categories"
            )
    root = Path(cfg.root)
    return (
        LabelledFiles(
            root, [(p, index[c]) for p, c in train], cats, source=Path(cfg.train), transform=transform
        ),
        LabelledFiles(root, [(p, index[c]) for p, c in val], cats, source=Path(cfg.val), transform=transform),
    )


SPLITS = {"places205": places205_splits, "inat18": inat18_splits, "imagefolder": image_folder_splits}


def run_transfer_linear(cfg: TransferLinearConfig, checkpoint: str, out_dir: str | Path) -> ResultRecord:
    """Linear probe on the transfer dataset: a transfer-linear record (report key ``linear``) on
    ``cfg.dataset``."""
    if cfg.format not in SPLITS:
        raise ValueError(f"format must be one of {', '.join(SPLITS)}, got {cfg.format!r}")
    return run_linear(cfg, checkpoint, out_dir, make_splits=SPLITS[cfg.format], protocol="transfer-linear")
