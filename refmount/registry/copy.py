"""Copying every project, version and alias from one registry to another (e.g. laptop -> cluster)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidInput, NotFound
from .base import Registry, VersionInfo


@dataclass
class CopyReport:
    copied: int = 0
    present: int = 0
    aliases: int = 0
    lineage: int = 0  # lineage records of the versions copied


def copy_registry(source: Registry, target: Registry, *,
                  on_version: Callable[[VersionInfo, bool], None] | None = None) -> CopyReport:  # fmt: skip
    """Copy everything; safe to run again (versions already present with the same digest are kept).

    Conflicts (same project/artifact:vN with other content, or another artifact type) are found
    before anything is written, so a refused copy changes nothing.
    """
    plan = [(v, source.aliases(v.project, v.artifact)) for v in _all_versions(source)]
    for version, _ in plan:
        try:
            there = target.resolve(version.project, version.artifact, version.label)
        except NotFound:  # absent in the target: nothing to conflict with
            continue
        if there.digest != version.digest or there.type != version.type:
            raise InvalidInput(f"{version.qualified_name} exists in the target with other content; nothing copied")
    report = CopyReport()
    for version, _ in plan:
        created = target.copy_version(version, source.manifest(version.manifest_id))
        report.copied += created
        report.present += not created
        if created:  # only then: lineage adds up its counts, so a second copy would double them
            records = source.lineage(versions=[version.qualified_name])
            target.record_lineage(records)
            report.lineage += len(records)
        if on_version is not None:
            on_version(version, created)
    artifacts = {(v.project, v.artifact): aliases for v, aliases in plan}
    for (project, artifact), aliases in artifacts.items():
        for alias, index in aliases.items():
            target.set_alias(project, artifact, alias, index)
            report.aliases += 1
    return report


def _all_versions(registry: Registry) -> list[VersionInfo]:
    return [v for p in registry.projects() for a in registry.artifacts(p) for v in registry.versions(p, a.name)]
