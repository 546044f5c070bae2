"""The registry logic shared by SQL backends, written once against a small connection protocol.

Backends differ only in how they connect, how a write transaction takes its lock, and a few DDL
types; every query here uses ``?`` placeholders and portable SQL (``ON CONFLICT``, ``RETURNING``).
"""

from __future__ import annotations

import abc
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..errors import InvalidInput, NotFound
from ..jobs import Job
from ..manifest import CONTENT_MD5, QUOTED_REF, Entry, Manifest, parent_dir
from ..names import LATEST, is_registry_project, validate_alias, validate_collection, version_index
from ..uri import store_scheme
from . import lineage, links, retention
from .base import (
    ArtifactInfo,
    Collected,
    Deletion,
    LineageRecord,
    LinkResult,
    LogResult,
    ManifestIndex,
    Node,
    Registry,
    VersionInfo,
)
from .retention import LIVE

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5
# v2: object keys in s3/gs/az refs are written as they are, as W&B writes and reads them; v1 percent-encoded
# '%', '?', '#' and non-ASCII characters, so v1's refs that hold a '%' are marked as encoded (QUOTED_REF).
# v3: retention. versions.expires_at (a TTL) and versions.deleted_at hide a version until `gc` removes its row;
# artifacts.next_idx keeps version numbers from being reused once gc removed the highest one (as W&B does).
# v4: registry collections. versions.linked_from names the version a collection version links
# (project/artifact:vN, text: it outlives the source's row, which gc may remove while the link lives on).
# v5: lineage (see registry/lineage.py), a table of its own: not among REGISTRY_TABLES, which a v4 registry lacks.
# A manifest as a tree: the daemon looks names up by (parent, name) and lists by (parent, id).
NODES_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    id {id}, manifest_id {int} NOT NULL, parent {int}, name TEXT NOT NULL,
    path TEXT NOT NULL, is_dir INTEGER NOT NULL, size {int}, digest TEXT, ref TEXT, extra TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS nodes_by_name ON nodes (parent, name);
CREATE INDEX IF NOT EXISTS nodes_by_parent ON nodes (parent, id);
CREATE INDEX IF NOT EXISTS files_by_path ON nodes (manifest_id, path) WHERE is_dir = 0;
"""
# {id}, {int} and {real} are filled in per backend (SQLite and PostgreSQL spell them differently);
# use schema_ddl().
SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS projects (id {id}, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS artifacts (
    id {id}, project_id {int} NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL, type TEXT NOT NULL, next_idx {int} NOT NULL DEFAULT 0, UNIQUE (project_id, name));
CREATE TABLE IF NOT EXISTS manifests (
    id {id}, content_id TEXT NOT NULL UNIQUE, digest TEXT NOT NULL,
    file_count {int} NOT NULL, total_size {int} NOT NULL, root_node {int});
{nodes}CREATE TABLE IF NOT EXISTS versions (
    artifact_id {int} NOT NULL REFERENCES artifacts(id), idx INTEGER NOT NULL,
    manifest_id {int} NOT NULL REFERENCES manifests(id), digest TEXT NOT NULL,
    created_at {real} NOT NULL, description TEXT, metadata TEXT NOT NULL, expires_at {real}, deleted_at {real},
    linked_from TEXT, PRIMARY KEY (artifact_id, idx));
CREATE TABLE IF NOT EXISTS aliases (
    artifact_id {int} NOT NULL, alias TEXT NOT NULL, idx INTEGER NOT NULL,
    PRIMARY KEY (artifact_id, alias), FOREIGN KEY (artifact_id, idx) REFERENCES versions (artifact_id, idx));
"""

REGISTRY_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA + NODES_SCHEMA))

_VERSION_COLUMNS = """p.name, a.name, a.type, v.idx, v.digest, m.content_id, v.created_at, m.file_count,
    m.total_size, v.description, v.metadata, v.artifact_id, v.expires_at, v.linked_from"""
_VERSION_FROM = """versions v JOIN artifacts a ON a.id = v.artifact_id JOIN projects p ON p.id = a.project_id
    JOIN manifests m ON m.id = v.manifest_id"""
