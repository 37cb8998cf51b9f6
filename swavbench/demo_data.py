"""The small demo datasets of the main job (CIFAR-10 subset, 15-Scene, BCCD), built from their public
archives into a data root, for machines without ``../shared/data``: ``swavbench prepare-data``.

Archives are read member by member (nothing is extracted as named in the archive, nothing is
unpickled: CIFAR-10 comes from its binary version) and each dataset is written into a temporary folder
renamed into place, so an interrupted preparation leaves no half dataset. The layouts and sizes are those
of ``../shared/data`` (its README): 1000 / 200 CIFAR-10 images per class, 15-Scene greyscale at a
128 px shorter side with 100 training images per class, BCCD in Pascal VOC layout.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from swavbench.core import durable
from swavbench.core.commands import command

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "swavbench" / "data"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SCENE15_CLASSES = (
    "bedroom", "coast", "forest", "highway", "industrial", "insidecity", "kitchen", "livingroom",
    "mountain", "office", "opencountry", "store", "street", "suburb", "tallbuilding",
)  # fmt: skip
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Source:
    """Where a demo dataset comes from and the file that shows it is complete under the data root."""

    name: str
    url: str
    filename: str
    md5: str | None
    marker: str  # relative to the data root: present only once the dataset is complete
    option: str  # the prepare-data option that takes a local copy of the archive


SOURCES = {
    s.name: s
    for s in (
        Source(
            "cifar10-subset",
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "cifar-10-binary.tar.gz",
            "c32a1d4ab5d03f1284b67883e8d87530",
            "cifar10-subset/val",
            "--cifar10",
        ),
        Source(
            "scene15",
            "https://github.com/jaaumeadrover/Landscape-Image-Classification/archive/refs/heads/main.zip",
            "scene15.zip",
            None,
            "scene15/val",
            "--scene15",
        ),
        Source(
            "bccd",
            "https://github.com/Shenggan/BCCD_Dataset/archive/refs/heads/master.zip",
            "bccd.zip",
            None,
            "bccd/ImageSets/Main/test.txt",
            "--bccd",
        ),
    )
}


class ArchiveError(ValueError):
    """An archive that does not hold the dataset it was given for."""


def members(archive: Path) -> Iterator[tuple[PurePosixPath, bytes]]:
    """(path inside the archive, bytes) of every regular file of a .zip or a tar (any compression)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield PurePosixPath(info.filename), z.read(info)
        return
    try:
        with tarfile.open(archive) as t:
            for m in t:
                if m.isfile():
                    f = t.extractfile(m)
                    if f is not None:
                        yield PurePosixPath(m.name), f.read()
    except tarfile.TarError as e:
        raise ArchiveError(f"{archive}: neither a zip nor a tar archive ({e})") from e


