"""Project, artifact and alias names, and ``project/artifact:version`` references."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInput

LATEST = "latest"
# W&B's registry projects (``wandb-registry-<registry>``, the org part left out) hold collections of linked
# versions: versions get there by `refmount link`, never by logging.
REGISTRY_PREFIX = "wandb-registry-"
# Names become directory names on the mount and must be unambiguous in `project/name:alias`.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"v(0|[1-9][0-9]{0,9})")


def validate_name(kind: str, name: str) -> str:
    if name_problem(name) is not None:
        raise InvalidInput(
            f"invalid {kind} name {name!r}: use 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit)"
        )
    return name


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a project, artifact or alias name (None: it can). The mount shows only
    names that pass, whatever a registry holds."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return "is not 1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit"
    return None


def validate_alias(alias: str) -> str:
    """User-settable aliases: safe names that are not ``latest`` or ``v<N>`` (managed by refmount)."""
    validate_name("alias", alias)
    if alias == LATEST or version_index(alias) is not None:
        raise InvalidInput(f"alias {alias!r} is reserved: 'latest' and 'v<N>' are managed by refmount")
    return alias


def is_registry_project(project: str) -> bool:
    return project.startswith(REGISTRY_PREFIX) and len(project) > len(REGISTRY_PREFIX)


def parse_collection(text: str) -> tuple[str, str]:
    """``wandb-registry-<registry>/<collection>`` (a link target: no version) -> (project, collection)."""
    project, slash, collection = text.partition("/")
    if not slash or ":" in text:
        raise InvalidInput(f"a link target is a collection, {REGISTRY_PREFIX}REGISTRY/COLLECTION without a version,"
                           f" got {text!r}")  # fmt: skip
    validate_collection(project, collection)
    return project, collection


def validate_collection(project: str, collection: str) -> str:
    """A link target: ``wandb-registry-<registry>/<collection>``, each part a valid name; returns its path."""
    validate_name("project", project)
    validate_name("collection", collection)
    if not is_registry_project(project):
        raise InvalidInput(f"cannot link into {project}/{collection}: a link target is a registry collection, "
                           f"{REGISTRY_PREFIX}<registry>/<collection> (W&B's target path without the org)")  # fmt: skip
    return f"{project}/{collection}"


def version_index(label: str) -> int | None:
    """``v12`` -> 12; anything else -> None."""
    m = _VERSION.fullmatch(label)
    return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """``project/artifact[:version-or-alias]``; the label defaults to ``latest``."""

    project: str
    artifact: str
    label: str = LATEST

    def __str__(self) -> str:
        return f"{self.project}/{self.artifact}:{self.label}"

    @classmethod
    def parse(cls, text: str, *, default_label: str | None = LATEST) -> ArtifactRef:
        path, sep, label = text.partition(":")
        project, slash, artifact = path.partition("/")
        if not slash:
            raise InvalidInput(f"expected PROJECT/ARTIFACT[:VERSION], got {text!r}")
        if sep and not label:
            raise InvalidInput(f"empty version or alias in {text!r}")
        if not sep and default_label is None:
            raise InvalidInput(f"expected PROJECT/ARTIFACT:VERSION (e.g. {path}:v0 or {path}:latest), got {text!r}")
        label = label or default_label or LATEST
        if version_index(label) is None:
            validate_name("alias", label)
        return cls(validate_name("project", project), validate_name("artifact", artifact), label)