NODE_COLUMNS = "id, name, is_dir, path, size, digest, ref, extra"
_INSERT_BATCH = 10_000


def check_schema(db: Connection, tables: Iterable[str], where: str) -> int:
    """Refuse what is not a refmount registry this refmount can read; ``tables``: the ones ``db`` has.
    Returns its schema version (below SCHEMA_VERSION: see :func:`upgrade`)."""
    missing = REGISTRY_TABLES.difference(tables)
    if missing:
        what = "none of its tables" if missing == REGISTRY_TABLES else f"no {', '.join(sorted(missing))} table"
        raise InvalidInput(f"{where} is not a refmount registry ({what}); left untouched")
    (version,) = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    if version is None:
        raise InvalidInput(f"{where} is not a refmount registry (no schema version); left untouched")
    if version > SCHEMA_VERSION:
        raise InvalidInput(f"registry {where} has schema v{version}; this refmount knows v{SCHEMA_VERSION}")
    return int(version)


def upgrade(db: Connection, where: str) -> None:
    """Bring the registry to SCHEMA_VERSION, inside the caller's write transaction (which must hold the
    writers' lock: the version is read again here, so that of racing upgraders one does the work)."""
    (version,) = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    if version >= SCHEMA_VERSION:
        return
    if version < 2:
        _mark_quoted_refs(db)
    if version < 3:
        _add_retention_columns(db)
    if version < 4 and "linked_from" not in _columns(db, "versions"):
        db.execute("ALTER TABLE versions ADD COLUMN linked_from TEXT")
    if version < 5:
        lineage.create(db)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    log.info("registry %s upgraded from schema v%d to v%d", where, version, SCHEMA_VERSION)


def _add_retention_columns(db: Connection) -> None:
    # DOUBLE PRECISION: PostgreSQL's REAL would round unix times to minutes; SQLite reads it as REAL.
    for table, column, ddl in (("versions", "expires_at", "DOUBLE PRECISION"),
                               ("versions", "deleted_at", "DOUBLE PRECISION"),
                               ("artifacts", "next_idx", "BIGINT NOT NULL DEFAULT 0")):  # fmt: skip
        if column not in _columns(db, table):  # a registry marked older than its tables (tests do that) has it
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
    db.execute("UPDATE artifacts SET next_idx = COALESCE((SELECT MAX(idx) + 1 FROM versions v"
               " WHERE v.artifact_id = artifacts.id), 0) WHERE next_idx = 0")  # fmt: skip


def _columns(db: Connection, table: str) -> set[str]:
    return {column[0] for column in db.execute(f"SELECT * FROM {table} WHERE 1 = 0").description}


def _mark_quoted_refs(db: Connection) -> None:
    holding_percent = r"%\%%"  # a parameter: psycopg would take a '%' in the statement for a placeholder
    rows = db.execute(r"SELECT id, ref, extra FROM nodes WHERE is_dir = 0 AND ref LIKE ? ESCAPE '\'",
                      (holding_percent,)).fetchall()  # fmt: skip
    marked = []
    for node_id, ref, extra in rows:
        if store_scheme(ref) in ("s3", "gs", "az"):
            marked.append((json.dumps({**(json.loads(extra) if extra else {}), QUOTED_REF: True}, sort_keys=True),
                           node_id))  # fmt: skip
    if marked:
        db.executemany("UPDATE nodes SET extra = ? WHERE id = ?", marked)


def schema_ddl(*, id_type: str, int_type: str, real_type: str) -> str:
    types = {"id": id_type, "int": int_type, "real": real_type}
    return SCHEMA.format(nodes=NODES_SCHEMA.format(**types), **types) + lineage.LINEAGE_SCHEMA


class Connection(Protocol):
    """What the shared code needs of a connection: DB-API style ``execute`` with ``?`` placeholders."""

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...


