"""Retention in SQL: which versions are live, and the writes that end a version's life (a TTL, a
delete) or remove what is left of it (``gc``).

Deleting or expiring a version moves no data: the row stays, hidden from every reader, until ``gc``
removes it with its aliases and every stored manifest that no remaining version uses. Each function
runs inside the caller's write transaction, so a failure changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..errors import InvalidInput, NotFound
from ..names import LATEST
from .base import Collected, Deletion

if TYPE_CHECKING:
    from .sql import Connection

# A version is live until deleted or past its expiry; the one parameter is the current time.
LIVE = "v.deleted_at IS NULL AND (v.expires_at IS NULL OR v.expires_at > ?)"


def live_aliases(db: Connection, artifact_id: int, now: float) -> dict[str, int]:
    """The aliases that point at live versions. ``latest`` stays where it is while that version lives;
    once it expired, ``latest`` is the newest live version (an expiry moves no row)."""
    aliases = dict(db.execute(
        f"SELECT l.alias, l.idx FROM aliases l JOIN versions v ON v.artifact_id = l.artifact_id AND v.idx = l.idx"
        f" WHERE l.artifact_id = ? AND {LIVE} ORDER BY l.alias", (artifact_id, now)))  # fmt: skip
    if LATEST not in aliases:
        newest = newest_live(db, artifact_id, now)
        if newest is not None:
            aliases[LATEST] = newest
    return aliases


def newest_live(db: Connection, artifact_id: int, now: float, *, besides: int | None = None) -> int | None:
    (newest,) = db.execute(f"SELECT MAX(v.idx) FROM versions v WHERE v.artifact_id = ? AND v.idx <> ? AND {LIVE}",
                           (artifact_id, -1 if besides is None else besides, now)).fetchone()  # fmt: skip
    return newest


def gone(db: Connection, artifact_id: int, index: int, now: float) -> str | None:
    """Why version ``index`` is not shown ("was deleted ...", "expired ..."); None if it is live or unknown."""
    row = db.execute("SELECT deleted_at, expires_at FROM versions WHERE artifact_id = ? AND idx = ?",
                     (artifact_id, index)).fetchone()  # fmt: skip
    if row is None:
        return None
    deleted_at, expires_at = row
    if deleted_at is not None:
        return f"was deleted ({when(deleted_at)})"
    if expires_at is not None and expires_at <= now:
        return f"expired ({when(expires_at)})"
    return None


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def set_expiry(db: Connection, artifact_id: int, name: str, index: int, ttl: float | None) -> float | None:
    """Give version ``index`` a TTL counted from its creation, as W&B's ``artifact.ttl`` (None: no TTL);
    returns its new expiry. A deleted version is refused; an expired one not yet collected comes back
    if the new TTL reaches past now."""
    row = db.execute("SELECT created_at, deleted_at FROM versions WHERE artifact_id = ? AND idx = ?",
                     (artifact_id, index)).fetchone()  # fmt: skip
    if row is None:
        raise NotFound(f"{name} has no version v{index}")
    created_at, deleted_at = row
    if deleted_at is not None:
        raise InvalidInput(f"{name}:v{index} was deleted ({when(deleted_at)}): its TTL cannot change")
    expires_at = None if ttl is None else created_at + ttl
    db.execute("UPDATE versions SET expires_at = ? WHERE artifact_id = ? AND idx = ?", (expires_at, artifact_id, index))
    return expires_at


def delete_version(db: Connection, artifact_id: int, name: str, index: int, *, force: bool, now: float) -> Deletion:
    """Mark version ``index`` deleted. User aliases on it refuse the delete (``force``: they are removed;
    none is moved elsewhere). ``latest`` moves to the newest live version left, or is removed."""
    row = db.execute("SELECT deleted_at FROM versions WHERE artifact_id = ? AND idx = ?",
                     (artifact_id, index)).fetchone()  # fmt: skip
    if row is None:
        raise NotFound(f"{name} has no version v{index}")
    if row[0] is not None:
        raise InvalidInput(f"{name}:v{index} was deleted already ({when(row[0])})")
    held = [alias for (alias,) in db.execute("SELECT alias FROM aliases WHERE artifact_id = ? AND idx = ?"
                                             " ORDER BY alias", (artifact_id, index))]  # fmt: skip
    protecting = [alias for alias in held if alias != LATEST]
    if protecting and not force:
        raise InvalidInput(f"{name}:v{index} is protected by alias {', '.join(protecting)}: move or remove it "
                           f"(refmount alias --delete), or pass --force to drop it with the version")  # fmt: skip
    was_latest = live_aliases(db, artifact_id, now).get(LATEST) == index
    db.execute("DELETE FROM aliases WHERE artifact_id = ? AND idx = ?", (artifact_id, index))
    db.execute("UPDATE versions SET deleted_at = ? WHERE artifact_id = ? AND idx = ?", (now, artifact_id, index))
    latest = newest_live(db, artifact_id, now, besides=index)
    if was_latest or LATEST in held:
        db.execute("DELETE FROM aliases WHERE artifact_id = ? AND alias = ?", (artifact_id, LATEST))
        if latest is not None:
            db.execute("INSERT INTO aliases (artifact_id, alias, idx) VALUES (?, ?, ?)", (artifact_id, LATEST, latest))
    return Deletion(f"{name}:v{index}", tuple(protecting), was_latest, latest)


def collect(db: Connection, now: float, *, dry_run: bool) -> Collected:
    """Remove (``dry_run``: only find) the rows of deleted and expired versions, their aliases, and the
    stored manifests with their node trees that no remaining version uses."""
    dead = db.execute(
        "SELECT p.name, a.name, v.idx, v.artifact_id, v.deleted_at FROM versions v JOIN artifacts a"
        f" ON a.id = v.artifact_id JOIN projects p ON p.id = a.project_id WHERE NOT ({LIVE})"
        " ORDER BY p.name, a.name, v.idx",
        (now,),
    ).fetchall()
    unused = db.execute(
        "SELECT m.id, m.content_id, m.file_count FROM manifests m WHERE NOT EXISTS"
        f" (SELECT 1 FROM versions v WHERE v.manifest_id = m.id AND {LIVE}) ORDER BY m.content_id",
        (now,),
    ).fetchall()
    if not dry_run:
        keys = [(artifact_id, index) for _, _, index, artifact_id, _ in dead]
        db.executemany("DELETE FROM aliases WHERE artifact_id = ? AND idx = ?", keys)
        db.executemany("DELETE FROM versions WHERE artifact_id = ? AND idx = ?", keys)
        _delete_manifests(db, [mid for mid, _, _ in unused])
    versions = tuple((f"{project}/{artifact}:v{index}", "deleted" if deleted_at is not None else "expired")
                     for project, artifact, index, _, deleted_at in dead)  # fmt: skip
    return Collected(versions, tuple((content_id, files) for _, content_id, files in unused))


def _delete_manifests(db: Connection, ids: Iterable[int]) -> None:
    ids = list(ids)
    for start in range(0, len(ids), 500):  # bounded IN lists: SQLite caps a statement's parameters
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        db.execute(f"DELETE FROM nodes WHERE manifest_id IN ({marks})", chunk)
        db.execute(f"DELETE FROM manifests WHERE id IN ({marks})", chunk)


def live_manifest_ids(db: Connection, now: float) -> set[str]:
    rows = db.execute(
        f"SELECT DISTINCT m.content_id FROM versions v JOIN manifests m ON m.id = v.manifest_id WHERE {LIVE}", (now,)
    )
    return {content_id for (content_id,) in rows}