def _save_jpeg(img: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def build_cifar10(archive: Path, out: Path, *, train_per_class: int = 1000, val_per_class: int = 200) -> None:
    """CIFAR-10's binary batches (1 label byte + 3072 pixel bytes per image) -> ImageFolder JPEGs: the first
    ``train_per_class`` images of each class from data_batch_1..5, the first ``val_per_class`` from the test
    batch, as the shared subset."""
    batches: dict[str, bytes] = {}
    for path, data in members(archive):
        if path.suffix == ".bin" and path.name.startswith(("data_batch_", "test_batch")):
            batches[path.name] = data
    train = [batches[k] for k in sorted(batches) if k.startswith("data_batch_")]
    if not train or "test_batch.bin" not in batches:
        raise ArchiveError(
            f"{archive}: no CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin): "
            "expected cifar-10-binary.tar.gz (the binary version, not the python one)"
        )
    for split, blobs, per_class in (
        ("train", train, train_per_class),
        ("val", [batches["test_batch.bin"]], val_per_class),
    ):
        counts = [0] * len(CIFAR_CLASSES)
        for blob in blobs:
            if len(blob) % 3073:
                raise ArchiveError(
                    f"{archive}: a CIFAR-10 batch of {len(blob)} bytes, not a multiple of 3073"
                )
            rows = np.frombuffer(blob, dtype=np.uint8).reshape(-1, 3073)
            for row in rows:
                label = int(row[0])
                if label >= len(CIFAR_CLASSES):
                    raise ArchiveError(f"{archive}: label {label} outside CIFAR-10's 10 classes")
                if counts[label] >= per_class:
                    continue
                img = Image.fromarray(row[1:].reshape(3, 32, 32).transpose(1, 2, 0))
                _save_jpeg(img, out / split / CIFAR_CLASSES[label] / f"{counts[label]:04d}.jpg")
                counts[label] += 1
        if min(counts) == 0:
            raise ArchiveError(f"{archive}: the {split} split has no image of some class ({counts})")


def build_scene15(archive: Path, out: Path, *, train_per_class: int = 100, side: int = 128) -> None:
    """15-Scene from an archive of class folders (any depth, any split folders; class = the image's folder
    name, lower-cased): greyscale, shorter side ``side``, the first ``train_per_class`` by name train, the
    rest val."""
    by_class: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for path, data in members(archive):
        cls = path.parent.name.lower().replace(" ", "").replace("_", "")
        if path.suffix.lower() in IMAGE_SUFFIXES and cls in SCENE15_CLASSES:
            by_class[cls].append((path.name, data))
    if not by_class:
        raise ArchiveError(
            f"{archive}: no images in folders named after 15-Scene's classes ({', '.join(SCENE15_CLASSES)})"
        )
    for cls, files in by_class.items():
        for i, (name, data) in enumerate(sorted(files)):
            with Image.open(io.BytesIO(data)) as im:
                img = im.convert("L")
            scale = side / min(img.size)
            img = img.resize(
                (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR
            )
            split = "train" if i < train_per_class else "val"
            _save_jpeg(img, out / split / cls / (Path(name).stem + ".jpg"))


def build_bccd(archive: Path, out: Path) -> None:
    """BCCD's Pascal VOC folders (Annotations, JPEGImages, ImageSets/Main) found anywhere in the archive."""
    wanted = {"Annotations": ".xml", "JPEGImages": ".jpg", "Main": ".txt"}
    n = defaultdict(int)
    for path, data in members(archive):
        parent = path.parent.name
        if wanted.get(parent) == path.suffix.lower():
            sub = Path("ImageSets/Main") if parent == "Main" else Path(parent)
            target = out / sub / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            n[parent] += 1
        elif path.name == "LICENSE" and len(path.parts) <= 2:
            (out / "LICENSE").write_bytes(data)
    missing = [k for k in wanted if not n[k]]
    if missing or not (out / "ImageSets/Main/test.txt").is_file():
        raise ArchiveError(
            f"{archive}: no Pascal VOC BCCD folders ({', '.join(missing) or 'ImageSets/Main/test.txt'})"
        )


BUILDERS = {"cifar10-subset": build_cifar10, "scene15": build_scene15, "bccd": build_bccd}


def is_ready(root: Path, name: str) -> bool:
    return (root / SOURCES[name].marker).exists()


def download(source: Source, folder: Path) -> Path:
    """The archive via torchvision's downloader (resumes nothing, checks the MD5 where one is known)."""
    from torchvision.datasets.utils import download_url

    folder.mkdir(parents=True, exist_ok=True)
    download_url(source.url, str(folder), source.filename, source.md5)
    return folder / source.filename


def prepare(
    root: Path,
    names: list[str] | None = None,
    *,
    archives: dict[str, Path] | None = None,
    offline: bool = False,
) -> dict[str, str]:
    """Build every missing dataset of ``names`` under ``root`` from a local archive or a download; returns
    name -> 'ready' (already there), 'prepared', or why not (one line, with the option for a local copy)."""
    archives = archives or {}
    root.mkdir(parents=True, exist_ok=True)
    status = {}
    for name in names or list(SOURCES):
        src = SOURCES[name]
        if is_ready(root, name):
            status[name] = "ready"
            continue
        try:
            if name in archives:
                archive = Path(archives[name]).expanduser()
                if not archive.is_file():
                    raise FileNotFoundError(f"{archive} is not a file")
            elif offline:
                raise ConnectionError("offline")
            else:
                archive = download(src, root / "_archives")
            with durable.atomic_dir(root / name) as tmp:  # an incomplete earlier attempt is replaced
                BUILDERS[name](archive, tmp)
            status[name] = "prepared"
        except Exception as e:  # noqa: BLE001 - reported per dataset, the others go on
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            status[name] = (
                f"not available ({reason}): download {src.url} and pass "
                f"`swavbench prepare-data {src.option} FILE`, or --data-root DIR with a copy of {name}/"
            )
    return status


def add_parser(sub) -> None:
    p = command(sub, "prepare-data", run=_run)
    p.add_argument("--root", type=Path, default=CACHE, help=f"data root to write into (default {CACHE})")
    for src in SOURCES.values():
        p.add_argument(src.option, type=Path, metavar="FILE", help=f"local copy of {src.url}")
    p.add_argument("--offline", action="store_true", help="never download; only the archives given")


def archives_from(args) -> dict[str, Path]:
    """name -> local archive from the per-dataset options that were given."""
    return {
        name: getattr(args, src.option.lstrip("-").replace("-", "_"))
        for name, src in SOURCES.items()
        if getattr(args, src.option.lstrip("-").replace("-", "_"), None)
    }


def _run(args) -> int:
    """Build the demo datasets (CIFAR-10 subset, 15-Scene, BCCD) from their public archives

    Write the main job's small datasets into a data root (default: the cache that `swavbench run` uses when
    ../shared/data is absent, see --root). Downloads each archive unless a local copy is given; --offline
    only uses local copies.
    """
    status = prepare(args.root, archives=archives_from(args), offline=args.offline)
    for name, msg in status.items():
        print(f"{name}: {msg}")
    print(f"data root: {args.root} (pass --data-root {args.root} or set SWAVBENCH_DATA to use it elsewhere)")
    return 0 if all(m in ("ready", "prepared") for m in status.values()) else 1
