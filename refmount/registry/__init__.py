"""Registry backends, chosen by URL: ``sqlite:///path/registry.db`` (embedded default)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import InvalidInput
from .base import ArtifactInfo, LogResult, ManifestIndex, Node, Registry, VersionInfo

ENV_VAR = "REFMOUNT_REGISTRY"


def default_url() -> str:
    """``$REFMOUNT_REGISTRY``, else a SQLite file under the XDG data directory."""
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{data_home / 'refmount' / 'registry.db'}"


def open_registry(url: str | None = None) -> Registry:
    url = url or default_url()
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteRegistry

        path = url.removeprefix("sqlite://")
        if not path.startswith("/"):
            raise InvalidInput(f"registry URL {url!r} must name an absolute path, e.g. sqlite:///home/me/registry.db")
        return SQLiteRegistry(path)
    raise InvalidInput(f"unsupported registry URL {url!r} (expected sqlite:///ABSOLUTE/PATH)")


__all__ = [
    "ENV_VAR",
    "ArtifactInfo",
    "LogResult",
    "ManifestIndex",
    "Node",
    "Registry",
    "VersionInfo",
    "default_url",
    "open_registry",
]