class SQLRegistry(Registry):
    """Registry semantics over SQL. Subclasses provide connections and write transactions."""

    @property
    @abc.abstractmethod
    def _db(self) -> Connection:
        """A connection usable by the calling thread."""

    @abc.abstractmethod
    def _write(self) -> AbstractContextManager[Connection]:
        """A write transaction; concurrent writers of one artifact must serialize inside it."""

    def _stream(self, db: Connection, sql: str, args: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """Rows of a large result without holding them all (SQLite cursors already stream)."""
        return iter(db.execute(sql, args))

    def _lock_artifact(self, db: Connection, artifact_id: int) -> None:
        """Serialize writers of one artifact (where the transaction does not already)."""

    # -- writing --------------------------------------------------------------------------------
    def log_version(
        self,
        project: str,
        artifact: str,
        manifest: Manifest,
        *,
        type: str,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = (),
        ttl: float | None = None,
        run: Job | None = None,
    ) -> LogResult:
        with self._write() as db:
            result = self._log_version(db, project, artifact, manifest, type=type, description=description,
                                       metadata=metadata, aliases=aliases, ttl=ttl)  # fmt: skip
            if run is not None:
                now = time.time()
                lineage.record(db, [LineageRecord(result.version.qualified_name, "produced", run, now, now)])
            return result

    def _log_version(
        self,
        db: Connection,
        project: str,
        artifact: str,
        manifest: Manifest,
        *,
        type: str,
        description: str | None,
        metadata: Mapping[str, Any] | None,
        aliases: Sequence[str],
        ttl: float | None,
    ) -> LogResult:
        if is_registry_project(project):
            raise InvalidInput(f"{project} is a registry: its collections get versions by `refmount link`, "
                               "not by logging")  # fmt: skip
        digest, content_id = manifest.digest, manifest.content_id
        metadata_json = json.dumps(dict(metadata or {}), sort_keys=True)
        artifact_id = self._ensure_artifact(db, project, artifact, type)
        now = time.time()
        latest = retention.live_aliases(db, artifact_id, now).get(LATEST)
        if latest is not None:
            latest_digest, latest_manifest = db.execute(
                "SELECT digest, manifest_id FROM versions WHERE artifact_id = ? AND idx = ?", (artifact_id, latest)
            ).fetchone()
            if latest_digest == digest and self._same_content_md5s(db, latest_manifest, manifest):
                for alias in aliases:
                    self._put_alias(db, artifact_id, alias, latest)
                return LogResult(self._version(db, artifact_id, latest), created=False)
        manifest_id = self._store_manifest(db, manifest, content_id, digest)
        index = self._next_index(db, artifact_id)
        db.execute(
            "INSERT INTO versions (artifact_id, idx, manifest_id, digest, created_at, description, metadata,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (artifact_id, index, manifest_id, digest, now, description, metadata_json,
             None if ttl is None else now + ttl),
        )  # fmt: skip
        for alias in (LATEST, *aliases):
            self._put_alias(db, artifact_id, alias, index)
        return LogResult(self._version(db, artifact_id, index), created=True)

    def copy_version(self, version: VersionInfo, manifest: Manifest) -> bool:
        with self._write() as db:
            artifact_id = self._ensure_artifact(db, version.project, version.artifact, version.type)
            row = db.execute(
                "SELECT digest FROM versions WHERE artifact_id = ? AND idx = ?", (artifact_id, version.index)
            ).fetchone()
            if row is not None:
                if row[0] != version.digest:
                    raise InvalidInput(f"{version.qualified_name} already exists here with other content")
                return False
            manifest_id = self._store_manifest(db, manifest, manifest.content_id, manifest.digest)
            db.execute(
                "INSERT INTO versions (artifact_id, idx, manifest_id, digest, created_at, description, metadata,"
                " expires_at, linked_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (artifact_id, version.index, manifest_id, version.digest, version.created_at, version.description,
                 json.dumps(dict(version.metadata), sort_keys=True), version.expires_at, version.linked_from),
            )  # fmt: skip
            db.execute("UPDATE artifacts SET next_idx = ? WHERE id = ? AND next_idx <= ?",
                       (version.index + 1, artifact_id, version.index))  # fmt: skip
            return True

    def set_alias(self, project: str, artifact: str, alias: str, index: int) -> None:
        with self._write() as db:
            artifact_id = self._artifact_id(db, project, artifact)
            self._lock_artifact(db, artifact_id)
            if not db.execute(
                f"SELECT 1 FROM versions v WHERE v.artifact_id = ? AND v.idx = ? AND {LIVE}",
                (artifact_id, index, time.time()),
            ).fetchone():
                raise NotFound(f"{project}/{artifact} has no version v{index}")
            self._put_alias(db, artifact_id, alias, index)

    def delete_alias(self, project: str, artifact: str, alias: str, *, only_at: int | None = None) -> None:
        with self._write() as db:
            artifact_id = self._artifact_id(db, project, artifact)
            current = self._alias_index(db, artifact_id, alias)
            if current is None:
                raise NotFound(f"{project}/{artifact} has no alias {alias!r}")
            if only_at is not None and current != only_at:
                raise InvalidInput(f"{alias} points at v{current}, not v{only_at}: nothing removed "
                                   f"(name {project}/{artifact} alone to remove it anyway)")  # fmt: skip
            db.execute("DELETE FROM aliases WHERE artifact_id = ? AND alias = ?", (artifact_id, alias))

    # -- collections (see registry/links.py) -----------------------------------------------------
    def link_version(
        self,
        project: str,
        artifact: str,
        label: str,
        collection_project: str,
        collection: str,
        *,
        aliases: Sequence[str] = (),
    ) -> LinkResult:
        validate_collection(collection_project, collection)
        aliases = [validate_alias(alias) for alias in dict.fromkeys(aliases)]
        with self._write() as db:
            source_id = self._artifact_id(db, project, artifact)
            (kind,) = db.execute("SELECT type FROM artifacts WHERE id = ?", (source_id,)).fetchone()
            # A collection has one type, the type of what was linked first (as in W&B): another is refused.
            # Only the collection is locked (one lock: two links across collections cannot deadlock); from here
            # on gc waits for this transaction, so the source's manifest stays while it is linked.
            target_id = self._ensure_artifact(db, collection_project, collection, kind)
            source = self.resolve(project, artifact, label)  # live versions only: same connection, same transaction
            origin = source.linked_from or source.qualified_name  # a link of a link records the original
            index, created = links.link(db, source_id, source.index, target_id, origin, now=time.time(),
                                        next_index=self._next_index)  # fmt: skip
            for alias in (LATEST, *aliases) if created else aliases:
                self._put_alias(db, target_id, alias, index)
            return LinkResult(self._version(db, target_id, index), created)

    def unlink_version(self, project: str, artifact: str, label: str) -> Deletion:
        with self._write() as db:
            artifact_id = self._artifact_id(db, project, artifact)
            self._lock_artifact(db, artifact_id)
            version = self.resolve(project, artifact, label)
            if version.linked_from is None:
                raise InvalidInput(f"{version.qualified_name} is not a link (it was logged): "
                                   "`refmount delete` deletes it")  # fmt: skip
            return retention.delete_version(db, artifact_id, f"{project}/{artifact}", version.index, force=True,
                                            now=time.time())  # fmt: skip

    def links_to(self, project: str, artifact: str) -> dict[int, tuple[str, ...]]:
        return links.links_to(self._db, f"{project}/{artifact}", time.time())

    # -- lineage (see registry/lineage.py) -------------------------------------------------------
    def record_lineage(self, records: Sequence[LineageRecord]) -> None:
        with self._write() as db:
            lineage.record(db, records)

    def lineage(self, *, versions: Sequence[str] = (), job_id: str | None = None) -> list[LineageRecord]:
        return lineage.query(self._db, versions=versions, job_id=job_id)

    # -- retention (see registry/retention.py) --------------------------------------------------
    def set_ttl(self, project: str, artifact: str, index: int, ttl: float | None) -> VersionInfo:
        with self._write() as db:
            artifact_id = self._artifact_id(db, project, artifact)
            self._lock_artifact(db, artifact_id)
            retention.set_expiry(db, artifact_id, f"{project}/{artifact}", index, ttl)
            return self._version(db, artifact_id, index)

    def delete_version(self, project: str, artifact: str, index: int, *, force: bool = False) -> Deletion:
        with self._write() as db:
            artifact_id = self._artifact_id(db, project, artifact)
            self._lock_artifact(db, artifact_id)
            return retention.delete_version(db, artifact_id, f"{project}/{artifact}", index, force=force,
                                            now=time.time())  # fmt: skip

    def collect(self, *, dry_run: bool = False) -> Collected:
        with self._write() as db:
            if not dry_run:  # a dry run only reads: writers need not wait for it
                self._lock_writers(db)
            return retention.collect(db, time.time(), dry_run=dry_run)

    def live_manifest_ids(self) -> set[str]:
        return retention.live_manifest_ids(self._db, time.time())

    def _lock_writers(self, db: Connection) -> None:
        """Keep every writer out until the transaction ends (where the transaction does not already), so that
        no logger reuses a stored manifest that ``gc`` is removing."""

    def _ensure_artifact(self, db: Connection, project: str, artifact: str, type: str) -> int:
        """The artifact's id, creating project and artifact if needed; holds the artifact's write lock."""
        db.execute("INSERT INTO projects (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (project,))
        (project_id,) = db.execute("SELECT id FROM projects WHERE name = ?", (project,)).fetchone()
        db.execute(
            "INSERT INTO artifacts (project_id, name, type) VALUES (?, ?, ?) ON CONFLICT (project_id, name) DO NOTHING",
            (project_id, artifact, type),
        )
        artifact_id, existing_type = db.execute(
            "SELECT id, type FROM artifacts WHERE project_id = ? AND name = ?", (project_id, artifact)
        ).fetchone()
        if existing_type != type:
            raise InvalidInput(f"{project}/{artifact} has type {existing_type!r}, not {type!r}")
        self._lock_artifact(db, artifact_id)
        return artifact_id

    @staticmethod
    def _next_index(db: Connection, artifact_id: int) -> int:
        """The next version number, never one used before (gc may have removed the highest version's row)."""
        (stored, highest) = db.execute(
            "SELECT next_idx, (SELECT COALESCE(MAX(idx) + 1, 0) FROM versions WHERE artifact_id = ?)"
            " FROM artifacts WHERE id = ?",
            (artifact_id, artifact_id),
        ).fetchone()
        index = max(stored, highest)
        db.execute("UPDATE artifacts SET next_idx = ? WHERE id = ?", (index + 1, artifact_id))
        return int(index)

    @staticmethod
    def _put_alias(db: Connection, artifact_id: int, alias: str, index: int) -> None:
        db.execute(
            "INSERT INTO aliases (artifact_id, alias, idx) VALUES (?, ?, ?)"
            " ON CONFLICT (artifact_id, alias) DO UPDATE SET idx = excluded.idx",
            (artifact_id, alias, index),
        )

    @staticmethod
    def _same_content_md5s(db: Connection, stored_id: int, manifest: Manifest) -> bool:
        """Whether the stored manifest pins every entry that ``manifest`` pins by ``extra.content_md5`` to the
        same MD5. Those entries' digests are their URLs (W&B's), so equal artifact digests do not say that
        the bytes are the same: a file changed since is a new version, whose bytes could not be logged else."""
        for entry in manifest:
            md5 = entry.extra.get(CONTENT_MD5)
            if md5 is None:
                continue
            row = db.execute(
                "SELECT extra FROM nodes WHERE manifest_id = ? AND path = ? AND is_dir = 0", (stored_id, entry.path)
            ).fetchone()
            if row is None or json.loads(row[0] or "{}").get(CONTENT_MD5) != md5:
                return False
        return True

    @staticmethod
    def _store_manifest(db: Connection, manifest: Manifest, content_id: str, digest: str) -> int:
        """Insert the manifest as a node tree, unless identical content is stored already."""
        # ON CONFLICT waits for a concurrent insert of the same content and then skips ours.
        row = db.execute(
            "INSERT INTO manifests (content_id, digest, file_count, total_size) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (content_id) DO NOTHING RETURNING id",
            (content_id, digest, len(manifest), manifest.total_size),
        ).fetchone()
        if row is None:
            return db.execute("SELECT id FROM manifests WHERE content_id = ?", (content_id,)).fetchone()[0]
        manifest_id = row[0]
        dir_ids: dict[str, int] = {}

        def dir_id(path: str) -> int:
            if path not in dir_ids:
                parent = dir_id(parent_dir(path)) if path else None
                dir_ids[path] = db.execute(
                    "INSERT INTO nodes (manifest_id, parent, name, path, is_dir) VALUES (?, ?, ?, ?, 1) RETURNING id",
                    (manifest_id, parent, path.rpartition("/")[2], path),
                ).fetchone()[0]
            return dir_ids[path]

        db.execute("UPDATE manifests SET root_node = ? WHERE id = ?", (dir_id(""), manifest_id))
        batch: list[tuple[Any, ...]] = []
        for e in manifest:
            extra = json.dumps(dict(e.extra), sort_keys=True) if e.extra else None
            batch.append(
                (
                    manifest_id,
                    dir_id(parent_dir(e.path)),
                    e.path.rpartition("/")[2],
                    e.path,
                    e.size,
                    e.digest,
                    e.ref,
                    extra,
                )
            )
            if len(batch) >= _INSERT_BATCH:
                _insert_files(db, batch)
        _insert_files(db, batch)
        return manifest_id

    # -- reading --------------------------------------------------------------------------------
    def projects(self) -> list[str]:
        # Projects whose every version is gone (deleted, expired, collected) are not shown.
        rows = self._db.execute(
            "SELECT name FROM projects p WHERE EXISTS (SELECT 1 FROM artifacts a JOIN versions v"
            f" ON v.artifact_id = a.id WHERE a.project_id = p.id AND {LIVE}) ORDER BY name",
            (time.time(),),
        )
        return [r[0] for r in rows]

    def schemes(self) -> set[str]:
        # One pass over the refs, comparing short prefixes (portable SQL: no position()/instr()):
        # "s3://bu", "https:/" ... are few whatever the number of entries.
        rows = self._db.execute("SELECT DISTINCT lower(substr(ref, 1, 8)) FROM nodes WHERE is_dir = 0")
        return {prefix.partition(":")[0] for (prefix,) in rows if prefix and ":" in prefix}

    def artifacts(self, project: str) -> list[ArtifactInfo]:
        db = self._db
        (project_id,) = self._one(db, "SELECT id FROM projects WHERE name = ?", (project,), f"no project {project!r}")
        now = time.time()
        # One query whatever the number of artifacts (the mount lists a project every --alias-ttl): latest as
        # retention.live_aliases() has it, the stored alias while its version lives, else the newest live version.
        rows = db.execute(
            f"SELECT a.name, a.type, (SELECT COUNT(*) FROM versions v WHERE v.artifact_id = a.id AND {LIVE}),"
            f" COALESCE((SELECT l.idx FROM aliases l JOIN versions v ON v.artifact_id = l.artifact_id AND v.idx = l.idx"
            f" WHERE l.artifact_id = a.id AND l.alias = ? AND {LIVE}),"
            f" (SELECT MAX(v.idx) FROM versions v WHERE v.artifact_id = a.id AND {LIVE}))"
            " FROM artifacts a WHERE a.project_id = ? ORDER BY a.name",
            (now, LATEST, now, now, project_id),
        ).fetchall()
        return [ArtifactInfo(project, *row) for row in rows if row[2]]

    def versions(self, project: str, artifact: str) -> list[VersionInfo]:
        db = self._db
        artifact_id = self._artifact_id(db, project, artifact)
        now = time.time()
        rows = db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM {_VERSION_FROM} WHERE v.artifact_id = ? AND {LIVE} ORDER BY v.idx",
            (artifact_id, now),
        ).fetchall()
        by_index = self._aliases_by_index(db, artifact_id, now)
        return [_version_info(row, by_index.get(row[3], ())) for row in rows]

    def resolve(self, project: str, artifact: str, label: str) -> VersionInfo:
        db = self._db
        artifact_id = self._artifact_id(db, project, artifact)
        now = time.time()
        index = version_index(label)
        if index is None:
            index = retention.live_aliases(db, artifact_id, now).get(label)
            if index is None:
                stored = self._alias_index(db, artifact_id, label)
                if stored is None:
                    raise NotFound(f"{project}/{artifact} has no alias {label!r}")
                raise NotFound(f"{project}/{artifact}:{label} points at v{stored}, which "
                               f"{retention.gone(db, artifact_id, stored, now) or 'is gone'}")  # fmt: skip
        gone = retention.gone(db, artifact_id, index, now)
        if gone:
            raise NotFound(f"{project}/{artifact}:v{index} {gone}")
        try:
            return self._version(db, artifact_id, index, now)
        except NotFound:
            raise NotFound(f"{project}/{artifact} has no version v{index}") from None

    def aliases(self, project: str, artifact: str) -> dict[str, int]:
        db = self._db
        artifact_id = self._artifact_id(db, project, artifact)
        return dict(sorted(retention.live_aliases(db, artifact_id, time.time()).items()))

    def iter_entries(self, manifest_id: str) -> Iterator[Entry]:
        db = self._db
        (mid,) = self._one(
            db, "SELECT id FROM manifests WHERE content_id = ?", (manifest_id,), f"no stored manifest {manifest_id}"
        )
        for row in self._stream(
            db, f"SELECT {NODE_COLUMNS} FROM nodes WHERE manifest_id = ? AND is_dir = 0 ORDER BY path", (mid,)
        ):
            yield node_from_row(row).entry  # type: ignore[misc]

    def manifest_index(self, manifest_id: str) -> ManifestIndex:
        db = self._db
        mid, root = self._one(
            db,
            "SELECT id, root_node FROM manifests WHERE content_id = ?",
            (manifest_id,),
            f"no stored manifest {manifest_id}",
        )
        return SQLManifestIndex(lambda: self._db, mid, root)

    def manifest_root(self, manifest_id: str) -> int:
        return self._one(self._db, "SELECT root_node FROM manifests WHERE content_id = ?", (manifest_id,),
                         f"no stored manifest {manifest_id}")[0]  # fmt: skip

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _one(db: Connection, sql: str, args: tuple[Any, ...], missing: str) -> tuple[Any, ...]:
        row = db.execute(sql, args).fetchone()
        if row is None:
            raise NotFound(missing)
        return row

    def _artifact_id(self, db: Connection, project: str, artifact: str) -> int:
        return self._one(
            db,
            "SELECT a.id FROM artifacts a JOIN projects p ON p.id = a.project_id WHERE p.name = ? AND a.name = ?",
            (project, artifact),
            f"no artifact {project}/{artifact}",
        )[0]

    @staticmethod
    def _alias_index(db: Connection, artifact_id: int, alias: str) -> int | None:
        row = db.execute("SELECT idx FROM aliases WHERE artifact_id = ? AND alias = ?", (artifact_id, alias)).fetchone()
        return None if row is None else row[0]

    def _aliases_by_index(self, db: Connection, artifact_id: int, now: float) -> dict[int, tuple[str, ...]]:
        by_index: dict[int, tuple[str, ...]] = {}
        for alias, index in sorted(retention.live_aliases(db, artifact_id, now).items()):
            by_index[index] = (*by_index.get(index, ()), alias)
        return by_index

    def _version(self, db: Connection, artifact_id: int, index: int, now: float | None = None) -> VersionInfo:
        row = db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM {_VERSION_FROM} WHERE v.artifact_id = ? AND v.idx = ?",
            (artifact_id, index),
        ).fetchone()
        if row is None:
            raise NotFound(f"version v{index} does not exist")
        now = time.time() if now is None else now
        return _version_info(row, self._aliases_by_index(db, artifact_id, now).get(index, ()))


