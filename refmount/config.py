"""Effective settings: built-in defaults < config files < environment < command-line flags.

Under systemd, the default cache directory is the unit's ``CacheDirectory=`` ($CACHE_DIRECTORY).

Files: ``/etc/refmount/config.toml`` (a node's admin), then ``$XDG_CONFIG_HOME/refmount/config.toml``
(a user); ``$REFMOUNT_CONFIG`` names one file to use instead of both. Every value remembers where it
came from, so ``refmount config`` can say why a node mounts what it mounts.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .registry.url import normalize as _registry_url
from .registry.url import redact, sqlite_url

SYSTEM_FILE = Path("/etc/refmount/config.toml")


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


# A number, then K, M, G, T or P (optionally followed by i, iB or B), or B, or nothing (bytes).
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([KMGTP])(?:iB?|B)?|B)?\s*", re.IGNORECASE)
SIZE_FORMS = "50G, 50Gi, 50GiB or 50GB (all binary: 1G = 1024**3 bytes) or a number of bytes"


def parse_size(text: str | int) -> int:
    """``50G``, ``512MiB``, ``1.5T`` or a number of bytes -> bytes; raises ValueError with the reason.

    Units are binary however they are written (50G = 50Gi = 50GiB = 50GB = 50 * 1024**3), as they
    always were here: one meaning per letter, whatever the suffix.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("must not be negative")
        return text
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise ValueError(f"expected a size such as {SIZE_FORMS}")
    return int(float(m.group(1)) * 1024 ** "BKMGTP".index((m.group(2) or "B").upper()))


def _seconds(value: Any) -> float:
    # bool is an int subclass: `alias_ttl = true` must not become 1 second
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if not math.isfinite(number) or number < 0:  # nan would make every expiry check false
        raise ValueError("must be a finite, non-negative number of seconds")
    return number


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _path(value: Any) -> str:
    return str(Path(_text(os.fspath(value) if isinstance(value, os.PathLike) else value)).expanduser())


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _id(value: Any) -> int:
    if isinstance(value, bool | float):  # int() would turn true into 1 and 1000.5 into 1000
        raise ValueError("expected a whole number")
    number = int(value)
    if not 0 <= number < 2**32:
        raise ValueError("must be a uid/gid")
    return number


def _files(value: Any) -> int:
    if isinstance(value, bool | float):
        raise ValueError("expected a whole number of files")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("expected a whole number of files") from None
    if not 0 <= number <= 1024:
        raise ValueError("must be from 0 (off) to 1024")
    return number


def _options(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(o, str) for o in items):
        raise ValueError('expected "opt,opt" or a list of strings')
    return tuple(o.strip() for o in items if o.strip())


METRICS_OFF = "off"


def metrics_address(value: Any) -> str:
    """``HOST:PORT``, ``[IPv6]:PORT``, or ``:PORT``/``PORT`` (on 127.0.0.1: metrics are never exposed beyond
    the node unless a host says so) -> ``HOST:PORT``; ``off`` stays ``off``."""
    text = _text(value).strip()
    if text.lower() == METRICS_OFF:
        return METRICS_OFF
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT (a port from 1 to 65535), :PORT for 127.0.0.1, or off")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError("write an IPv6 address in brackets, as in [::1]:9464")
    return f"{host or '127.0.0.1'}:{int(port)}"


@dataclass(frozen=True)
class _Key:
    parse: Callable[[Any], Any]
    env: str
    option: str  # the `refmount mount` option that sets it, named in errors and sources
    help: str


KEYS: dict[str, _Key] = {
    "registry": _Key(lambda url: _registry_url(_text(url)), "REFMOUNT_REGISTRY", "--registry",
                     "registry URL: sqlite:///relative/path, sqlite:////absolute/path or postgresql://user@host:port/db"),
    "cache_dir": _Key(_path, "REFMOUNT_CACHE_DIR", "--cache-dir", "block cache directory"),
    "cache_size": _Key(parse_size, "REFMOUNT_CACHE_SIZE", "--cache-size", "block cache size limit (e.g. 50G)"),
    "alias_ttl": _Key(_seconds, "REFMOUNT_ALIAS_TTL", "--alias-ttl", "seconds before alias and listing changes show"),
    "stop_timeout": _Key(_seconds, "REFMOUNT_STOP_TIMEOUT", "--stop-timeout",
                         "seconds open files are still served after SIGTERM"),
    "allow_other": _Key(_bool, "REFMOUNT_ALLOW_OTHER", "--allow-other", "let other users read the mount"),
    "uid": _Key(_id, "REFMOUNT_UID", "--uid", "owner uid of files on the mount"),
    "gid": _Key(_id, "REFMOUNT_GID", "--gid", "owner gid of files on the mount"),
    "fuse_options": _Key(_options, "REFMOUNT_FUSE_OPTIONS", "-o", "extra FUSE mount options"),
    "metrics": _Key(metrics_address, "REFMOUNT_METRICS", "--metrics",
                    "serve Prometheus metrics at http://HOST:PORT/metrics, or off"),
    "lineage": _Key(_bool, "REFMOUNT_LINEAGE", "--lineage",
                    "record in the registry which jobs open files of which versions (refmount lineage)"),
    "dir_readahead": _Key(_files, "REFMOUNT_DIR_READAHEAD", "--dir-readahead",
                          "small files fetched ahead per file a job looks up in a directory it reads (0: off)"),
}  # fmt: skip


def service_cache_dir() -> str | None:
    """The cache directory systemd made for the service (``CacheDirectory=``; the first, if several).

    A default, not a setting: a unit that set ``REFMOUNT_CACHE_DIR`` would override the config files.
    """
    return os.environ.get("CACHE_DIRECTORY", "").split(":")[0] or None


def defaults() -> dict[str, Any]:
    return {
        "registry": sqlite_url(Path(os.path.abspath(data_home() / "refmount" / "registry.db"))),
        "cache_dir": service_cache_dir() or str(cache_home() / "refmount"),
        "cache_size": 10 << 30,
        "alias_ttl": 5.0,
        "stop_timeout": 30.0,
        "allow_other": False,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "fuse_options": (),
        "metrics": METRICS_OFF,
        "lineage": True,
        "dir_readahead": 16,
    }


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    sources: Mapping[str, str]  # key -> "default", a file path, "env VAR" or "option --OPT"

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
    if service_cache_dir():
        sources["cache_dir"] = "default (systemd's CacheDirectory=, env CACHE_DIRECTORY)"

    def put(key: str, raw: Any, source: str) -> None:
        try:
            values[key] = KEYS[key].parse(raw)
        except (TypeError, ValueError) as exc:
            shown = redact(raw) if key == "registry" and isinstance(raw, str) else raw
            raise InvalidInput(f"{source}: invalid {key} {shown!r}: {exc}") from exc
        sources[key] = source

    for path, required in config_files():
        for key, raw in _read_file(path, required=required).items():
            put(key, raw, str(path))
    for key, spec in KEYS.items():
        if os.environ.get(spec.env):
            put(key, os.environ[spec.env], f"env {spec.env}")
    for key, raw in (flags or {}).items():
        if raw is not None:
            put(key, raw, f"option {KEYS[key].option}")
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
