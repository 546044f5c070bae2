"""Shell completion of the names in a registry: projects, artifacts, versions and aliases.

Each function here is a click ``shell_complete=`` callback. The registry is the one the command line
names so far (``--registry``) or the default one. A completion never fails and never creates a
registry: with no registry, or one that cannot answer, it offers nothing (a traceback in the middle
of a command line being typed helps nobody).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import click
from click.shell_completion import CompletionItem

from .names import ArtifactRef
from .registry import Registry, open_registry


def projects_and_artifacts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``PROJECT[/ARTIFACT]``: projects, and the artifacts of those that match."""
    return _offer(ctx, incomplete, lambda r: [*_projects(r, incomplete), *_artifacts(r, incomplete)])


def artifacts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``PROJECT/ARTIFACT``."""
    return _offer(ctx, incomplete, lambda r: _artifacts(r, incomplete))


def versions(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``PROJECT/ARTIFACT[:VERSION]``: artifacts; once one is named whole, its versions and aliases too."""
    name = incomplete.partition(":")[0]

    def names(registry: Registry) -> list[str]:
        found = _artifacts(registry, name)
        return [*found, *(_labels(registry, name) if name in found else [])]

    return _offer(ctx, incomplete, names)


def aliases(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """An alias of the artifact named by the command's TARGET (``latest`` is refmount's to move)."""

    def names(registry: Registry) -> list[str]:
        ref = ArtifactRef.parse(ctx.params.get("target") or "", default_label=None)  # no TARGET: fails, no names
        return [a for a in sorted(registry.aliases(ref.project, ref.artifact)) if a != "latest"]

    return _offer(ctx, incomplete, names)


def _offer(ctx: click.Context, incomplete: str, names: Callable[[Registry], Iterable[str]]) -> list[CompletionItem]:
    try:
        registry = open_registry(ctx.params.get("registry_url"))  # never create=True: see the module's doc
        try:
            return [CompletionItem(name) for name in names(registry) if name.startswith(incomplete)]
        finally:
            registry.close()
    except Exception:  # a missing or broken registry, config or TARGET: nothing to offer, nothing to say
        return []


def _projects(registry: Registry, incomplete: str) -> list[str]:
    return [p for p in registry.projects() if p.startswith(incomplete.partition("/")[0])]


def _artifacts(registry: Registry, incomplete: str) -> list[str]:
    """``project/artifact`` of every project that ``incomplete`` may still name."""
    project, slash, _ = incomplete.partition("/")
    wanted = [project] if slash else _projects(registry, project)
    return [f"{p}/{a.name}" for p in wanted for a in registry.artifacts(p)]


def _labels(registry: Registry, name: str) -> list[str]:
    """``project/artifact:vN`` and ``project/artifact:ALIAS`` of the artifact ``name``."""
    project, _, artifact = name.partition("/")
    labels = [v.label for v in registry.versions(project, artifact)] + sorted(registry.aliases(project, artifact))
    return [f"{name}:{label}" for label in labels]