class SQLManifestIndex(ManifestIndex):
    """One manifest's node tree in a ``nodes`` table, through a per-thread connection getter."""

    def __init__(self, db: Callable[[], Connection], manifest_db_id: int, root: int):
        self._db, self._mid, self._root = db, manifest_db_id, root

    @property
    def root_id(self) -> int:
        return self._root

    def child(self, parent_id: int, name: str) -> Node | None:
        row = (
            self._db()
            .execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE parent = ? AND name = ?", (parent_id, name))
            .fetchone()
        )
        return None if row is None else node_from_row(row)

    def children(self, parent_id: int, after_id: int = 0, limit: int = 1000) -> list[Node]:
        rows = self._db().execute(
            f"SELECT {NODE_COLUMNS} FROM nodes WHERE parent = ? AND id > ? ORDER BY id LIMIT ?",
            (parent_id, after_id, limit),
        )
        return [node_from_row(row) for row in rows]

    def listing(self, parent_id: int, after_id: int = 0, limit: int = 1000) -> list[tuple[int, str, bool, int | None]]:
        # Whether a file is pinned depends on its scheme; only checksum=False locations and http(s) or file
        # refs can fail to be, so only those rows are read whole and checked (a bucket's million entries
        # stay one narrow query per batch).
        db = self._db()
        rows = db.execute(_LISTING, (parent_id, after_id, limit)).fetchall()
        checked = [row[0] for row in rows if row[4]]
        if not checked:
            return [row[:4] for row in rows]
        marks = ",".join("?" * len(checked))
        pinned = {node_id: _pinned(path, size, digest, ref, extra) for node_id, path, size, digest, ref, extra
                  in db.execute(f"SELECT id, path, size, digest, ref, extra FROM nodes WHERE id IN ({marks})",
                                checked)}  # fmt: skip
        return [(node_id, name, is_dir, size if pinned.get(node_id, True) else None)
                for node_id, name, is_dir, size, _ in rows]  # fmt: skip

    def node(self, node_id: int) -> Node | None:
        row = (
            self._db()
            .execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = ? AND manifest_id = ?", (node_id, self._mid))
            .fetchone()
        )
        return None if row is None else node_from_row(row)

    def parent(self, node_id: int) -> Node | None:
        row = self._db().execute(_PARENT, (node_id, self._mid)).fetchone()
        return None if row is None else node_from_row(row)

    def entry(self, path: str) -> Entry | None:
        row = (
            self._db()
            .execute(
                f"SELECT {NODE_COLUMNS} FROM nodes WHERE manifest_id = ? AND path = ? AND is_dir = 0", (self._mid, path)
            )
            .fetchone()
        )
        return None if row is None else node_from_row(row).entry


