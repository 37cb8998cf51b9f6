"""The real single-node SLURM cluster (../shared/slurm/slurm-local.sh) for the tests that submit to it."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "shared" / "slurm" / "slurm-local.sh"


@pytest.fixture(scope="session")
def slurm_cluster():
    if not SCRIPT.is_file():
        pytest.skip(f"SLURM test cluster script not found at {SCRIPT}")
    if os.geteuid() != 0:
        pytest.skip("starting the local SLURM cluster needs root")
    subprocess.run(["bash", str(SCRIPT), "up"], check=True, timeout=600, capture_output=True)
    yield  # left running: `slurm-local.sh down` takes ~7 s and the next session's `up` reuses it
