"""Registry backends, chosen by URL: ``sqlite:///path/registry.db`` (embedded default) or
``postgresql://user@host:port/db`` (shared by a cluster)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ..errors import InvalidInput
from .base import ArtifactInfo, LogResult, ManifestIndex, Node, NoRegistry, Registry, VersionInfo

ENV_VAR = "REFMOUNT_REGISTRY"


def default_url() -> str:
    """From the config files and ``$REFMOUNT_REGISTRY``, else a SQLite file under the XDG data directory."""
    from ..config import load

    return load().registry


def open_registry(url: str | None = None, *, index_dir: Path | None = None, create: bool = False) -> Registry:
    """``index_dir``: where a shared (network) registry keeps local copies of manifest indexes.

    ``create``: make the registry if there is none at ``url`` yet; for callers that are about to write.
    Otherwise a missing registry raises :class:`NoRegistry` and nothing is created.
    """
    url = url or default_url()
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteRegistry

        path = url.removeprefix("sqlite://")  # sqlite:///abs/path (sqlite:////abs/path works too)
        if not path.startswith("/"):
            raise InvalidInput(f"registry URL {url!r} must name an absolute path, e.g. sqlite:///home/me/registry.db")
        return SQLiteRegistry("/" + path.lstrip("/"), create=create)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresRegistry

        return PostgresRegistry(url, index_dir=index_dir, create=create)
    raise InvalidInput(
        f"unsupported registry URL {url!r} (expected sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST:PORT/DB)"
    )


__all__ = [
    "ENV_VAR",
    "ArtifactInfo",
    "LogResult",
    "ManifestIndex",
    "NoRegistry",
    "Node",
    "Registry",
    "VersionInfo",
    "default_url",
    "open_registry",
]
