"""Registry backends, chosen by URL (see :mod:`.url`): ``sqlite:////abs/registry.db`` (embedded default;
``sqlite:///registry.db`` is relative to the working directory) or ``postgresql://user@host:port/db``
(shared by a cluster)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInput
from .base import (
    ArtifactInfo,
    Collected,
    Deletion,
    LineageRecord,
    LinkResult,
    LogResult,
    ManifestIndex,
    Node,
    NoRegistry,
    Registry,
    VersionInfo,
)
from .url import normalize, redact, sqlite_path

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
    try:
        url = normalize(url)
    except ValueError as exc:
        raise InvalidInput(f"invalid registry URL {redact(url)!r}: {exc}") from None
    path = sqlite_path(url)
    if path is not None:
        from .sqlite import SQLiteRegistry

        return SQLiteRegistry(path, create=create)
    from .postgres import PostgresRegistry

    return PostgresRegistry(url, index_dir=index_dir, create=create)


__all__ = [
    "ENV_VAR",
    "ArtifactInfo",
    "Collected",
    "Deletion",
    "LineageRecord",
    "LinkResult",
    "LogResult",
    "ManifestIndex",
    "NoRegistry",
    "Node",
    "Registry",
    "VersionInfo",
    "default_url",
    "open_registry",
]
