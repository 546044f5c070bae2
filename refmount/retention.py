"""Retention: TTL strings, and ``gc`` across the registry and this node's local manifest index copies.

A version's TTL counts from its creation, as W&B's ``artifact.ttl`` does. An expired or deleted version
leaves every reader at once (``ls``, ``show``, ``download``, the API, the mount within ``--alias-ttl``);
``gc`` then removes its rows and the stored manifests no remaining version uses (see
:mod:`refmount.registry.retention`), and from this node's block cache the blocks of objects no remaining
version references (see :func:`refmount.cachemap.sweep`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidInput
from .registry import Collected, Registry, VersionInfo
from .registry.sql import SCHEMA_VERSION

if TYPE_CHECKING:  # the block cache is imported by gc alone: `refmount ls` and `log` need none of it
    from .cache import BlockCache
    from .cachemap import Removed

NO_TTL = "none"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TTL = re.compile(r"([0-9]{1,6})([smhdw])")  # up to 999999w: any longer overflows a timedelta
TTL_FORMS = "a positive whole number and a unit: s, m, h, d or w (45s, 90m, 12h, 30d, 2w), or 'none'"


def parse_ttl(text: str) -> timedelta | None:
    """``30d`` -> 30 days; ``none`` -> None (no TTL); anything else is InvalidInput."""
    text = text.strip().lower()
    if text == NO_TTL:
        return None
    m = _TTL.fullmatch(text)
    if m is None or int(m.group(1)) == 0:
        raise InvalidInput(f"invalid TTL {text!r}: use {TTL_FORMS}")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def format_span(seconds: float) -> str:
    """``29d23h``, ``5h3m``, ``45s``: the two largest units, for a person to read."""
    seconds = max(int(seconds), 0)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count or (unit == "s" and not parts):
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])  # no space: a piped `ls` row stays one word per cell


def time_left(version: VersionInfo, now: float | None = None) -> str | None:
    """What ``ls`` shows of a version's TTL: the time left, None without a TTL."""
    if version.expires_at is None:
        return None
    return format_span(version.expires_at - (time.time() if now is None else now))


def manifests_in_use(registry: Registry) -> set[str]:
    """The content ids of the manifests that live versions use: what a sweep of cache blocks (or of any
    other per-manifest data) must keep. Versions that expire later are in; deleted and expired ones out."""
    return registry.live_manifest_ids()


def live_versions(registry: Registry) -> list[VersionInfo]:
    """Every version of the registry that has neither expired nor been deleted."""
    return [version for project in registry.projects() for artifact in registry.artifacts(project)
            for version in registry.versions(project, artifact.name)]  # fmt: skip


@dataclass(frozen=True)
class GcReport:
    collected: Collected
    index_copies: list[Path] = field(default_factory=list)  # local manifest index copies removed (or to be)
    dry_run: bool = False
    blocks: Removed | None = None  # cache blocks removed (or to be); None without a cache on this node


def gc(registry: Registry, *, cache: BlockCache | None = None, dry_run: bool = False) -> GcReport:
    """Remove expired and deleted versions' rows and unused manifests from the registry, then this node's
    index copies of manifests no live version uses (a shared registry's, under the cache dir's manifests/)
    and, given its ``cache``, the blocks of objects no live version references.

    Safe to run on several nodes at once: the registry part is one transaction that keeps writers out, and
    two runs take turns; removing a copy or a block that another run removed already is no error."""
    collected = registry.collect(dry_run=dry_run)
    index_dir: Path | None = getattr(registry, "index_dir", None)  # only network registries keep copies
    copies = _unused_index_copies(index_dir, manifests_in_use(registry)) if index_dir else []
    if not dry_run:
        for path in copies:
            path.unlink(missing_ok=True)  # a mount that has it open keeps reading the unlinked file
    blocks = None
    if cache is not None:
        from .cachemap import sweep

        blocks = sweep(cache, live_versions(registry), registry, dry_run=dry_run)
    return GcReport(collected, copies, dry_run, blocks)


def _unused_index_copies(index_dir: Path, in_use: set[str]) -> list[Path]:
    """Copies named ``<content id>.v<schema>.db`` of a manifest not in use, or of another schema (never read
    again). Temporary files of a copy being made are left alone."""
    if not index_dir.is_dir():
        return []
    unused = []
    for path in sorted(index_dir.glob("*.v*.db")):
        content_id, _, schema = path.name.removesuffix(".db").rpartition(".v")
        if content_id not in in_use or schema != str(SCHEMA_VERSION):
            unused.append(path)
    return unused