def _insert_files(db: Connection, batch: list[tuple[Any, ...]]) -> None:
    db.executemany(
        "INSERT INTO nodes (manifest_id, parent, name, path, is_dir, size, digest, ref, extra)"
        " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
        batch,
    )
    batch.clear()


_LISTING = (
    "SELECT id, name, is_dir, size, is_dir = 0 AND (digest = ref OR substr(ref, 1, 4) IN ('http', 'file')) "
    "FROM nodes WHERE parent = ? AND id > ? ORDER BY id LIMIT ?"
)


_PARENT = f"SELECT {NODE_COLUMNS} FROM nodes WHERE id = (SELECT parent FROM nodes WHERE id = ? AND manifest_id = ?)"


def _pinned(path: str, size: int | None, digest: str, ref: str, extra: str | None) -> bool:
    return Entry(path=path, ref=ref, digest=digest, size=size, extra=json.loads(extra) if extra else {}).pinned


def node_from_row(row: tuple[Any, ...]) -> Node:
    node_id, name, is_dir, path, size, digest, ref, extra = row
    if is_dir:
        return Node(node_id, name, True)
    entry = Entry(path=path, ref=ref, digest=digest, size=size, extra=json.loads(extra) if extra else {})
    return Node(node_id, name, False, entry)


def _version_info(row: tuple[Any, ...], aliases: tuple[str, ...]) -> VersionInfo:
    (project, artifact, type_, index, digest, content_id, created, files, size, description, metadata, _, expires,
     linked_from) = row  # fmt: skip
    return VersionInfo(
        project=project,
        artifact=artifact,
        type=type_,
        index=index,
        digest=digest,
        manifest_id=content_id,
        created_at=created,
        file_count=files,
        total_size=size,
        description=description,
        metadata=json.loads(metadata),
        aliases=aliases,
        expires_at=expires,
        linked_from=linked_from,
    )
