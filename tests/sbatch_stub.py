"""A stand-in ``sbatch`` that keeps every script it is given (tests of what SLURM would be asked)."""

from __future__ import annotations

import re
from pathlib import Path


def stand_in_sbatch(bin_dir: Path) -> Path:
    """``sbatch`` keeping each script it is given; ``squeue`` that lists nothing; ``srun`` (submitit checks it
    exists)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    kept = bin_dir / "scripts"
    kept.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'n=$(ls {kept} | wc -l)\nfor a in "$@"; do last="$a"; done\ncp "$last" {kept}/$n.sh\n'
        'echo "Submitted batch job $((5000 + n))"\n'
    )
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in ("sbatch", "squeue", "srun"):
        (bin_dir / f).chmod(0o755)
    return kept


def directives(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))
