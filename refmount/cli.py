"""The ``refmount`` command line.

``refmount MOUNTPOINT`` mounts (the main job); subcommands log, inspect and move artifacts.
Every failure the user can fix is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from . import __version__, config, stores
from .api import Artifact, log_artifact_result
from .errors import InvalidInput, RefmountError
from .manifest import Manifest
from .names import ArtifactRef, validate_alias
from .registry import ENV_VAR, Registry, VersionInfo, open_registry

log = logging.getLogger("refmount")


class _MainGroup(click.Group):
    """A group whose default command is ``mount``: ``refmount /mnt/artifacts`` just mounts."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
        if first is not None and args[first] not in self.commands:
            args = [*args[:first], "mount", *args[first:]]
        return super().parse_args(ctx, args)

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        """Every error a user can fix, usage errors included, is one line and a non-zero exit."""
        try:
            result = super().main(args, prog_name=prog_name or "refmount", standalone_mode=False, **extra)
        except RefmountError as exc:
            click.echo(f"refmount: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"refmount: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("refmount: aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)  # click returns Exit codes when not standalone


@click.group(cls=_MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="refmount")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Mount versioned reference artifacts as read-only directories, and log new versions.

    \b
      refmount /mnt/artifacts                   mount every artifact (see `refmount mount --help`)
      refmount log vision/mnist s3://bucket/datasets/mnist/ --type dataset
      refmount ls vision/mnist                  versions and aliases
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="refmount: %(levelname)s: %(message)s")


def registry_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--registry",
        "registry_url",
        metavar="URL",
        help=f"Registry URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (default: env {ENV_VAR}, the config"
        " files, else under $XDG_DATA_HOME/refmount; see `refmount config`).",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


@contextmanager
def _open(registry_url: str | None) -> Iterator[Registry]:
    registry = open_registry(registry_url)
    try:
        yield registry
    finally:
        registry.close()


# -- log -------------------------------------------------------------------------------------------


@main.command("log")
@click.argument("target", metavar="PROJECT/ARTIFACT")
@click.argument("uris", nargs=-1, required=True, metavar="URI...")
@click.option("--type", "type_", default="dataset", show_default=True, help="Artifact type (dataset, model, ...).")
@click.option(
    "--name",
    "names",
    multiple=True,
    help="Directory (or file name, for one object) to place each URI under, in URI order; none or one per URI.",
)
@click.option("--alias", "aliases", multiple=True, help="Alias to point at the logged version (repeatable).")
@click.option("--description", help="Free-text description of this version.")
@click.option(
    "--metadata",
    "metadata",
    multiple=True,
    metavar="KEY=VALUE",
    help="Metadata item (repeatable); VALUE is parsed as JSON when it can be, else kept as text.",
)
@click.option(
    "--no-checksum",
    is_flag=True,
    help="Record each URI as a location (digest = URI) instead of listing and pinning its objects.",
)
@click.option(
    "--max-objects",
    type=click.IntRange(min=1),
    default=stores.DEFAULT_MAX_OBJECTS,
    show_default=True,
    help="Fail (logging nothing) if a URI expands to more objects than this.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
@json_option
@registry_option
def log_cmd(
    target: str,
    uris: tuple[str, ...],
    type_: str,
    names: tuple[str, ...],
    aliases: tuple[str, ...],
    description: str | None,
    metadata: tuple[str, ...],
    no_checksum: bool,
    max_objects: int,
    quiet: bool,
    as_json: bool,
    registry_url: str | None,
) -> None:
    """Log the objects under URI... as the next version of PROJECT/ARTIFACT.

    A URI is a prefix (s3://bucket/datasets/mnist/, file:///mnt/nfs/mnist) or one object.
    Nothing is created when the content equals the latest version ("unchanged").
    """
    ref = _unversioned(target, "log")
    if names and len(names) != len(uris):
        raise InvalidInput(f"got {len(names)} --name for {len(uris)} URIs: give none or one per URI")
    for alias in aliases:
        validate_alias(alias)
    artifact = Artifact(ref.artifact, type_, description=description, metadata=_parse_metadata(metadata))
    with _scan_progress(enabled=not quiet) as progress:
        for uri, name in zip(uris, names or [None] * len(uris), strict=True):
            artifact.add_reference(uri, name, checksum=not no_checksum, max_objects=max_objects, progress=progress(uri))
    with _open(registry_url) as registry:
        result = log_artifact_result(artifact, ref.project, aliases=aliases, registry=registry)
    version = result.version
    if as_json:
        click.echo(json.dumps({**version.to_json(), "created": result.created}, indent=2))
    elif not quiet:
        state = "logged" if result.created else "unchanged, still"
        click.echo(
            f"{state} {version.qualified_name} ({version.file_count:,} files, {_size(version.total_size)}, "
            f"aliases: {', '.join(version.aliases)})"
        )


def _unversioned(target: str, command: str) -> ArtifactRef:
    if ":" in target:
        raise InvalidInput(f"{command} takes PROJECT/ARTIFACT without a version, got {target!r}")
    return ArtifactRef.parse(target)


def _parse_metadata(items: tuple[str, ...]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--metadata takes KEY=VALUE, got {item!r}")
        try:
            metadata[key] = json.loads(value)
        except ValueError:
            metadata[key] = value
    return metadata


@contextmanager
def _scan_progress(*, enabled: bool) -> Iterator[Callable[[str], Callable[[int], None] | None]]:
    """A live "N objects scanned" line per URI on stderr, only when stderr is a terminal."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda uri: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} objects"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:

        def for_uri(uri: str) -> Callable[[int], None]:
            task = bar.add_task(f"scanning {uri}", total=None)
            last = [0.0]

            def update(count: int) -> None:
                now = time.monotonic()
                if now - last[0] > 0.1:  # rich redraws are not free; 10 updates/s is plenty
                    bar.update(task, completed=count)
                    last[0] = now

            return update

        yield for_uri


# -- inspecting ------------------------------------------------------------------------------------


@main.command("ls")
@click.argument("what", required=False, metavar="[PROJECT[/ARTIFACT]]")
@json_option
@registry_option
def ls_cmd(what: str | None, as_json: bool, registry_url: str | None) -> None:
    """List projects, the artifacts of PROJECT, or the versions and aliases of PROJECT/ARTIFACT."""
    with _open(registry_url) as registry:
        if what is None:
            rows = [{"project": p} for p in registry.projects()]
        elif "/" not in what:
            rows = [
                {
                    "artifact": f"{a.project}/{a.name}",
                    "type": a.type,
                    "versions": a.version_count,
                    "latest": None if a.latest_index is None else f"v{a.latest_index}",
                }
                for a in registry.artifacts(what)
            ]
        else:
            ref = ArtifactRef.parse(what)
            versions = registry.versions(ref.project, ref.artifact)
            rows = [v.to_json() for v in versions] if as_json else [_version_row(v) for v in versions]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _print_table(rows)


def _version_row(v: VersionInfo) -> dict[str, Any]:
    return {
        "version": v.label,
        "digest": v.digest[:12],
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.created_at)),
        "files": v.file_count,
        "bytes": v.total_size,
        "aliases": ", ".join(v.aliases),
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("(none)", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in rows[0]:
        table.add_column(column, justify="right" if isinstance(rows[0][column], int) else "left")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    Console(soft_wrap=True).print(table)


@main.command("show")
@click.argument("target", metavar="PROJECT/ARTIFACT[:VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print the W&B manifest JSON instead of a listing.")
@registry_option
def show_cmd(target: str, as_json: bool, registry_url: str | None) -> None:
    """Show the entries of a version (default: latest): path, size, reference, version, digest."""
    ref = ArtifactRef.parse(target)
    with _open(registry_url) as registry:
        version = registry.resolve(ref.project, ref.artifact, ref.label)
        if as_json:
            _echo_manifest(registry, version)
            return
        click.echo(
            f"{version.qualified_name}  type={version.type}  digest={version.digest}  "
            f"files={version.file_count:,}  bytes={version.total_size:,}  aliases={','.join(version.aliases)}"
        )
        if version.description:
            click.echo(f"description: {version.description}")
        if version.metadata:
            click.echo(f"metadata: {json.dumps(dict(version.metadata), sort_keys=True)}")
        for e in registry.iter_entries(version.manifest_id):  # streamed: versions can have millions of entries
            size = "-" if e.size is None else str(e.size)
            click.echo(f"{size:>12}  {e.path}  {e.ref}  {e.version_id or '-'}  {e.digest}")


def _echo_manifest(registry: Registry, version: VersionInfo) -> None:
    click.echo(json.dumps(registry.manifest(version.manifest_id).to_json(), indent=2))


@main.command("export")
@click.argument("target", metavar="PROJECT/ARTIFACT[:VERSION]")
@registry_option
def export_cmd(target: str, registry_url: str | None) -> None:
    """Print a version's W&B-compatible manifest JSON (``wandb-artifact-manifest`` v1) on stdout."""
    ref = ArtifactRef.parse(target)
    with _open(registry_url) as registry:
        _echo_manifest(registry, registry.resolve(ref.project, ref.artifact, ref.label))


@main.command("import")
@click.argument("manifest_file", type=click.File("r"), metavar="MANIFEST.json")
@click.argument("target", metavar="PROJECT/ARTIFACT")
@click.option("--type", "type_", default="dataset", show_default=True, help="Artifact type.")
@click.option("--alias", "aliases", multiple=True, help="Alias to point at the imported version (repeatable).")
@click.option("--description", help="Free-text description of this version.")
@json_option
@registry_option
def import_cmd(
    manifest_file: Any,
    target: str,
    type_: str,
    aliases: tuple[str, ...],
    description: str | None,
    as_json: bool,
    registry_url: str | None,
) -> None:
    """Log a W&B manifest JSON (e.g. from `refmount export` or W&B) as the next version of PROJECT/ARTIFACT.

    Every path and reference is validated; nothing is read from the stores.
    """
    ref = _unversioned(target, "import")
    artifact = Artifact(ref.artifact, type_, description=description)
    artifact.add_entries(Manifest.loads(manifest_file.read()))
    with _open(registry_url) as registry:
        result = log_artifact_result(artifact, ref.project, aliases=aliases, registry=registry)
    if as_json:
        click.echo(json.dumps({**result.version.to_json(), "created": result.created}, indent=2))
    else:
        click.echo(f"{'imported' if result.created else 'unchanged, still'} {result.version.qualified_name}")


@main.command("alias")
@click.argument("target", metavar="PROJECT/ARTIFACT:VERSION")
@click.argument("alias")
@click.option("--delete", is_flag=True, help="Remove ALIAS instead of pointing it at VERSION.")
@registry_option
def alias_cmd(target: str, alias: str, delete: bool, registry_url: str | None) -> None:
    """Point ALIAS at a version (creating or moving it), or remove it with --delete.

    `latest` and `vN` are managed by refmount and cannot be set.
    """
    validate_alias(alias)
    ref = ArtifactRef.parse(target, default_label=None) if not delete else ArtifactRef.parse(target)
    with _open(registry_url) as registry:
        if delete:
            registry.delete_alias(ref.project, ref.artifact, alias)
            click.echo(f"removed alias {alias} from {ref.project}/{ref.artifact}")
            return
        version = registry.resolve(ref.project, ref.artifact, ref.label)
        registry.set_alias(ref.project, ref.artifact, alias, version.index)
        click.echo(f"{ref.project}/{ref.artifact}:{alias} -> v{version.index}")


# -- configuration and registries -----------------------------------------------------------------


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print {key: {value, source}} as JSON.")
def config_cmd(as_json: bool) -> None:
    """Print the effective settings and where each comes from (default, a file, env or flag).

    Files read, later ones winning: /etc/refmount/config.toml, then $XDG_CONFIG_HOME/refmount/config.toml
    ($REFMOUNT_CONFIG names a single file to use instead). Environment variables override files.
    """
    settings = config.load()
    if as_json:
        click.echo(json.dumps({k: {"value": v, "source": settings.sources[k]} for k, v in settings.values.items()},
                              indent=2))  # fmt: skip
        return
    for key, value in settings.values.items():
        shown = ",".join(value) if isinstance(value, tuple) else value
        click.echo(f"{key:<13} {shown!s:<60} # {settings.sources[key]}")


@main.group("registry")
def registry_group() -> None:
    """Create, migrate and copy registries."""


@registry_group.command("init")
@registry_option
def registry_init_cmd(registry_url: str | None) -> None:
    """Create (or migrate) the registry's schema; done automatically on first use too."""
    with _open(registry_url) as registry:
        click.echo(f"registry {_redact(registry.url)} is ready")


@registry_group.command("copy")
@click.argument("source", metavar="SOURCE_URL")
@click.argument("target", metavar="TARGET_URL")
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary line.")
def registry_copy_cmd(source: str, target: str, quiet: bool) -> None:
    """Copy every project, version (same vN, created time, metadata) and alias from SOURCE to TARGET.

    Typical use: move a laptop's SQLite registry to the cluster's PostgreSQL one. Safe to re-run;
    a version that exists in TARGET with other content stops the copy before anything is written.
    """
    from .registry.copy import copy_registry

    def show(version: VersionInfo, created: bool) -> None:
        if not quiet:
            click.echo(f"{'copied' if created else 'already present'}: {version.qualified_name}", err=True)

    with _open(source) as src, _open(target) as dst:
        report = copy_registry(src, dst, on_version=show)
    click.echo(f"copied {report.copied} versions ({report.present} already present), {report.aliases} aliases")


def _redact(url: str) -> str:
    from .registry.postgres import redact

    return redact(url)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


if __name__ == "__main__":
    main()
