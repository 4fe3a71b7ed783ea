"""Configs: frozen dataclasses mirrored by YAML, with typed ``key=value`` overrides.

An unknown key is an error that names the closest valid key; a value of the wrong type is an
error that names the expected type. Everything is checked before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from dataclasses import fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from .checks import validate
from .schema import (
    DTYPES,
    SCHEDULES,
    SELECTIONS,
    TRACKERS,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ObjectiveConfig,
    ReaderConfig,
    RerankerConfig,
    TrainConfig,
)

__all__ = [
    "DTYPES",
    "SCHEDULES",
    "SELECTIONS",
    "TRACKERS",
    "VALID_KEYS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ObjectiveConfig",
    "ReaderConfig",
    "RerankerConfig",
    "TrainConfig",
    "dump",
    "from_dict",
    "load",
    "parse_override",
    "validate",
]


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in fields(cls):
        tp = get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            out.append(prefix + f.name)
    return out


VALID_KEYS = _keys(Config)


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, VALID_KEYS, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(VALID_KEYS)}"
    return ConfigError(f"unknown config key {key!r}{hint}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted for floats)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(key, value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            value = [value]
        return tuple(_coerce(key, v, get_args(tp)[0]) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(raw: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = prefix + str(key)
        if key not in names:
            raise _unknown(full)
        tp = hints[key]
        nested = isinstance(tp, type) and dataclasses.is_dataclass(tp)
        kwargs[key] = from_dict(value, tp, full + ".") if nested else _coerce(full, value, tp)
    return cls(**kwargs)


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value, e.g. objective.tau=0.3")
    key, text = item.split("=", 1)
    key = key.strip()
    if key not in VALID_KEYS:
        raise _unknown(key)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse the value of {key}: {err}") from None
    return key, value


def load(path: str | Path | Config | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or take a Config, or start from the defaults) and apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if isinstance(path, Config):
        raw = path.to_dict()
    elif path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        if p.is_dir():
            raise ConfigError(f"config {str(p)!r} is a folder; give a YAML file, e.g. configs/default.yaml")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{p}: not UTF-8 text (byte {err.start}: {err.object[err.start : err.start + 1]!r}); save it as UTF-8 YAML"
            ) from None
        except OSError as err:
            raise ConfigError(f"{p}: cannot read the config ({err.strerror})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
    for item in overrides:
        key, value = parse_override(item)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"section {section!r} must be a mapping")
        raw[section][name] = value
    return validate(from_dict(raw))


def dump(cfg: Config) -> str:
    data = cfg.to_dict()
    data["eval"]["ks"] = list(data["eval"]["ks"])
    return yaml.safe_dump(data, sort_keys=False)
