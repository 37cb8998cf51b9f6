"""A rehearsal of a suite (and its pretraining) before spending GPU-hours: the same jobs, protocols, presets
and code paths, with the shape scaled to a small machine (one node, two processes per job joined in one
group, gloo on CPU), tiny generated data in the real formats (rehearsal_data) and iteration caps.
``check`` then verifies what the real run needs: every job ran with its processes, wrote an ok record,
and the report fills every cell of Tables 1-3 that the suite covers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from slurm.suite import Resources, Suite
from swavbench.core import registry

TASKS = 2  # processes per job
RESOURCES = Resources(gpus=0, cpus=TASKS, mem_gb=4, time_min=30, nodes=1, tasks_per_node=TASKS)
PRETRAIN = [  # the preset's recipe at a size two CPU processes run in seconds
    "data.path=imagenet/train",
    "data.num_workers=0",
    "data.nmb_crops=[2,2]",
    "data.size_crops=[32,16]",
    "model.width_multiplier=0.125",
    "model.hidden_mlp=64",
    "model.feat_dim=32",
    "model.n_prototypes=[12]",
    "optim.batch_size=4",
    "optim.lr_scaling=linear",
    "run.max_iters=2",
    "run.precision=fp32",
    "run.log_every_iters=1",
]
TRUNK = ["trunk.arch=resnet50", "trunk.width_multiplier=0.125"]  # a random trunk of the rehearsal's shape
LABEL = "rehearsal"  # the report's row name of every rehearsal record


def _entry_overrides(entry, data_root: Path) -> list[str]:
    """The entry's overrides plus the rehearsal's (subset lists restricted to the generated tree, a few
    low-shot draws, Detectron2's precise-BN pass cut to two batches, or, where Detectron2 is not installed,
    the torchvision backend of the same recipe, said on stdout)."""
    impl = registry.get(entry.protocol).recipe_of(entry.preset)
    out = [*entry.overrides, *impl.rehearsal]  # its size at the rehearsal's scale
    cfg = impl.load_config(entry.preset, entry.overrides)
    if getattr(cfg, "backend", "") == "detectron2":
        from transfer.detection_config import detectron2_available

        if not detectron2_available():
            print(
                f"rehearsal: {entry.name} rehearsed on the torchvision backend: Detectron2 is not installed "
                "here (the real run needs it; preflight says so)"
            )
            return [*out, "backend=torchvision"]
    if str(getattr(cfg, "subset", "")).startswith("subset:"):
        short = "1pct" if cfg.subset.endswith("1pct") else "10pct"
        out.append(f"subset={data_root / 'imagenet' / 'subsets' / f'{short}.txt'}")
    if getattr(cfg, "low_shot_ks", None):
        out += ["low_shot_ks=[1,2]", "low_shot_samples=2"]
    if getattr(cfg, "detectron2_overrides", None):
        extra = [*cfg.detectron2_overrides, "TEST.PRECISE_BN.NUM_ITER", "2"]
        out.append(f"detectron2_overrides={json.dumps(extra)}")
    return out


def rehearsal_suite(suite: Suite, data_root: Path, *, random_trunk: bool = False) -> Suite:
    """``suite`` at the rehearsal's shape: every job on RESOURCES with its size overrides (and, for a random
    trunk, the rehearsal's architecture); pretraining on one node of RESOURCES."""
    entries = [
        dataclasses.replace(
            e,
            overrides=[
                *_entry_overrides(e, data_root),
                *(TRUNK if random_trunk else []),
                f"trunk.label={LABEL}",
            ],
            resources=dataclasses.replace(RESOURCES),
            seeds=e.seeds[:1],
        )
        for e in suite.entries
    ]
    return dataclasses.replace(
        suite, name=f"{suite.name}-rehearsal", entries=entries, pretrain=dataclasses.replace(RESOURCES)
    )


def check(evals: list[str | Path], suite: Suite, *, model: str) -> list[str]:
    """What the rehearsal shows wrong: jobs without an ok record of TASKS processes, and cells of the
    paper's Tables 1-3 that the suite's protocols cover but the report leaves empty for ``model``."""
    from results.collect import collect
    from results.reference import load_reference
    from results.tables import paper_tables

    problems = []
    for out in evals:
        path = Path(out) / "result.json"
        if not path.is_file():
            problems.append(f"{out}: no record")
            continue
        rec = json.loads(path.read_text())
        if rec["status"] != "ok" or rec.get("world_size") != TASKS:
            ran = f"status {rec['status']}, {rec.get('world_size')} process(es)"
            problems.append(f"{out}: {ran}: {rec.get('error') or ''}")
    df, _, _ = collect([str(e) for e in evals])
    ref = load_reference()
    covered = {b for e in suite.entries for b in registry.get(e.protocol).recipe_of(e.preset).benchmarks}
    for table in paper_tables(df, ref)[:3]:
        if not table.title.startswith("Table "):
            continue
        cells = dict(table.rows).get(model, {})
        for col in table.columns:
            published = ((ref.benchmark == col.benchmark) & (ref.dataset == col.dataset)).any()
            if col.benchmark in covered and published and col.header not in cells:
                problems.append(f"{table.title.split(' —')[0]}: no {model} value for {col.header}")
    return problems
