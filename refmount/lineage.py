"""The lineage graph around a version or a run: jobs that produced and used versions, and collection links.

A walk goes ``depth`` hops from where it starts, upstream (who produced a version; what that job used) and
downstream (who used a version; what that job produced). A link into a collection is not a hop: a collection
version is the same content under another name, so its readers count as readers of what it links.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import NotFound
from .registry import LineageRecord, Registry

_VERSION = re.compile(r"(?P<project>[^/]+)/(?P<artifact>[^:]+):v(?P<index>\d+)")
UP, DOWN = "up", "down"


@dataclass
class Lineage:
    records: list[LineageRecord] = field(default_factory=list)
    links: set[tuple[str, str]] = field(default_factory=set)  # (source version, collection version)

    def to_json(self) -> dict[str, Any]:
        return {"records": [r.to_json() for r in self.records],
                "links": [{"source": s, "collection": c} for s, c in sorted(self.links)]}  # fmt: skip


def walk(registry: Registry, *, version: str | None = None, run: str | None = None, depth: int = 1) -> Lineage:
    """The records and links within ``depth`` hops of ``version`` (``project/artifact:vN``) or of the job ``run``."""
    found: dict[tuple[Any, ...], LineageRecord] = {}
    links: set[tuple[str, str]] = set()
    start = ("v", version) if version is not None else ("j", run)
    for direction in (UP, DOWN):
        frontier, seen = {start}, {start}
        for _ in range(depth):
            reached = set()
            for record in _step(registry, frontier, direction, links):
                found[record.version, record.role, record.job] = record
                reached.add(("j", record.job.id) if record.role == ("produced" if direction == UP else "used")
                            else ("v", record.version))  # fmt: skip
            frontier = reached - seen
            seen |= reached
            if not frontier:
                break
    records = sorted(found.values(), key=lambda r: (r.version, r.role != "produced", r.first_seen, r.job.name))
    return Lineage(records, links)


def _step(registry: Registry, frontier: set[tuple[str, str | None]], direction: str,
          links: set[tuple[str, str]]) -> Iterable[LineageRecord]:  # fmt: skip
    """The records one hop from ``frontier`` in ``direction``: from a version to its jobs, from a job to its
    versions."""
    versions = _with_links(registry, [name for kind, name in frontier if kind == "v" and name], direction, links)
    toward_version = "produced" if direction == UP else "used"  # the role of a record that leads to a version's job
    for record in registry.lineage(versions=versions) if versions else []:
        if record.role == toward_version:
            yield record
    for kind, job_id in frontier:
        if kind == "j" and job_id:
            yield from (r for r in registry.lineage(job_id=job_id) if r.role != toward_version)


def _with_links(registry: Registry, versions: list[str], direction: str, links: set[tuple[str, str]]) -> list[str]:
    """``versions`` and, downstream, the collection versions linking them; upstream, the versions they link."""
    out = list(versions)
    for name in versions:
        parsed = _VERSION.fullmatch(name)
        if parsed is None:
            continue
        project, artifact, index = parsed["project"], parsed["artifact"], int(parsed["index"])
        try:
            if direction == DOWN:
                for collection_version in registry.links_to(project, artifact).get(index, ()):
                    links.add((name, collection_version))
                    out.append(collection_version)
            else:
                source = registry.resolve(project, artifact, f"v{index}").linked_from
                if source is not None:
                    links.add((source, name))
                    out.append(source)
        except NotFound:  # a version gc removed: its lineage is kept, its links are gone
            continue
    return out


def to_dot(lineage: Lineage, *, version: str | None = None, run: str | None = None) -> str:
    """A Graphviz digraph: versions as boxes, jobs as ellipses (one per job, whatever its hosts), edges from
    producer to version and from version to user, dashed from a version to the collection versions linking it.
    Where the walk started (``version`` or the job ``run``) is drawn bold."""
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica"];', '  edge [fontname="Helvetica"];']
    versions = {r.version for r in lineage.records} | {v for link in lineage.links for v in link}
    if version is not None:
        versions.add(version)
    for name in sorted(versions):
        style = ", style=bold" if name == version else ""
        lines.append(f"  {_quote('v:' + name)} [shape=box, label={_quote(name)}{style}];")
    hosts: dict[str, set[str]] = {}
    for record in lineage.records:
        hosts.setdefault(record.job.name, set()).add(record.job.host)
    for job, on in sorted(hosts.items()):
        style = ", style=bold" if run is not None and job.partition(":")[2] == run else ""
        lines.append(f"  {_quote('j:' + job)} [shape=ellipse, label={_quote(job + chr(10) + ', '.join(sorted(on)))}"
                     f"{style}];")  # fmt: skip
    edges: dict[tuple[str, str], list[LineageRecord]] = {}
    for record in lineage.records:
        job, version = "j:" + record.job.name, "v:" + record.version
        edges.setdefault((job, version) if record.role == "produced" else (version, job), []).append(record)
    for (tail, head), records in sorted(edges.items()):
        files, size = sum(r.files for r in records), sum(r.bytes for r in records)
        label = "produced" if records[0].role == "produced" else f"used: {files} files, {size} B"
        lines.append(f"  {_quote(tail)} -> {_quote(head)} [label={_quote(label)}];")
    for source, collection in sorted(lineage.links):
        lines.append(f'  {_quote("v:" + source)} -> {_quote("v:" + collection)} [style=dashed, label="linked"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A DOT string: quotes and backslashes escaped, a newline as DOT's centred line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
