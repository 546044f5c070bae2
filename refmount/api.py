"""The Python API: build an artifact from references and log it, like W&B's reference artifacts.

art = refmount.Artifact("mnist", type="dataset")
art.add_reference("s3://bucket/datasets/mnist/")
refmount.log_artifact(art, project="vision", aliases=["best"])   # -> "vision/mnist:v3"
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from . import stores
from .errors import InvalidInput
from .jobs import Job, current_run, run_job
from .manifest import Entry, Manifest, validate_reference_name
from .names import ArtifactRef, parse_collection, validate_alias, validate_name
from .registry import LineageRecord, LogResult, Registry, VersionInfo, open_registry
from .selection import KeyFilter, OnInvalid, Report

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]  # called with the number of objects listed so far
ReportFn = Callable[[Report], None]  # called with what a reference's filter left out


class Artifact:
    """A set of references to be logged as one version (nothing is stored until it is logged)."""

    def __init__(
        self,
        name: str,
        type: str = "dataset",
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        ttl: timedelta | None = None,
    ):
        self.name = validate_name("artifact", name)
        self.ttl = ttl  # as W&B's artifact.ttl: the logged version expires this long after its creation
        self.type = validate_name("type", type)
        self.description = description
        self.metadata = _json_safe(dict(metadata or {}))
        self._entries: dict[str, Entry] = {}

    def add_reference(
        self,
        uri: str,
        name: str | None = None,
        *,
        checksum: bool = True,
        max_objects: int = stores.DEFAULT_MAX_OBJECTS,
        exclude: Iterable[str] | str = (),
        on_invalid: OnInvalid = "skip",
        progress: ProgressFn | None = None,
        report: ReportFn | None = None,
    ) -> list[Entry]:
        """Expand ``uri`` (a prefix or one object) into entries now, as W&B does.

        ``name`` places the entries under that directory (or names a single object). ``exclude``: globs
        of artifact paths to leave out (see :class:`~refmount.selection.KeyFilter`); ``max_objects``
        counts the objects listed, excluded ones too. An object whose key cannot be an artifact path is
        skipped (``on_invalid="skip"``) or refused with :class:`~refmount.errors.InvalidKey` (``"error"``).
        ``report`` is called with what was left out; without it, skipped keys are named in one logged
        warning. Nothing is added if the scan fails, leaves nothing, or any path collides with one
        already added.
        """
        ref = stores.parse(uri)
        if name is not None:  # checked here: the stores would place entries under whatever it is
            name = validate_reference_name(name)
        if max_objects < 1:
            raise InvalidInput(f"max_objects must be positive, got {max_objects}")
        keys = KeyFilter(exclude, on_invalid)
        listed = stores.store_for(ref).scan(ref, name=name, checksum=checksum, max_objects=max_objects)
        left_out = Report()
        found = list(keys.apply(_counted(listed, progress), ref.raw, left_out))
        if not found:  # the stores refuse an empty listing; so is one that the filter emptied
            skipped = left_out.skipped_warning()
            raise InvalidInput(f"nothing to add from {ref.raw}: {left_out.excluded:,} excluded"
                               + (f", {skipped}" if skipped else ""))  # fmt: skip
        self._add(found)
        if report is not None:
            report(left_out)
        elif warning := left_out.skipped_warning("on_invalid='error' to refuse"):
            log.warning("%s: %s", ref.raw, warning)
        return found

    def add_entries(self, entries: Iterable[Entry]) -> None:
        """Add ready-made entries (e.g. from an imported manifest), vetting every reference as its
        store would before serving it, so that nothing is logged that could only fail on reading."""
        entries = list(entries)
        for entry in entries:
            try:
                stores.check(entry.ref)
            except InvalidInput as exc:
                raise InvalidInput(f"manifest entry {entry.path!r}: {exc}") from None
        self._add(entries)

    def _add(self, entries: list[Entry]) -> None:
        clashes = [e for e in entries if e.path in self._entries]
        if clashes:
            first = clashes[0]
            raise InvalidInput(
                f"duplicate artifact path {first.path!r}: from {first.ref} and {self._entries[first.path].ref}"
            )
        Manifest([*self._entries.values(), *entries])  # validates paths and file/directory clashes
        self._entries.update((e.path, e) for e in entries)

    @property
    def manifest(self) -> Manifest:
        return Manifest(self._entries.values())


def log_artifact(
    artifact: Artifact,
    project: str,
    *,
    aliases: Iterable[str] = (),
    run: str | None = None,
    registry: Registry | str | None = None,
) -> str:
    """Log ``artifact`` as the next version of ``project/name`` and return ``project/name:vN``. ``run``: the
    run that produced it, for lineage (default: $REFMOUNT_RUN, else $WANDB_RUN_ID, else none)."""
    return log_artifact_result(artifact, project, aliases=aliases, run=run, registry=registry).version.qualified_name


def log_artifact_result(
    artifact: Artifact,
    project: str,
    *,
    aliases: Iterable[str] = (),
    run: str | None = None,
    registry: Registry | str | None = None,
) -> LogResult:
    """Like :func:`log_artifact`, but says whether a new version was created."""
    validate_name("project", project)
    producer = run_of(run)
    ttl = artifact.ttl.total_seconds() if artifact.ttl is not None else None
    if ttl is not None and ttl <= 0:
        raise InvalidInput(f"artifact {artifact.name!r}: a TTL must be positive, got {artifact.ttl}")
    aliases = [validate_alias(a) for a in dict.fromkeys(aliases)]
    manifest = artifact.manifest
    if len(manifest) == 0:
        raise InvalidInput(f"artifact {artifact.name!r} has no entries; add a reference first")
    with _registry(registry, create=True) as reg:
        return reg.log_version(
            project,
            artifact.name,
            manifest,
            type=artifact.type,
            description=artifact.description,
            metadata=artifact.metadata,
            aliases=aliases,
            ttl=ttl,
            run=producer,
        )


def use_artifact(ref: str, *, run: str | None = None, registry: Registry | str | None = None) -> VersionInfo:
    """Resolve ``project/name[:version-or-alias]`` to a version (its manifest id, digest, aliases...), and record
    that ``run`` (default: $REFMOUNT_RUN, else $WANDB_RUN_ID) uses it; without a run nothing is recorded, as
    the mount records the reads themselves."""
    parsed = ArtifactRef.parse(ref)
    user = run_of(run)
    with _registry(registry) as reg:
        version = reg.resolve(parsed.project, parsed.artifact, parsed.label)
        if user is not None:
            now = time.time()
            reg.record_lineage([LineageRecord(version.qualified_name, "used", user, now, now)])
        return version


def run_of(run: str | None) -> Job | None:
    """The job named ``run`` (checked), or by default this process's run from the environment (None if none)."""
    if run is None:
        return current_run()
    if not run.strip() or any(c.isspace() or not c.isprintable() for c in run):
        raise InvalidInput(f"invalid run id {run!r}: expected printable text without spaces")
    return run_job(run)


