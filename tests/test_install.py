"""The torch range pyproject.toml declares: CI runs its lower bound, so the bound is a tested claim."""

import re
import tomllib
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_lower_bound_of_the_declared_torch_range():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for module in (torch, torchvision):
        (spec,) = [d for d in deps if re.match(rf"{module.__name__}\b[><=]", d)]
        low = re.search(r">=\s*([\d.]+)", spec).group(1)
        assert "==" not in spec and "<" in spec, spec  # a range, not a pin: a site's own build is kept
        installed = tuple(int(x) for x in module.__version__.split("+")[0].split(".")[:2])
        assert installed == tuple(int(x) for x in low.split(".")[:2]), (spec, module.__version__)
