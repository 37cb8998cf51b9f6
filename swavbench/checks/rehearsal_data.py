"""Tiny datasets in the real on-disk formats of the paper's evaluations, under one data root, for a
rehearsal of the paper suite (``swavbench launch ... --rehearse``): an ImageNet tree of a few classes
whose file names come from the shipped 1% / 10% lists (with those lists restricted to the tree), VOC2007
and VOC2012 devkit trees with every VOC class, Places205 file lists, iNaturalist 2018 json files and
COCO instance files with polygon masks. Images are drawn from a seed: class-coloured backgrounds with
noise, objects as filled rectangles, so every protocol has something to learn and score."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

from benchmark.subsets import SHIPPED, read_subset
from benchmark.voc import VOC07_CLASSES
from swavbench.core import durable, registry

IMAGENET_CLASSES = 4
SUBSETS = {"1pct": "imagenet-1pct", "10pct": "imagenet-10pct"}


def _seed(obj: object) -> int:
    """A seed from a value, the same in every process (``hash`` of a str is not)."""
    return zlib.crc32(repr(obj).encode())


def _colour(key: int) -> tuple[int, int, int]:
    r = random.Random(key)
    return r.randrange(30, 226), r.randrange(30, 226), r.randrange(30, 226)


def _image(path: Path, size: tuple[int, int], *, colour_key: int, seed: int, boxes=()) -> None:
    """A JPEG of ``size`` (w, h): a class-coloured background with noise and filled ``boxes``
    ((x0, y0, x1, y1, class index), 0-based corners)."""
    rng = random.Random(seed)
    base = _colour(colour_key)
    im = Image.new("RGB", size, base)
    px = im.load()
    for _ in range(size[0] * size[1] // 8):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        px[x, y] = tuple(min(255, max(0, c + rng.randrange(-40, 41))) for c in base)
    draw = ImageDraw.Draw(im)
    for x0, y0, x1, y1, c in boxes:
        draw.rectangle([x0, y0, x1, y1], fill=_colour(1000 + c))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=90)


def imagenet(
    root: Path, *, classes: int = IMAGENET_CLASSES, train_per_class: int = 6, val_per_class: int = 3
):
    """imagenet/{train,val}/<wnid>/ for the first ``classes`` wnids of the 1% list; training file names are
    taken from the shipped lists (1% names first); imagenet/subsets/{1pct,10pct}.txt list the tree's files
    that the shipped lists name."""
    one, ten = read_subset(SHIPPED["imagenet-1pct"]), read_subset(SHIPPED["imagenet-10pct"])
    wnids = sorted({n.split("_")[0] for n in one})[:classes]
    chosen: dict[str, list[str]] = {}
    for w in wnids:
        first = [n for n in one if n.startswith(w + "_")][:2]
        more = [n for n in ten if n.startswith(w + "_") and n not in first]
        chosen[w] = (first + more)[:train_per_class]
    for c, w in enumerate(wnids):
        for i, name in enumerate(chosen[w]):
            _image(root / "imagenet" / "train" / w / name, (48, 40), colour_key=c, seed=_seed((w, i)))
        for i in range(val_per_class):
            name = f"ILSVRC2012_val_{c * val_per_class + i + 1:08d}.JPEG"
            _image(root / "imagenet" / "val" / w / name, (48, 40), colour_key=c, seed=10**6 + c * 100 + i)
    files = {n for names in chosen.values() for n in names}
    for short, key in SUBSETS.items():
        listed = [n for n in read_subset(SHIPPED[key]) if n in files]
        durable.write_text(root / "imagenet" / "subsets" / f"{short}.txt", "\n".join(listed) + "\n")


def imagenet_variants(root: Path, *, per_class: int = 2) -> None:
    """For the ImageNet tree of ``imagenet``: imagenet/real.json (a label set per val file, in file-name
    order; some empty, some of two labels, as ReaL's), imagenetv2-matched-frequency/<class index>/,
    imagenet-a/ and imagenet-r/ (class folders of a subset of the wnids)."""
    wnids = sorted(p.name for p in (root / "imagenet" / "train").iterdir())
    n_val = len(list((root / "imagenet" / "val").rglob("*.JPEG")))
    real = [[] if j % 5 == 4 else sorted({(j // 3) % len(wnids), j % len(wnids)}) for j in range(n_val)]
    durable.write_json(root / "imagenet" / "real.json", real)
    sets = {
        "imagenetv2-matched-frequency": [(str(c), c) for c in range(len(wnids))],
        "imagenet-a": [(w, c) for c, w in enumerate(wnids) if c % 2 == 0],
        "imagenet-r": [(w, c) for c, w in enumerate(wnids) if c > 0],
    }
    for name, folders in sets.items():
        for folder, c in folders:
            for i in range(per_class):
                _image(root / name / folder / f"{i}.jpg", (48, 40), colour_key=c, seed=_seed((name, c, i)))


def transfer_12(root: Path, *, classes: int = 2, train_per_class: int = 5, test_per_class: int = 2) -> None:
    """The 12 datasets of the logistic-regression transfer (configs/transfer/logreg-12.yaml) as tiny class
    folders, under the split names the preset reads."""
    cfg = registry.for_preset("logreg-12").load_config("logreg-12")
    for k, (train, test) in enumerate(zip(cfg.trains, cfg.tests)):
        for split, count in ((train, train_per_class), (test, test_per_class)):
            for c in range(classes):
                for i in range(count):
                    path = root / split / f"class{c}" / f"{i}.jpg"
                    _image(path, (48, 40), colour_key=400 + 10 * k + c, seed=_seed((split, c, i)))


def _voc_xml(objects: list[tuple[str, list[int]]], size: tuple[int, int]) -> str:
    body = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b[0] + 1}</xmin>"
        f"<ymin>{b[1] + 1}</ymin><xmax>{b[2] + 1}</xmax><ymax>{b[3] + 1}</ymax></bndbox></object>"
        for name, b in objects
    )
    dims = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    return f"<annotation>{dims}{body}</annotation>"


def _boxes(i: int, classes: list[int], size: tuple[int, int]) -> list[tuple[int, int, int, int, int]]:
    """Two objects side by side, sized like VOC objects relative to the image."""
    w, h = size
    out = []
    for k, c in enumerate(classes):
        x0 = 4 + k * w // 2 + (i % 3) * 2
        out.append((x0, 8 + (i % 4) * 3, x0 + w // 2 - 12, h - 10, c))
    return out


def voc(root: Path, *, size: tuple[int, int] = (160, 128)) -> None:
    """VOCdevkit/VOC2007 (trainval: 60 images, every class in 6, enough negatives for the published
    low-shot SVM draws at k <= 2; test: 10 images, every class in 1) and VOCdevkit/VOC2012 (trainval: 10
    images): JPEGImages, Annotations, ImageSets/Main."""
    n = len(VOC07_CLASSES)
    plans = {
        ("VOC2007", "trainval"): [(f"00{i:04d}", [i % n, (i + 7) % n]) for i in range(60)],
        ("VOC2007", "test"): [(f"01{i:04d}", [(2 * i) % n, (2 * i + 1) % n]) for i in range(10)],
        ("VOC2012", "trainval"): [(f"2012_{i:06d}", [(2 * i + 1) % n, (2 * i) % n]) for i in range(10)],
    }
    for (year, split), items in plans.items():
        base = root / "VOCdevkit" / year
        for i, (image_id, classes) in enumerate(items):
            boxes = _boxes(i, classes, size)
            _image(
                base / "JPEGImages" / f"{image_id}.jpg",
                size,
                colour_key=99,
                seed=_seed(image_id),
                boxes=boxes,
            )
            objects = [(VOC07_CLASSES[c], [x0, y0, x1, y1]) for x0, y0, x1, y1, c in boxes]
            durable.write_text(base / "Annotations" / f"{image_id}.xml", _voc_xml(objects, size))
        durable.write_text(
            base / "ImageSets" / "Main" / f"{split}.txt", "\n".join(i for i, _ in items) + "\n"
        )


def places205(root: Path, *, classes: int = 3, train_per_class: int = 6, val_per_class: int = 2) -> None:
    """places205/data/vision/torralba/deeplearning/images256/<letter>/<class>/ and the trainvalsplit lists
    ('relative/path.jpg label' lines)."""
    images = root / "places205" / "data" / "vision" / "torralba" / "deeplearning" / "images256"
    lists = {"train": [], "val": []}
    for c, name in enumerate(["abbey", "airport_terminal", "alley"][:classes]):
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for i in range(count):
                rel = f"{name[0]}/{name}/{split}_{i:08d}.jpg"
                _image(images / rel, (48, 40), colour_key=200 + c, seed=_seed((name, split, i)))
                lists[split].append(f"{rel} {c}")
    for split, lines in lists.items():
        out = root / "places205" / "trainvalsplit_places205" / f"{split}_places205.csv"
        durable.write_text(out, "\n".join(lines) + "\n")


def inat18(root: Path, *, classes: int = 3, train_per_class: int = 6, val_per_class: int = 2) -> None:
    """inaturalist2018/{train_val2018/...jpg, train2018.json, val2018.json} (sparse category ids)."""
    base = root / "inaturalist2018"
    cats = [{"id": 5 + 7 * c, "name": f"species_{c}"} for c in range(classes)]
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        images, annotations = [], []
        for c, cat in enumerate(cats):
            for i in range(count):
                image_id = len(images) + (0 if split == "train" else 10_000)
                rel = f"train_val2018/Plantae/{cat['id']}/{split}_{i:04d}.jpg"
                _image(base / rel, (48, 40), colour_key=300 + c, seed=_seed((split, c, i)))
                images.append({"id": image_id, "file_name": rel, "width": 48, "height": 40})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": cat["id"]})
        data = {"images": images, "annotations": annotations, "categories": cats}
        durable.write_json(base / f"{split}2018.json", data)


def coco(root: Path, *, size: tuple[int, int] = (160, 128)) -> None:
    """coco/{train2017,val2017}/ and coco/annotations/instances_{train,val}2017.json: three sparse
    categories, polygon masks (the rectangles drawn)."""
    cats = [
        {"id": i, "name": n, "supercategory": "thing"} for i, n in ((3, "car"), (7, "train"), (11, "hydrant"))
    ]
    for split, count in (("train2017", 8), ("val2017", 4)):
        images, annotations = [], []
        for i in range(count):
            classes = [i % 3, (i + 1) % 3]
            boxes = _boxes(i, classes, size)
            name = f"{(0 if split == 'train2017' else 500_000) + i:012d}.jpg"
            _image(root / "coco" / split / name, size, colour_key=98, seed=_seed((split, i)), boxes=boxes)
            images.append({"id": 100 + i, "file_name": name, "width": size[0], "height": size[1]})
            for x0, y0, x1, y1, c in boxes:
                w, h = x1 - x0 + 1, y1 - y0 + 1
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": 100 + i,
                        "category_id": cats[c]["id"],
                        "bbox": [x0, y0, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "segmentation": [[x0, y0, x1 + 1, y0, x1 + 1, y1 + 1, x0, y1 + 1]],
                    }
                )
        data = {"images": images, "annotations": annotations, "categories": cats}
        durable.write_json(root / "coco" / "annotations" / f"instances_{split}.json", data)


VERSION = "3"  # of the generated trees: a tree of another version is written again


def write_all(root: str | Path) -> Path:
    """Every dataset of the paper suite, tiny, under ``root`` (a data root); written once (a marker file
    says it is complete)."""
    root = Path(root)
    done = root / ".rehearsal-data-complete"
    if not done.is_file() or done.read_text().strip() != VERSION:
        for make in (imagenet, imagenet_variants, voc, places205, inat18, coco, transfer_12):
            make(root)
        durable.write_text(done, f"{VERSION}\n")
    return root
