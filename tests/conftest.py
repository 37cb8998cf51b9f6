"""Shared fixtures: tests run on CPU with tiny models and the generated image set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # ddp_helpers, importable by spawned workers
os.environ.setdefault("OMP_NUM_THREADS", "2")
# the tests never read the user's own cluster file (~/.config/swavbench/cluster.yaml): accounts, QOS
os.environ["SWAVBENCH_CLUSTER"] = str(Path(__file__).parent / "no-cluster-file.yaml")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def generated_data(tmp_path_factory) -> Path:
    """200 generated 32 px images in ImageFolder layout (train split)."""
    from pretrain.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("gen"), n_images=200, size=32, seed=0) / "train"
