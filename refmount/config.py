"""Effective settings: built-in defaults < config files < environment < command-line flags.

Files: ``/etc/refmount/config.toml`` (a node's admin), then ``$XDG_CONFIG_HOME/refmount/config.toml``
(a user); ``$REFMOUNT_CONFIG`` names one file to use instead of both. Every value remembers where it
came from, so ``refmount config`` can say why a node mounts what it mounts.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidInput

SYSTEM_FILE = Path("/etc/refmount/config.toml")


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)?\s*", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``50G``, ``512MiB``, ``1.5T`` or a number of bytes -> bytes (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise InvalidInput(f"invalid size {text!r}: use e.g. 50G, 512M or a number of bytes")
    return int(float(m.group(1)) * 1024 ** "BKMGTP".index((m.group(2) or "B").upper()))


def _non_negative_float(value: Any) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _id(value: Any) -> int:
    number = int(value)
    if not 0 <= number < 2**32:
        raise ValueError("must be a uid/gid")
    return number


def _options(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(o).strip() for o in items if str(o).strip())


@dataclass(frozen=True)
class _Key:
    parse: Callable[[Any], Any]
    env: str
    help: str


KEYS: dict[str, _Key] = {
    "registry": _Key(str, "REFMOUNT_REGISTRY", "registry URL: sqlite:///path or postgresql://user@host:port/db"),
    "cache_dir": _Key(lambda v: str(Path(v).expanduser()), "REFMOUNT_CACHE_DIR", "block cache directory"),
    "cache_size": _Key(parse_size, "REFMOUNT_CACHE_SIZE", "block cache size limit (e.g. 50G)"),
    "alias_ttl": _Key(_non_negative_float, "REFMOUNT_ALIAS_TTL", "seconds before alias and listing changes show"),
    "allow_other": _Key(_bool, "REFMOUNT_ALLOW_OTHER", "let other users read the mount"),
    "uid": _Key(_id, "REFMOUNT_UID", "owner uid of files on the mount"),
    "gid": _Key(_id, "REFMOUNT_GID", "owner gid of files on the mount"),
    "fuse_options": _Key(_options, "REFMOUNT_FUSE_OPTIONS", "extra FUSE mount options"),
}


def defaults() -> dict[str, Any]:
    return {
        "registry": f"sqlite://{data_home() / 'refmount' / 'registry.db'}",
        "cache_dir": str(cache_home() / "refmount"),
        "cache_size": parse_size("10G"),
        "alias_ttl": 5.0,
        "allow_other": False,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "fuse_options": (),
    }


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    sources: Mapping[str, str]  # key -> "default", a file path, "env VAR" or "flag"

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None


def config_files() -> list[tuple[Path, bool]]:
    """The files to read, each with whether it must exist: one the user names must, defaults need not."""
    if os.environ.get("REFMOUNT_CONFIG"):
        return [(Path(os.environ["REFMOUNT_CONFIG"]), True)]
    return [(SYSTEM_FILE, False), (config_home() / "refmount" / "config.toml", False)]


def load(flags: Mapping[str, Any] | None = None) -> Settings:
    """The effective settings; ``flags`` (None values ignored) override everything else."""
    values, sources = defaults(), dict.fromkeys(KEYS, "default")

    def put(key: str, raw: Any, source: str) -> None:
        try:
            values[key] = KEYS[key].parse(raw)
        except (TypeError, ValueError, InvalidInput) as exc:
            raise InvalidInput(f"{source}: invalid {key} {raw!r}: {exc}") from exc
        sources[key] = source

    for path, required in config_files():
        for key, raw in _read_file(path, required=required).items():
            put(key, raw, str(path))
    for key, spec in KEYS.items():
        if os.environ.get(spec.env):
            put(key, os.environ[spec.env], f"env {spec.env}")
    for key, raw in (flags or {}).items():
        if raw is not None:
            put(key, raw, "flag")
    return Settings(values, sources)


def _read_file(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise InvalidInput(f"config file {path} (named by $REFMOUNT_CONFIG) does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"cannot read config {path}: {exc}") from exc
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InvalidInput(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(KEYS)})")
    return data
