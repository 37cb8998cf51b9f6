"""The typed config loader every stage uses: dataclass defaults <- a YAML preset <- ``key=value``
overrides; unknown keys and values of the wrong type are a ConfigError naming the key and what is allowed."""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message says which and what is allowed."""


def did_you_mean(word: str, choices: list[str]) -> str:
    """'; did you mean X or Y?' for the close matches of a misspelt ``word`` in ``choices`` ('' if none)."""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(cls):
        t = get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(t):
            keys += _valid_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = get_origin(typ)
    if origin is list:
        (inner,) = get_args(typ)
        if isinstance(value, str):
            value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, inner, key) for v in value]
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if typ is float:
            out = float(value)
            if math.isnan(out):
                raise ValueError(value)
            return out
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config key {key!r} expects {getattr(typ, '__name__', typ)}, got {value!r}"
        ) from None


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "", *, root: type | None = None) -> None:
    root = root or type(obj)
    hints = get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for k, v in updates.items():
        if k not in names:
            here = [prefix + f.name for f in fields(obj)]  # this level: a section's keys, or the sections
            raise ConfigError(
                f"unknown config key {prefix + k!r}{did_you_mean(prefix + k, _valid_keys(root))} (here: "
                f"{', '.join(here)}; --print-config shows every key with its value)"
            )
        t = hints[k]
        if dataclasses.is_dataclass(t):
            if not isinstance(v, dict):
                raise ConfigError(f"config key {prefix + k!r} is a section; give a mapping of its keys")
            _apply(getattr(obj, k), v, f"{prefix}{k}.", root=root)
        else:
            setattr(obj, k, _coerce(v, t, prefix + k))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['optim.epochs=5', 'model.arch=resnet18'] -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. optim.epochs=5")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def preset_path(name_or_path: str, config_dir: Path) -> Path:
    """A preset name from ``config_dir`` (configs/<group>/) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        return p
    cand = config_dir / f"{name_or_path}.yaml"
    if not cand.is_file():
        names = list_presets(config_dir)
        raise ConfigError(
            f"unknown preset {name_or_path!r}{did_you_mean(name_or_path, names)} (available: "
            f"{', '.join(names)}; or pass a YAML path; `swavbench presets` lists them with what they are)"
        )
    return cand


def list_presets(config_dir: Path) -> list[str]:
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def load_dataclass(
    cls: type, config_dir: Path, preset: str | None = None, *, overrides: list[str] | None = None
) -> Any:
    """``cls()`` defaults <- preset YAML from ``config_dir`` <- ``key=value`` overrides.

    Unknown override keys are errors."""
    cfg = cls()
    if preset is not None:
        path = preset_path(preset, config_dir)
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a preset must be a mapping of keys")
        raw.pop("description", None)
        raw.pop("resolved", None)  # a run's config.yaml: what it resolved to, not a setting
        try:
            _apply(cfg, raw)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    if overrides:
        _apply(cfg, parse_overrides(overrides))
    return cfg


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings -> {"section.key": value}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(a: dict[str, Any], b: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: a -> b`` for every setting (dotted key, not in ``ignore``) that differs between two nested
    settings dicts. A key ``a`` lacks is not a difference: ``a`` was written before the key existed, and
    such keys (optim.global_batch, optim.lr_scaling, ...) only state what older runs left implicit."""
    fa, fb = flatten(a), flatten(b)
    return [
        f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}"
        for k in sorted(set(fa) | set(fb))
        if k in fa and fa.get(k) != fb.get(k) and k not in ignore
    ]


def dataclass_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from its ``asdict`` (a checkpoint's, or one frozen into a job at launch)."""
    cfg = cls()
    _apply(cfg, d)
    return cfg
