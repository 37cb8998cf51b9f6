"""Labelled subsets for semi-supervised evaluation: files listing image names, one per line.

A line is either a file name (ImageNet names such as ``n04235860_14959.JPEG`` are unique) or a
path relative to the split folder (``bird/0338.jpg``) for datasets whose file names repeat
across classes. The standard ImageNet 1% / 10% lists ship with the package
(``subset:imagenet-1pct`` / ``subset:imagenet-10pct``); ``make_balanced_subset`` draws a
class-balanced subset of any ImageFolder split with a seed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from swavbench.core import durable

SHIPPED = {
    "imagenet-1pct": Path(__file__).parent / "subsets" / "1percent.txt",
    "imagenet-10pct": Path(__file__).parent / "subsets" / "10percent.txt",
}


def subset_file(name_or_path: str) -> Path:
    """``subset:imagenet-1pct`` -> the shipped list; anything else is a path."""
    if name_or_path.startswith("subset:"):
        key = name_or_path.removeprefix("subset:")
        if key not in SHIPPED:
            raise ValueError(f"unknown shipped subset {key!r}; available: {', '.join(SHIPPED)}")
        return SHIPPED[key]
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"subset file {path} does not exist (one image name or class/name path per line)"
        )
    return path


def read_subset(path: Path) -> list[str]:
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not names:
        raise ValueError(f"subset file {path} lists no images")
    return names


def select(samples: list[tuple[str, int]], root: str | Path, subset: str) -> list[tuple[str, int]]:
    """The ImageFolder samples named by the subset file; every listed image must exist."""
    path = subset_file(subset)
    names = read_subset(path)
    root = Path(root)
    by_rel = {Path(p).relative_to(root).as_posix(): (p, c) for p, c in samples}
    by_name = defaultdict(list)
    for p, c in samples:
        by_name[Path(p).name].append((p, c))
    chosen, missing = [], []
    for n in names:
        if "/" in n:
            hit = by_rel.get(n)
            (chosen.append(hit) if hit else missing.append(n))
        elif len(by_name.get(n, ())) == 1:
            chosen.append(by_name[n][0])
        elif n in by_name:
            raise ValueError(
                f"subset file {path}: name {n!r} matches {len(by_name[n])} images under {root}; "
                "write class/name paths instead"
            )
        else:
            missing.append(n)
    if missing:
        raise FileNotFoundError(
            f"subset file {path} names {len(missing)} images not found under {root} "
            f"(e.g. {', '.join(missing[:3])}): point the split at the right folder or fix the list"
        )
    return chosen


def make_balanced_subset(
    root: str | Path,
    out: str | Path,
    per_class: int | None = None,
    *,
    fraction: float | None = None,
    seed: int = 0,
) -> Path:
    """Draw ``per_class`` images (or ``fraction`` of each class, at least one) per class folder.

    Writes class/name lines."""
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class or fraction")
    root = Path(root)
    classes = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if not classes:
        raise FileNotFoundError(f"{root} has no class folders (expected root/<class>/<image>)")
    rng = random.Random(seed)
    lines = []
    for d in classes:
        files = sorted(f.name for f in d.iterdir() if f.is_file())
        if not files:
            raise ValueError(f"class folder {d} is empty")
        n = per_class if per_class is not None else max(1, round(fraction * len(files)))
        if n > len(files):
            raise ValueError(f"class folder {d} has {len(files)} images, fewer than {n} asked for")
        lines += [f"{d.name}/{f}" for f in sorted(rng.sample(files, n))]
    return durable.write_text(out, "\n".join(lines) + "\n")
