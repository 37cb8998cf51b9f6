"""One rule for where datasets live: presets name them relative to a data root (``cifar10-subset/train``,
``imagenet/val``, ``VOCdevkit/VOC2007``); the root is ``--data-root``, else ``$SWAVBENCH_DATA``, else
``../shared/data`` beside the repository checkout. Absolute (or ``~``) paths are used as given, so
every command works from any working directory."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from swavbench.core.paths import REPO

ENV = "SWAVBENCH_DATA"
DEFAULT = REPO.parent / "shared" / "data"
HOW_TO_SET = f"pass --data-root DIR or set {ENV}=DIR (or give an absolute path)"

C = TypeVar("C")


def set_data_root(path: str | Path) -> Path:
    """Make ``path`` the data root of this process and of every job it starts (``--data-root``)."""
    root = Path(path).expanduser().resolve()
    os.environ[ENV] = str(root)
    return root


def data_root() -> tuple[Path, str]:
    """(root, where it came from): ``$SWAVBENCH_DATA`` (which ``--data-root`` sets) or the default."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser(), f"${ENV}"
    return DEFAULT, "the default beside the repository checkout"


def describe_root() -> str:
    root, source = data_root()
    return f"data root {root} ({source}); {HOW_TO_SET}"


def resolve(name: str | Path, root: Path | None = None) -> Path:
    """A dataset name -> its path: absolute and ``~`` paths as given, others under ``root`` (a launch plan's)
    or this process' data root."""
    p = Path(name).expanduser()
    return p if p.is_absolute() else (root if root is not None else data_root()[0]) / p


def existing(name: str | Path, what: str = "dataset") -> Path:
    """``resolve(name)``, or FileNotFoundError naming the path, the root used and how to set another."""
    path = resolve(name)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(name)!r} not found at {path}: {describe_root()}")
    return path


def dataset_paths(cfg: Any) -> Iterator[tuple[str, str]]:
    """(field, path as written) for every non-empty dataset path of a protocol config
    (``cfg.DATASET_FIELDS``; a field may hold one path or a list)."""
    for name in getattr(cfg, "DATASET_FIELDS", ()):
        value = getattr(cfg, name)
        for v in value if isinstance(value, list) else [value]:
            if v:
                yield name, v


def resolve_fields(cfg: C, root: Path | None = None) -> C:
    """A copy of a protocol config with its dataset fields (``cfg.DATASET_FIELDS``) resolved (under ``root``,
    as ``resolve``); empty strings (an unused optional file) stay empty."""
    changes: dict[str, Any] = {}
    for name in getattr(cfg, "DATASET_FIELDS", ()):
        value = getattr(cfg, name)
        if isinstance(value, list):
            changes[name] = [str(resolve(v, root)) if v else v for v in value]
        elif value:
            changes[name] = str(resolve(value, root))
    return dataclasses.replace(cfg, **changes) if changes else cfg


def add_data_root_argument(parser) -> None:
    """``--data-root`` on a subcommand (also accepted before it: ``swavbench --data-root DIR ...``)."""
    import argparse

    parser.add_argument(
        "--data-root",
        default=argparse.SUPPRESS,
        help=f"folder the presets' datasets are named under (default ${ENV}, else ../shared/data)",
    )


def missing_dataset_hint(cfg: Any) -> str:
    """For an error message: the first dataset field of ``cfg`` whose path does not exist, the data
    root in use and how to set another; "" when every dataset field exists."""
    for name, v in dataset_paths(cfg):
        if not resolve(v).exists():
            return f" [dataset {name} not found at {resolve(v)}: {describe_root()}]"
    return ""