def link_artifact(
    source: str, target_path: str, *, aliases: Iterable[str] = (), registry: Registry | str | None = None
) -> str:
    """Link ``project/name[:version-or-alias]`` into the collection ``wandb-registry-<registry>/<collection>``
    (as W&B's ``run.link_artifact``, without the org part) and return the collection's ``.../<collection>:vN``."""
    parsed = ArtifactRef.parse(source)
    project, collection = parse_collection(target_path)
    with _registry(registry) as reg:
        result = reg.link_version(parsed.project, parsed.artifact, parsed.label, project, collection,
                                  aliases=list(aliases))  # fmt: skip
    return result.version.qualified_name


def unlink_artifact(ref: str, *, registry: Registry | str | None = None) -> str:
    """Remove the linked version ``wandb-registry-<registry>/<collection>:<version-or-alias>`` from its
    collection (as W&B's ``artifact.unlink()``); returns the version removed."""
    parsed = ArtifactRef.parse(ref, default_label=None)
    with _registry(registry) as reg:
        return reg.unlink_version(parsed.project, parsed.artifact, parsed.label).version


class _registry:
    """Use a given Registry as-is, or open (and later close) one from a URL or the default;
    ``create`` it there only for a caller that writes."""

    def __init__(self, registry: Registry | str | None, *, create: bool = False):
        self._given = registry if isinstance(registry, Registry) else None
        self._url = registry if isinstance(registry, str) else None
        self._create = create

    def __enter__(self) -> Registry:
        self._reg = self._given or open_registry(self._url, create=self._create)
        return self._reg

    def __exit__(self, *exc: object) -> None:
        if self._given is None:
            self._reg.close()


def _counted(entries: Iterable[Entry], progress: ProgressFn | None) -> Iterator[Entry]:
    """``entries`` as they are listed, telling ``progress`` how many so far (before any is left out)."""
    if progress is None:
        yield from entries
        return
    for count, entry in enumerate(entries, 1):
        progress(count)
        yield entry


def _json_safe(metadata: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"metadata must be JSON-serializable: {exc}") from exc
    return metadata
