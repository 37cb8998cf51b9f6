"""Result records (``result.json`` from benchmark/ and transfer/) -> one tidy DataFrame,
one row per (model, protocol, dataset, metric, seed). Malformed or partial records are
reported with the file and the reason and skipped; failed jobs are listed apart.

Seeds are averaged only within one configuration: every row carries ``config_key`` (the protocol's
settings except seed, row label, dataset location and worker count, plus architecture and trunk
kind). Records of several configurations under one row name are a conflict: each configuration gets
its own row (``model [cfg <key>]``) and the report lists what differs."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from swavbench.core import durable, registry
from swavbench.core.paths import RECORD, REPLACED
from swavbench.core.record import SCHEMA_VERSION, upgrade

COLUMNS = [
    "model",
    "protocol",
    "benchmark",
    "dataset",
    "metric",
    "value",
    "seed",
    "arch",
    "pretrain_epochs",
    "pretrain_batch",
    "mode",
    "backend",
    "smoke",
    "layer",
    "bn_mode",
    "precision",
    "epochs",
    "lr",
    "crop",
    "subset",
    "wall_time_s",
    "gpu_hours",
    "device",
    "checkpoint",
    "record",
    "created",
    "config_key",
]
# settings that do not change what is measured: left out of the configuration key
NOT_CONFIGURATION = ("seed", "num_workers", "label")
REQUIRED = (
    "protocol",
    "benchmark",
    "status",
    "metrics",
    "model",
    "dataset",
    "seed",
    "config",
    "checkpoint",
    "wall_time_s",
    "device",
)


@dataclass
class Problem:
    path: str
    reason: str
    # skipped: the record is not in the tables | conflict: rows split by configuration | not-finite: a NaN /
    # inf metric, kept in the tables
    kind: str = "skipped"


@dataclass
class Failed:
    path: str
    model: str
    protocol: str
    dataset: str
    error: str


def _lr(config: dict) -> str:
    if "trunk_lr" in config:  # fine-tuning: the trunk's and the head's
        return f"trunk {config.get('trunk_lr')} / head {config.get('head_lr')}"
    lrs = config.get("lrs")
    return ",".join(f"{x:g}" for x in lrs) if isinstance(lrs, list) else str(config.get("lr", ""))


def configuration(data: dict) -> dict:
    """What a record measured, flattened: its protocol config without the NOT_CONFIGURATION fields and the
    dataset locations (the ``dataset`` column names the data), plus architecture and trunk kind."""
    bench = data["benchmark"]
    # every protocol writing this key (linear records: the ImageNet probe's and the transfer probe's)
    entries = [p for p in registry.PROTOCOLS.values() if bench in p.benchmarks] or [
        registry.for_benchmark(bench)
    ]
    where = {f for e in entries if e is not None for f in getattr(e.config_type(), "DATASET_FIELDS", ())}

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if k in NOT_CONFIGURATION or (not prefix and k in where):
                continue
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    return {
        "protocol": data["protocol"],
        "arch": data.get("arch"),
        "trunk_kind": data.get("trunk_kind"),
        # the pretraining behind the trunk (seed aside; absent in older records): two recipes under one
        # row name are two configurations, not seeds of one
        **({"trunk_recipe": data["trunk_recipe"]} if data.get("trunk_recipe") else {}),
        **flat(data["config"]),
    }


def _what_ran(entry: registry.Protocol | None, cfg: dict, *, device: str) -> dict:
    """Layer, BatchNorm mode and feature precision of a record, from its protocol's entry and config:
    detection fine-tunes the whole backbone with its configured norm (else the entry's); the classification
    protocols read the pooled res5 features, frozen (probe) or trained (semi-supervised)."""
    if entry is not None and entry.backbone_norm is not None:
        frozen = cfg.get("freeze_at", 0)
        layer = "backbone res2-res5 (fine-tuned)" if frozen == 0 else f"backbone (stages < {frozen} frozen)"
        return {"layer": layer, "bn_mode": str(cfg.get("norm", entry.backbone_norm)), "precision": "fp32"}
    fine_tunes = entry is not None and entry.fine_tunes
    trunk = cfg.get("trunk") or {}
    extracted = not fine_tunes and cfg.get("mode") != "augmented"  # features extracted once, then reused
    # records from before trunk.feature_precision extracted with bf16 autocast on GPUs
    before = "bf16" if not str(device).startswith("cpu") else "fp32"
    precision = trunk.get("feature_precision", before) if extracted else "fp32"
    return {
        "layer": "res5-avgpool (fine-tuned)" if fine_tunes else "res5-avgpool",
        "bn_mode": "train" if fine_tunes else "frozen",
        "precision": precision,
    }


def config_key(data: dict) -> str:
    blob = json.dumps(configuration(data), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def record_rows(data: dict, path: Path) -> list[dict]:
    cfg = data["config"]
    protocol = data["protocol"]
    device = str(data.get("device", ""))
    wall = float(data.get("wall_time_s") or 0.0)
    entry = registry.for_record(protocol, data["benchmark"])
    base = {
        "model": data["model"] or Path(data.get("checkpoint", "")).stem,
        "protocol": protocol,
        "benchmark": data["benchmark"],
        "dataset": data["dataset"],
        "seed": int(data["seed"]),
        # the table's architecture name (width and stem spelled out); records from before it only name the
        # base architecture, so they are marked unverified and get no published verdict
        "arch": data.get("trunk_arch") or f"{data.get('arch')} (width unrecorded)",
        "pretrain_epochs": data.get("pretrain_epochs"),
        "pretrain_batch": data.get("pretrain_batch"),
        "mode": cfg.get("mode", ""),
        "backend": cfg.get("backend", ""),
        "smoke": bool(cfg.get("smoke", False)),
        **_what_ran(entry, cfg, device=device),
        "epochs": cfg.get("epochs"),
        "lr": _lr(cfg),
        "crop": cfg.get("crop"),
        "subset": cfg.get("subset", ""),
        "wall_time_s": wall,
        "gpu_hours": 0.0 if device.startswith("cpu") else wall / 3600.0,
        "device": device,
        "checkpoint": data.get("checkpoint"),
        "record": str(path),
        "created": str(data.get("created", "")),
        "config_key": config_key(data),
    }
    return [
        {**base, "metric": k, "value": float(v)}
        for k, v in data["metrics"].items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


def collect(run_dirs: list[str | Path]) -> tuple[pd.DataFrame, list[Problem], list[Failed]]:
    """Every ``result.json`` under the run directories (not under ``replaced/``) -> (tidy DataFrame,
    problems, failed jobs)."""
    rows: list[dict] = []
    configs: dict[str, dict] = {}  # configuration key -> what it stands for (conflict messages)
    problems: list[Problem] = []
    failed: list[Failed] = []
    paths = []
    for d in run_dirs:
        d = Path(d)
        if not d.exists():
            problems.append(Problem(str(d), "run directory does not exist"))
            continue
        # records under replaced/ were superseded by a --force re-run: kept on disk, not reported
        paths += (
            [d]
            if d.is_file()
            else sorted(p for p in d.rglob(RECORD) if REPLACED not in p.relative_to(d).parts)
        )
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            problems.append(Problem(str(path), f"not valid JSON ({e})"))
            continue
        if not isinstance(data, dict):
            problems.append(Problem(str(path), "not a JSON object"))
            continue
        data = upgrade(data)  # a record of the previous schema, renamed as today's
        if data.get("schema_version") != SCHEMA_VERSION:
            problems.append(
                Problem(
                    str(path), f"schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}"
                )
            )
            continue
        missing = sorted(k for k in REQUIRED if k not in data)
        if missing:
            problems.append(Problem(str(path), f"missing fields: {', '.join(missing)}"))
            continue
        if data["status"] != "ok":
            failed.append(
                Failed(str(path), data["model"], data["protocol"], data["dataset"], str(data.get("error")))
            )
            continue
        if not isinstance(data["metrics"], dict) or not data["metrics"]:
            problems.append(Problem(str(path), "status ok but no metrics"))
            continue
        bad = {k: v for k, v in data["metrics"].items() if isinstance(v, float) and not math.isfinite(v)}
        if bad:  # kept (the seed counts, the cell shows it) and flagged
            shown = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            problems.append(
                Problem(str(path), f"not finite: {shown} (a diverged run?); its cells show it", "not-finite")
            )
        try:
            rows += record_rows(data, path)
            configs[config_key(data)] = configuration(data)
        except (KeyError, TypeError, ValueError) as e:
            problems.append(Problem(str(path), f"unreadable field ({type(e).__name__}: {e})"))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df, duplicates = drop_duplicates(df)
    df, conflicts = separate_configurations(df, configs)
    problems += duplicates + conflicts
    return (
        df.sort_values(["model", "benchmark", "dataset", "metric", "seed"], ignore_index=True),
        problems,
        failed,
    )


def drop_duplicates(df: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Records of the same run (model, benchmark, dataset, seed, configuration, checkpoint, epochs: a job
    that ran twice into two folders) count once, the newest kept; each extra one is a Problem."""
    if df.empty:
        return df, []
    same = ["model", "benchmark", "dataset", "metric", "seed", "config_key", "checkpoint", "pretrain_epochs"]
    df = df.sort_values("created", kind="stable")
    extra = df.duplicated(subset=same, keep="last")
    problems = [
        Problem(
            path,
            "the same run as a newer record (model, protocol, dataset, seed, configuration and checkpoint): "
            "counted once, this one left out",
            kind="duplicate",
        )
        for path in sorted(set(df.loc[extra, "record"]))
    ]
    return df[~extra], problems


def separate_configurations(df: pd.DataFrame, configs: dict[str, dict]) -> tuple[pd.DataFrame, list[Problem]]:
    """Values of one cell (model, benchmark, dataset, pretraining epochs, metric) from several
    configurations get the configuration in their row name, so seeds are never averaged across
    configurations; one Problem per conflicting row says what differs (``configs``: configuration key ->
    flattened configuration). Configurations that fill different metrics (kNN at k=5 and at k=10) do not
    conflict."""
    if df.empty:
        return df, []
    df = df.copy()
    problems = []
    cell = ["model", "benchmark", "dataset", "pretrain_epochs", "metric"]
    n_configs = df.groupby(cell, dropna=False)["config_key"].transform("nunique")
    clash = df[n_configs > 1]
    for name, grp in clash.groupby(cell[:4], dropna=False, sort=True):
        here = sorted(set(grp.config_key))
        model, bench, dataset = name[0], name[1], name[2]
        settings = {k: configs.get(k, {}) for k in here}
        differ = sorted(
            f
            for f in set().union(*settings.values())
            if len({json.dumps(c.get(f), default=str) for c in settings.values()}) > 1
        )
        shown = "; ".join(f"{f}: " + " vs ".join(str(settings[k].get(f)) for k in here) for f in differ[:4])
        shown += " ..." if len(differ) > 4 else ""
        rows = df.index[(df[cell[:4]].fillna(-1) == pd.Series(name, index=cell[:4]).fillna(-1)).all(axis=1)]
        df.loc[rows, "model"] = [f"{model} [cfg {k}]" for k in df.loc[rows, "config_key"]]
        problems.append(
            Problem(
                str(Path(grp.record.iloc[0]).parent.parent),
                f"{model} / {bench} / {dataset}: records of {len(here)} configurations share this row "
                f"name ({shown}); not averaged together: reported as "
                + ", ".join(f"'{model} [cfg {k}]'" for k in here)
                + ". Give each configuration its own trunk.label, or remove the records you do not want",
                kind="conflict",
            )
        )
    return df, problems


def save(df: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """results.parquet and results.csv (durable writes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parquet, csv = out / "results.parquet", out / "results.csv"
    with durable.atomic_path(parquet) as tmp:
        df.to_parquet(tmp, index=False)
    with durable.atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False)
    return parquet, csv
