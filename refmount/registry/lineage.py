"""Lineage in SQL: which jobs produced and used which versions, one row per (version, role, job, host).

Versions are named by text (``project/artifact:vN``), as ``linked_from`` names them: lineage outlives the
version's row (``gc`` removes that), so "what did run X use" still has an answer after the data is gone.
Rows are added to, never replaced: a row seen again keeps its first ``first_seen`` and detail, takes the
later ``last_seen`` and adds its counts, whichever of several daemons writes first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..jobs import Job
from .base import LineageRecord

if TYPE_CHECKING:
    from .sql import Connection

# Portable types: SQLite reads BIGINT as INTEGER and DOUBLE PRECISION as REAL.
LINEAGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS lineage (
    version TEXT NOT NULL, role TEXT NOT NULL, job_kind TEXT NOT NULL, job_id TEXT NOT NULL, host TEXT NOT NULL,
    uid BIGINT, detail TEXT NOT NULL, first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
    files BIGINT NOT NULL, bytes BIGINT NOT NULL, PRIMARY KEY (version, role, job_kind, job_id, host));
CREATE INDEX IF NOT EXISTS lineage_by_job ON lineage (job_id);
"""

_COLUMNS = "version, role, job_kind, job_id, host, uid, detail, first_seen, last_seen, files, bytes"
_UPSERT = f"""INSERT INTO lineage ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (version, role, job_kind, job_id, host) DO UPDATE SET
    uid = COALESCE(lineage.uid, excluded.uid),
    first_seen = CASE WHEN excluded.first_seen < lineage.first_seen
                      THEN excluded.first_seen ELSE lineage.first_seen END,
    last_seen = CASE WHEN excluded.last_seen > lineage.last_seen THEN excluded.last_seen ELSE lineage.last_seen END,
    files = lineage.files + excluded.files, bytes = lineage.bytes + excluded.bytes"""


def create(db: Connection) -> None:
    for statement in filter(str.strip, LINEAGE_SCHEMA.split(";")):
        db.execute(statement)


def record(db: Connection, records: Iterable[LineageRecord]) -> None:
    """Add ``records`` (in key order: two daemons writing overlapping batches then lock rows in one order)."""
    rows = sorted(
        (r.version, r.role, r.job.kind, r.job.id, r.job.host, r.job.uid, json.dumps(dict(r.job.detail), sort_keys=True),
         r.first_seen, r.last_seen, r.files, r.bytes)
        for r in records
    )  # fmt: skip
    if rows:
        db.executemany(_UPSERT, rows)


def query(db: Connection, *, versions: Iterable[str] = (), job_id: str | None = None) -> list[LineageRecord]:
    """The rows of ``versions``, or of the job ``job_id`` (a SLURM job's id takes its steps too)."""
    if job_id is not None:
        rows = db.execute(f"SELECT {_COLUMNS} FROM lineage WHERE job_id = ?"
                          " OR (job_kind = 'slurm' AND substr(job_id, 1, ?) = ?)",
                          (job_id, len(job_id) + 1, job_id + ".")).fetchall()  # fmt: skip
    else:
        wanted = list(dict.fromkeys(versions))
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        rows = db.execute(f"SELECT {_COLUMNS} FROM lineage WHERE version IN ({marks})", wanted).fetchall()
    found = [
        LineageRecord(version, role, Job(kind, job, host, uid, json.loads(detail)), first, last, files, size)
        for version, role, kind, job, host, uid, detail, first, last, files, size in rows
    ]
    return sorted(found, key=lambda r: (r.version, r.role != "produced", r.first_seen, r.job.name, r.job.host))
