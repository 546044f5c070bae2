"""Registry collections in SQL: linking a version into a collection, and finding the links of a version.

A collection version is a row of ``versions`` like any other, in a ``wandb-registry-*`` project, whose
``manifest_id`` is the source version's (the stored manifest is shared, never copied) and whose
``linked_from`` names the source. So every reader (ls, show, download, the mount), alias, TTL, delete and
gc treat it as any version; gc keeps a manifest while any live version, link or not, uses it. Each function
runs inside the caller's write transaction, so a failure changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .retention import LIVE

if TYPE_CHECKING:
    from .sql import Connection


def link(db: Connection, source_id: int, source_index: int, target_id: int, origin: str, *, now: float,
         next_index: Callable[[Connection, int], int]) -> tuple[int, bool]:  # fmt: skip
    """The collection's version of the source's manifest: the live one it has already (created False), or a
    new ``vN`` sharing it, with the source's digest, description and metadata and no TTL (created True)."""
    (manifest_id,) = db.execute("SELECT manifest_id FROM versions WHERE artifact_id = ? AND idx = ?",
                                (source_id, source_index)).fetchone()  # fmt: skip
    (existing,) = db.execute(f"SELECT MIN(v.idx) FROM versions v WHERE v.artifact_id = ? AND v.manifest_id = ?"
                             f" AND {LIVE}", (target_id, manifest_id, now)).fetchone()  # fmt: skip
    if existing is not None:
        return int(existing), False
    index = next_index(db, target_id)
    db.execute(
        "INSERT INTO versions (artifact_id, idx, manifest_id, digest, created_at, description, metadata, linked_from)"
        " SELECT ?, ?, manifest_id, digest, ?, description, metadata, ? FROM versions"
        " WHERE artifact_id = ? AND idx = ?",
        (target_id, index, now, origin, source_id, source_index),
    )
    return index, True


def links_to(db: Connection, artifact: str, now: float) -> dict[int, tuple[str, ...]]:
    """Version index of ``artifact`` (project/name) -> the live collection versions linking it, sorted."""
    prefix = f"{artifact}:v"
    rows = db.execute(
        "SELECT p.name, a.name, v.idx, v.linked_from FROM versions v JOIN artifacts a ON a.id = v.artifact_id"
        f" JOIN projects p ON p.id = a.project_id WHERE substr(v.linked_from, 1, ?) = ? AND {LIVE}",
        (len(prefix), prefix, now),
    ).fetchall()
    found: dict[int, list[tuple[str, str, int]]] = {}
    for project, name, index, linked_from in rows:  # sorted here: a database's collation may order names otherwise
        found.setdefault(int(linked_from[len(prefix) :]), []).append((project, name, index))
    return {source: tuple(f"{p}/{n}:v{i}" for p, n, i in sorted(links)) for source, links in sorted(found.items())}
