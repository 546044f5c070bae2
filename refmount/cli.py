"""The ``refmount`` command line.

``refmount MOUNTPOINT`` mounts (the main job); subcommands log, inspect and move artifacts.
Every failure the user can fix is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import trio

from . import __version__, completion, config, lineage, retention, stores
from .api import Artifact, log_artifact_result, run_of
from .errors import InvalidInput, RefmountError
from .manifest import QUOTED_REF, UNPINNED_REASON, Manifest, validate_reference_name
from .names import ArtifactRef, parse_collection, validate_alias, version_index
from .registry import ENV_VAR, Deletion, LineageRecord, Registry, VersionInfo, open_registry
from .selection import ON_INVALID, OnInvalid, Report

log = logging.getLogger("refmount")

INTERRUPTED = 130  # the shell's code for a command ended by SIGINT (128 + 2)
FAILED = 4  # download/verify: some entries failed (a StoreError's code too)
UNPINNED = 5  # verify --strict: nothing failed, but some entries have nothing to pin their bytes by
NAMED = 10  # entries named in a warning about many; the rest are counted


class _MainGroup(click.Group):
    """A group whose default command is ``mount``: ``refmount /mnt/artifacts`` just mounts."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._default_to_mount(ctx, args))

    def _default_to_mount(self, ctx: click.Context, args: list[str]) -> list[str]:
        """``[OPTIONS] MOUNTPOINT ...`` -> ``[GROUP OPTIONS] mount [MOUNT OPTIONS] MOUNTPOINT ...``.

        The first argument is a mountpoint when it is no command and has a slash or names an existing
        path; any other word is a mistyped command, left for click to report ("No such command 'lgo'.
        Did you mean 'log'?"). The options in front of it are split into the group's own (-v, --help)
        and the rest, which go to ``mount``.
        """
        mount = self.commands["mount"]
        owners = _option_owners(ctx, self, mount)
        options, end = _leading_options(args, {name: takes for name, (_, takes) in owners.items()})
        first = end + 1 if end < len(args) and args[end] == "--" else end
        word = args[first] if first < len(args) else None
        if word in self.commands:
            return args
        owner = {name: command for name, (command, _) in owners.items()}
        own = [token for name, tokens in options if owner.get(name) is self for token in tokens]
        theirs = [token for name, tokens in options if owner.get(name) is not self for token in tokens]
        if word is None:  # `refmount -f`: mount says MOUNTPOINT is missing; `refmount -x`: the group says what -x is
            return [*own, "mount", *theirs] if any(owner.get(name) is mount for name, _ in options) else args
        if "/" not in word and not Path(word).exists():
            return [*own, *args[end:]]  # a mistyped command: the options that mount would take are beside the point
        return [*own, "mount", *theirs, *args[end:]]

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        """Every error a user can fix, usage errors included, is one line and a non-zero exit."""
        try:
            result = super().main(args, prog_name=prog_name or "refmount", standalone_mode=False, **extra)
        except RefmountError as exc:
            click.echo(f"refmount: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare `refmount` or `refmount registry`
            exc.show()  # the help, as click prints it, with click's exit code
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"refmount: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort as exc:  # click's wrapper of a bare KeyboardInterrupt (or EOF at a prompt)
            click.echo("refmount: aborted", err=True)
            sys.exit(INTERRUPTED if isinstance(exc.__cause__, KeyboardInterrupt) else 1)
        except BaseExceptionGroup as group:  # trio wraps a Ctrl-C that arrives inside a nursery
            if group.subgroup(KeyboardInterrupt) is None:
                raise
            click.echo("\nrefmount: aborted", err=True)  # the newline ends the terminal's ^C, as click's does
            sys.exit(INTERRUPTED)
        sys.exit(result if isinstance(result, int) else 0)  # click returns Exit codes when not standalone


def _option_owners(ctx: click.Context, *commands: click.Command) -> dict[str, tuple[click.Command, int]]:
    """Each option name of ``commands`` -> (the first command that has it, how many arguments it takes)."""
    owners: dict[str, tuple[click.Command, int]] = {}
    for command in commands:
        for param in command.get_params(ctx):
            if isinstance(param, click.Option):
                takes = 0 if param.is_flag or param.count else param.nargs
                for name in (*param.opts, *param.secondary_opts):
                    owners.setdefault(name, (command, takes))
    return owners


def _leading_options(args: list[str], takes: dict[str, int]) -> tuple[list[tuple[str, list[str]]], int]:
    """The options in front of the first argument (or ``--``), each as (name, [option, its values...]),
    and that argument's index. ``takes``: how many arguments each option takes (unknown ones: none)."""
    found: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "--"):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            pieces = [(arg.partition("=")[0], arg, "=" in arg)]
        else:  # short options cluster (-fv); one that takes a value takes the rest of the cluster (-oro)
            pieces = []
            for j, char in enumerate(arg[1:], start=2):
                name = "-" + char
                if takes.get(name, 0) and arg[j:]:
                    pieces.append((name, name + arg[j:], True))
                    break
                pieces.append((name, name, False))
        for name, token, attached in pieces:
            count = max(takes.get(name, 0) - attached, 0)  # `--opt=X` and `-oX` carry their first value
            found.append((name, [token, *args[i : i + count]]))
            i += count
    return found, i


@click.group(cls=_MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="refmount")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Mount versioned reference artifacts as read-only directories, and log new versions.

    \b
      refmount /mnt/artifacts                   mount every artifact (see `refmount mount --help`)
      refmount -f --cache-size 50G /mnt/a       with mount's options, before or after MOUNTPOINT
      refmount log vision/mnist s3://bucket/datasets/mnist/ --type dataset
      refmount ls vision/mnist                  versions and aliases
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="refmount: %(levelname)s: %(message)s")
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_urllib3)


def _quiet_urllib3(record: logging.LogRecord) -> bool:
    """Drop urllib3's and the stores' warnings (one per retry): the one-line error after the last retry says it all.

    A filter on the terminal's handler rather than a level on urllib3's logger, so that a mount
    daemon's log file, which replaces that handler, still records the retries.
    """
    return record.levelno >= logging.ERROR or not record.name.startswith(("urllib3.", "refmount.stores.retries"))


def registry_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--registry",
        "registry_url",
        metavar="URL",
        help=f"Registry URL: sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH or postgresql://USER@HOST:PORT/DB"
        f" (default: env {ENV_VAR}, the config"
        " files, else under $XDG_DATA_HOME/refmount; see `refmount config`).",
    )(fn)


def artifact_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("target", metavar="PROJECT/ARTIFACT", shell_complete=completion.artifacts)(fn)


def version_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("target", metavar="PROJECT/ARTIFACT[:VERSION]", shell_complete=completion.versions)(fn)


def path_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--path", "prefix", metavar="PATH",
                        help="Only the files at or under PATH in the version (a directory such as train/, "
                        "or one file); a PATH that matches no file is an error.")(fn)  # fmt: skip


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


def version_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What a new version carries, the same for `log` and `import`: --type, --alias, --description, --metadata,
    --run."""
    options = [
        click.option("--type", "type_", default="dataset", show_default=True,
                     help="Artifact type (dataset, model, ...)."),
        click.option("--alias", "aliases", multiple=True, help="Alias to point at the new version (repeatable)."),
        click.option("--description", help="Free-text description of this version."),
        click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE",
                     help="Metadata item (repeatable); VALUE is parsed as JSON when it can be, else kept as text."),
        click.option("--run", metavar="ID",
                     help="The run that produced this version, recorded in its lineage (`refmount lineage`; "
                     "default: $REFMOUNT_RUN, else $WANDB_RUN_ID, else none)."),
    ]  # fmt: skip
    for option in reversed(options):  # decorators apply bottom-up: --help lists them in this order
        fn = option(fn)
    return fn


@contextmanager
def _open(registry_url: str | None, *, create: bool = False) -> Iterator[Registry]:
    """``create`` only for commands that write: a read on a mistyped URL must not leave a registry behind."""
    registry = open_registry(registry_url, create=create)
    try:
        yield registry
    finally:
        registry.close()


# -- log -------------------------------------------------------------------------------------------


@main.command("log")
@artifact_argument
@click.argument("uris", nargs=-1, required=True, metavar="URI...")
@version_options
@click.option(
    "--name",
    "names",
    multiple=True,
    help="Directory (or file name, for one object) to place each URI under, in URI order; none or one per URI."
    " A relative path: no leading '/', no '.', '..' or empty parts.",
)
@click.option(
    "--no-checksum",
    is_flag=True,
    help="Record each URI as W&B's checksum=False does: a location (digest = URI; for file://, one entry per "
    "file whose digest is the MD5 of its path) instead of pinned objects. Such entries are never served.",
)
@click.option(
    "--max-objects",
    type=click.IntRange(min=1),
    default=stores.DEFAULT_MAX_OBJECTS,
    show_default=True,
    help="Fail (logging nothing) if a URI expands to more objects than this.",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out the entries whose path in the artifact (as `show` lists it, under --name if given) matches"
    " GLOB (repeatable): fnmatch's * ? [...], where * matches '/' too: '*.tmp' is every .tmp file,"
    " 'cache/*' everything under cache/. --max-objects counts excluded objects too.",
)
@click.option(
    "--on-invalid",
    type=click.Choice(ON_INVALID),
    default="skip",
    show_default=True,
    help="What to do with an object whose key cannot be a file path (a control character, a '.' or '..' part,"
    " a part over 255 bytes): skip it, naming the first few in one warning (the default: one odd key in a"
    " big prefix does not stop a log), or error: refuse the log and create nothing.",
)
@click.option(
    "--ttl",
    "ttl_text",
    metavar="TTL",
    help=f"Time to live of the new version, from now: {retention.TTL_FORMS}. Once it passes, the version "
    "leaves ls, show, download and the mount, and `refmount gc` removes it. Change it with `refmount ttl`.",
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
    run: str | None,
    no_checksum: bool,
    max_objects: int,
    excludes: tuple[str, ...],
    on_invalid: OnInvalid,
    ttl_text: str | None,
    quiet: bool,
    as_json: bool,
    registry_url: str | None,
) -> None:
    """Log the objects under URI... as the next version of PROJECT/ARTIFACT.

    A URI is a prefix (s3://bucket/datasets/mnist/, file:///mnt/nfs/mnist) or one object.
    Nothing is created when the content equals the latest version ("unchanged").
    """
    ref = _unversioned(target, "log")
    _check_run(run)
    if names and len(names) != len(uris):
        raise InvalidInput(f"got {len(names)} --name for {len(uris)} URIs: give none or one per URI")
    names = tuple(validate_reference_name(name, "--name") for name in names)  # before any scan, naming the option
    for alias in aliases:
        validate_alias(alias)
    ttl = retention.parse_ttl(ttl_text) if ttl_text is not None else None
    artifact = Artifact(ref.artifact, type_, description=description, metadata=_parse_metadata(metadata), ttl=ttl)
    left_out = Report()
    with _scan_progress(enabled=not quiet) as progress:
        for uri, name in zip(uris, names or [None] * len(uris), strict=True):
            artifact.add_reference(uri, name, checksum=not no_checksum, max_objects=max_objects, exclude=excludes,
                                   on_invalid=on_invalid, progress=progress(uri), report=left_out.add)  # fmt: skip
    if warning := left_out.skipped_warning("--on-invalid error to refuse"):
        click.echo(f"refmount: warning: {warning}", err=True)
    _warn_quoted([entry.path for entry in artifact.manifest if entry.ref_quoted])
    with _open(registry_url, create=True) as registry:
        result = log_artifact_result(artifact, ref.project, aliases=aliases, run=run, registry=registry)
    version = result.version
    if as_json:
        counts = {"excluded": left_out.excluded, "skipped": len(left_out.skipped)}
        click.echo(json.dumps({**version.to_json(), "created": result.created, **counts}, indent=2))
    elif not quiet:
        state = "logged" if result.created else "unchanged, still"
        left = "".join(f"; {n:,} {what}" for n, what in ((left_out.excluded, "excluded"),
                                                           (len(left_out.skipped), "skipped")) if n)  # fmt: skip
        click.echo(
            f"{state} {version.qualified_name} ({_count(version.file_count, 'file')}, {_size(version.total_size)}, "
            f"aliases: {', '.join(version.aliases)}{left}){_expiry(version)}"
        )
    if ttl is not None and not result.created:
        click.echo(f"refmount: note: --ttl applies to new versions only; {version.qualified_name} keeps its TTL "
                   f"(change it with `refmount ttl {version.qualified_name} {ttl_text}`)", err=True)  # fmt: skip


def _check_run(run: str | None) -> None:
    """A bad --run is refused before any scan (the API checks it again when it logs)."""
    if run is not None:
        run_of(run)


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
@click.argument(
    "what", required=False, metavar="[PROJECT[/ARTIFACT]]", shell_complete=completion.projects_and_artifacts
)
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
            if ":" in what:  # ls lists an artifact's versions: a version's files are `show`'s
                raise InvalidInput(f"ls takes PROJECT or PROJECT/ARTIFACT, not a version; to see the files of "
                                   f"{what}, run `refmount show {what}`")  # fmt: skip
            ref = ArtifactRef.parse(what)
            versions = registry.versions(ref.project, ref.artifact)
            linked_to = registry.links_to(ref.project, ref.artifact)
            if as_json:
                rows = [{**v.to_json(), "linked_to": list(linked_to.get(v.index, ()))} for v in versions]
            else:
                rows = [_version_row(v) for v in versions]
                _add_link_columns(rows, versions, linked_to)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _print_table(rows)


def _version_row(v: VersionInfo) -> dict[str, Any]:
    return {
        "version": v.label,
        "digest": v.digest[:12],
        "created": datetime.fromtimestamp(v.created_at).astimezone(),  # piped: ISO 8601 with its UTC offset
        "files": v.file_count,
        "bytes": v.total_size,
        "aliases": v.aliases,
        "expires": None if v.expires_at is None else datetime.fromtimestamp(v.expires_at).astimezone(),
        "ttl_left": retention.time_left(v),
    }


def _add_link_columns(rows: list[dict[str, Any]], versions: list[VersionInfo],
                      linked_to: dict[int, tuple[str, ...]]) -> None:  # fmt: skip
    """The columns that say what a collection version links, and where a version is linked; only for an
    artifact that has such versions (the table of any other stays as it was)."""
    if any(v.linked_from for v in versions):
        for row, v in zip(rows, versions, strict=True):
            row["linked_from"] = v.linked_from
    if any(v.index in linked_to for v in versions):  # a link may outlive its deleted source
        for row, v in zip(rows, versions, strict=True):
            row["linked_to"] = linked_to.get(v.index, ())


# -- tables: aligned on a terminal; piped, one tab-separated line per row, never wrapped or cut -----


def _piped() -> bool:
    return not sys.stdout.isatty()


def _print_table(rows: list[dict[str, Any]]) -> None:
    """Rows of one shape (the first row's types decide each column's alignment), under a header row."""
    if not rows:
        click.echo("(none)", err=True)
        return
    if _piped():
        _print_lines(list(rows[0]), (row.values() for row in rows))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    for column, value in rows[0].items():  # fold, never cut, what is wider than the terminal
        table.add_column(column, justify="right" if isinstance(value, int) else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text(_cell(v)) for v in row.values()))  # Text: a name is never read as rich markup
    Console(soft_wrap=True).print(table)


def _print_lines(header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """A header row and one line per row, streamed: tab-separated when piped; on a terminal, two spaces
    between cells and the first column right-aligned (too many rows to measure for a table)."""
    piped = _piped()
    for cells in itertools.chain([header], rows):
        text = [_cell(v, piped=piped) for v in cells]
        click.echo("\t".join(text) if piped else "  ".join([f"{text[0]:>12}", *text[1:]]))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _cell(value: Any, *, piped: bool = False) -> str:
    """How a table shows a value. Piped, nothing in a cell can end a row or a cell (control characters
    are escaped, as in a Python string) and, where it can be helped, nothing has a space in it either,
    so that ``awk '{print $2}'`` finds the column it expects: numbers without separators, lists joined
    with commas, times as ISO 8601."""
    if value is None or (isinstance(value, str | tuple | list) and not value):
        return "-"
    if isinstance(value, int):
        return str(value) if piped else f"{value:,}"
    if isinstance(value, tuple | list):
        return ("," if piped else ", ").join(_cell(v, piped=piped) for v in value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds") if piped else value.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text) if piped else text


def _count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 file``, ``2 files``, ``1,000 entries`` (``plural`` when adding an s will not do)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


@main.command("show")
@version_argument
@click.option("--json", "as_json", is_flag=True, help="Print the W&B manifest JSON instead of a listing.")
@path_option
@registry_option
def show_cmd(target: str, as_json: bool, prefix: str | None, registry_url: str | None) -> None:
    """Show the entries of a version (default: latest): path, size, reference, version, digest."""
    ref = ArtifactRef.parse(target)
    with _open(registry_url) as registry:
        version = registry.resolve(ref.project, ref.artifact, ref.label)
        if as_json and prefix:
            raise InvalidInput("--json prints the whole manifest: give no --path with it")
        entries = registry.entries_under(version, prefix)  # streamed: versions can have millions of entries
        first = next(entries, None)  # a PATH that matches nothing fails here, before anything is printed
        if as_json:
            _echo_manifest(registry, version)
            return
        click.echo(
            f"{version.qualified_name}  type={version.type}  digest={version.digest}  "
            f"files={version.file_count:,}  bytes={version.total_size:,}  aliases={','.join(version.aliases)}"
        )
        if version.linked_from:
            click.echo(f"linked from {version.linked_from}")
        if version.description:
            click.echo(f"description: {version.description}")
        if version.metadata:
            click.echo(f"metadata: {json.dumps(dict(version.metadata), sort_keys=True)}")
        shown = itertools.chain([first] if first is not None else [], entries)
        _print_lines(["size", "path", "reference", "version", "digest"],
                     ((e.size, e.path, e.ref, e.version_id, e.digest) for e in shown))  # fmt: skip


@main.command("diff")
@click.argument("old", metavar="PROJECT/ARTIFACT[:VERSION]", shell_complete=completion.versions)
@click.argument("new", metavar="PROJECT/ARTIFACT[:VERSION]", shell_complete=completion.versions)
@click.option("--json", "as_json", is_flag=True,
              help="Print {from, to, added, removed, changed, unchanged} as JSON; entries as in the W&B manifest, "
              "with their path.")  # fmt: skip
@registry_option
def diff_cmd(old: str, new: str, as_json: bool, registry_url: str | None) -> None:
    """Show the entries added, removed and changed from one version to another (of any artifacts).

    Versions are named as `show` takes them (vN, an alias, default latest). An entry changed when its
    path is in both but its digest, reference, object version, content MD5 or size differs. Exit status 0
    whether or not the versions differ.
    """
    from .diff import diff

    with _open(registry_url) as registry:
        a, b = _resolve(registry, old), _resolve(registry, new)
        found = diff(registry.iter_entries(a.manifest_id), registry.iter_entries(b.manifest_id))
    if as_json:
        click.echo(json.dumps({"from": a.qualified_name, "to": b.qualified_name, **found.to_json()}, indent=2))
        return
    click.echo(f"{a.qualified_name} -> {b.qualified_name}: {len(found.added):,} added, {len(found.removed):,} "
               f"removed, {len(found.changed):,} changed, {found.unchanged:,} unchanged")  # fmt: skip
    rows = itertools.chain(
        (("added", e.path, None, e.size, None) for e in found.added),
        (("removed", e.path, e.size, None, None) for e in found.removed),
        (("changed", c.new.path, c.old.size, c.new.size, c.fields) for c in found.changed),
    )
    _print_lines(["change", "path", "old-size", "new-size", "differs"],
                 sorted(rows, key=lambda row: row[1]))  # fmt: skip


def _echo_manifest(registry: Registry, version: VersionInfo) -> None:
    click.echo(json.dumps(registry.manifest(version.manifest_id).to_json(), indent=2))


@main.command("export")
@version_argument
@registry_option
def export_cmd(target: str, registry_url: str | None) -> None:
    """Print a version's W&B-compatible manifest JSON (``wandb-artifact-manifest`` v1) on stdout."""
    ref = ArtifactRef.parse(target)
    with _open(registry_url) as registry:
        _echo_manifest(registry, registry.resolve(ref.project, ref.artifact, ref.label))


@main.command("import")
@click.argument("manifest_file", type=click.File("r"), metavar="MANIFEST.json")
@artifact_argument
@version_options
@json_option
@registry_option
def import_cmd(
    manifest_file: Any,
    target: str,
    type_: str,
    aliases: tuple[str, ...],
    description: str | None,
    metadata: tuple[str, ...],
    run: str | None,
    as_json: bool,
    registry_url: str | None,
) -> None:
    """Log a W&B manifest JSON (e.g. from `refmount export` or W&B) as the next version of PROJECT/ARTIFACT.

    Every path and reference is validated; nothing is read from the stores. Entries with nothing to pin
    their bytes by (no ETag, object version or content hash: W&B's entries of http(s) files served
    without an ETag, checksum=False entries) are kept, since they count in the artifact digest, but
    never served; a warning on stderr names them.
    """
    ref = _unversioned(target, "import")
    _check_run(run)
    artifact = Artifact(ref.artifact, type_, description=description, metadata=_parse_metadata(metadata))
    manifest = Manifest.loads(manifest_file.read())
    artifact.add_entries(manifest)
    with _open(registry_url, create=True) as registry:
        result = log_artifact_result(artifact, ref.project, aliases=aliases, run=run, registry=registry)
    unpinned = [e.path for e in manifest if not e.pinned]
    if as_json:
        click.echo(json.dumps({**result.version.to_json(), "created": result.created, "unpinned": len(unpinned)},
                              indent=2))  # fmt: skip
    else:
        click.echo(f"{'imported' if result.created else 'unchanged, still'} {result.version.qualified_name}")
    _warn_unpinned(unpinned, "will not be served")


@main.command("alias")
@click.argument("target", metavar="PROJECT/ARTIFACT:VERSION", shell_complete=completion.versions)
@click.argument("alias", shell_complete=completion.aliases)
@click.option("--delete", is_flag=True, help="Remove ALIAS instead of pointing it at VERSION.")
@registry_option
def alias_cmd(target: str, alias: str, delete: bool, registry_url: str | None) -> None:
    """Point ALIAS at a version (creating or moving it), or remove it with --delete.

    With --delete, PROJECT/ARTIFACT:VERSION removes ALIAS only while it points at VERSION;
    PROJECT/ARTIFACT alone removes it wherever it points. `latest` and `vN` are managed by
    refmount and cannot be set.
    """
    validate_alias(alias)
    ref = ArtifactRef.parse(target, default_label=None) if not delete else ArtifactRef.parse(target)
    with _open(registry_url) as registry:
        if delete:
            # With a version: someone may have moved the alias since; it is not removed from under them.
            only_at = registry.resolve(ref.project, ref.artifact, ref.label).index if ":" in target else None
            registry.delete_alias(ref.project, ref.artifact, alias, only_at=only_at)
            click.echo(f"removed alias {alias} from {ref.project}/{ref.artifact}")
            return
        version = registry.resolve(ref.project, ref.artifact, ref.label)
        registry.set_alias(ref.project, ref.artifact, alias, version.index)
        click.echo(f"{ref.project}/{ref.artifact}:{alias} -> v{version.index}")


# -- registry collections --------------------------------------------------------------------------


@main.command("link")
@click.argument("source", metavar="PROJECT/ARTIFACT[:VERSION]", shell_complete=completion.versions)
@click.argument("target", metavar="COLLECTION", shell_complete=completion.artifacts)
@click.option("--alias", "aliases", multiple=True,
              help="Alias to point at the collection's version of SOURCE (repeatable), e.g. production.")  # fmt: skip
@registry_option
def link_cmd(source: str, target: str, aliases: tuple[str, ...], registry_url: str | None) -> None:
    """Link a version (default: latest) into COLLECTION: wandb-registry-REGISTRY/NAME, W&B's target path
    without the org part.

    The collection gets its own v0, v1, ... and aliases, and is read like any artifact (ls, show,
    download, the API, the mount: /mnt/artifacts/wandb-registry-REGISTRY/NAME/production/...); its
    versions share the source's stored manifest (nothing is copied) and keep working when the source is
    deleted. A version whose content the collection has already is not linked again: --alias moves to it.
    A collection has one type, the type of what was linked into it first. A link has no TTL of its own.
    """
    ref = ArtifactRef.parse(source)
    project, collection = parse_collection(target)  # before opening the registry: a bad name writes nothing
    with _open(registry_url) as registry:
        result = registry.link_version(ref.project, ref.artifact, ref.label, project, collection,
                                       aliases=aliases)  # fmt: skip
    version = result.version
    if result.created:
        click.echo(f"linked {version.linked_from} as {version.qualified_name}")
    else:
        click.echo(f"unchanged: {version.qualified_name} links {version.linked_from} already")
    if aliases:
        click.echo(f"{', '.join(f'{version.project}/{version.artifact}:{a}' for a in aliases)} -> {version.label}")


@main.command("unlink")
@click.argument("target", metavar="COLLECTION:VERSION", shell_complete=completion.versions)
@registry_option
def unlink_cmd(target: str, registry_url: str | None) -> None:
    """Remove a linked version (vN or an alias) from its collection (wandb-registry-REGISTRY/NAME), with the
    aliases on it.

    The collection's version, not the source, is named: a source may be linked into several collections.
    It leaves readers as a deleted version does, and `refmount gc` removes what is left of it; the
    source version is not touched. A version that is not a link is refused (`refmount delete` deletes it).
    """
    ref = ArtifactRef.parse(target, default_label=None)
    with _open(registry_url) as registry:
        deletion = registry.unlink_version(ref.project, ref.artifact, ref.label)
    dropped = f"; removed alias {', '.join(deletion.dropped_aliases)}" if deletion.dropped_aliases else ""
    click.echo(f"unlinked {deletion.version}{dropped}")
    _say_where_latest_went(ref, deletion)


# -- lineage ---------------------------------------------------------------------------------------


@main.command("lineage")
@click.argument("target", required=False, metavar="PROJECT/ARTIFACT[:VERSION]", shell_complete=completion.versions)
@click.option("--run", metavar="ID", help="Instead of a version: what the run (or SLURM job, pod, process job) ID "
              "produced and used.")  # fmt: skip
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Hops to follow upstream (producers, what they used) and downstream (users, what they produced).",
)
@click.option("--dot", is_flag=True, help="Print a Graphviz digraph (versions as boxes, jobs as ellipses): "
              "`refmount lineage p/a:v3 --dot | dot -Tsvg > lineage.svg`.")  # fmt: skip
@json_option
@registry_option
def lineage_cmd(target: str | None, run: str | None, depth: int, dot: bool, as_json: bool,
                registry_url: str | None) -> None:  # fmt: skip
    """Who produced and who used a version (default: latest), or what a run produced and used.

    Producers come from `log --run` (or $REFMOUNT_RUN / $WANDB_RUN_ID when logging) and the API; users from
    the mounts, which record every job that opens a file of a version (the job: $REFMOUNT_RUN or
    $WANDB_RUN_ID of the reading process, else its SLURM job, else its Kubernetes pod, else its process group),
    with files opened and bytes the mount served, and from the API's use_artifact. Collection links show
    as links. Lineage is kept when gc removes a version.
    """
    if (target is None) == (run is None):
        raise InvalidInput("name a version or --run ID (one of them)")
    if dot and as_json:
        raise InvalidInput("--dot and --json: choose one")
    with _open(registry_url) as registry:
        version = None if target is None else _lineage_version(registry, ArtifactRef.parse(target))
        found = lineage.walk(registry, version=version, run=run, depth=depth)
    if dot:
        click.echo(lineage.to_dot(found, version=version, run=run), nl=False)
    elif as_json:
        click.echo(json.dumps({"version": version, "run": run, "depth": depth, **found.to_json()}, indent=2))
    elif not found.records and not found.links:
        click.echo(f"no lineage recorded for {version or 'run ' + str(run)}", err=True)
    else:
        _print_table([_lineage_row(record) for record in found.records])
        for source, collection in sorted(found.links):
            click.echo(f"linked: {source} -> {collection}")


def _lineage_version(registry: Registry, ref: ArtifactRef) -> str:
    """``vN`` as named (lineage outlives a version gc removed), an alias through the registry."""
    index = version_index(ref.label)
    if index is None or not registry.lineage(versions=[f"{ref.project}/{ref.artifact}:v{index}"]):
        index = registry.resolve(ref.project, ref.artifact, ref.label).index  # NotFound says why
    return f"{ref.project}/{ref.artifact}:v{index}"


def _lineage_row(record: LineageRecord) -> dict[str, Any]:
    def when(t: float) -> str:
        return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S")

    return {"version": record.version, "role": record.role, "job": record.job.name, "host": record.job.host,
            "user": record.job.detail.get("user") or ("-" if record.job.uid is None else str(record.job.uid)),
            "first_seen": when(record.first_seen),
            "last_seen": when(record.last_seen), "files": record.files, "bytes": record.bytes}  # fmt: skip


# -- retention -------------------------------------------------------------------------------------


@main.command("ttl")
@click.argument("target", metavar="PROJECT/ARTIFACT:VERSION", shell_complete=completion.versions)
@click.argument("ttl_text", metavar="TTL")
@registry_option
def ttl_cmd(target: str, ttl_text: str, registry_url: str | None) -> None:
    """Set the time to live of a version, counted from its creation (as W&B's artifact.ttl), or remove it
    with `none`.

    TTL: a positive whole number and a unit, s m h d w (45s, 90m, 12h, 30d, 2w), or none. Once the
    TTL has passed, the version leaves ls, show, download, the API and the mount, and `refmount gc`
    removes it; until gc runs, a longer TTL (or none) brings it back. A deleted version's TTL cannot change.
    """
    ref = ArtifactRef.parse(target, default_label=None)
    ttl = retention.parse_ttl(ttl_text)
    with _open(registry_url) as registry:
        index = _version_index(registry, ref)
        version = registry.set_ttl(ref.project, ref.artifact, index, None if ttl is None else ttl.total_seconds())
    click.echo(f"{version.qualified_name}{_expiry(version) or ': no TTL (kept until deleted)'}")


@main.command("delete")
@click.argument("target", metavar="PROJECT/ARTIFACT:VERSION", shell_complete=completion.versions)
@click.option(
    "--force",
    is_flag=True,
    help="Delete even if user aliases point at the version: they are removed with it (never moved).",
)
@registry_option
def delete_cmd(target: str, force: bool, registry_url: str | None) -> None:
    """Delete a version: it leaves ls, show, download, the API and the mount at once (a mount within
    --alias-ttl; files already open keep reading), and `refmount gc` removes what is left of it.

    Refused while a user alias (say `best`) points at the version, unless --force. Deleting the version
    `latest` points at moves `latest` to the newest version left. Its number is never used again.
    """
    ref = ArtifactRef.parse(target, default_label=None)
    with _open(registry_url) as registry:
        deletion = registry.delete_version(ref.project, ref.artifact, _version_index(registry, ref), force=force)
    dropped = f"; removed alias {', '.join(deletion.dropped_aliases)}" if deletion.dropped_aliases else ""
    click.echo(f"deleted {deletion.version}{dropped} (`refmount gc` removes what is left of it)")
    _say_where_latest_went(ref, deletion)


def _say_where_latest_went(ref: ArtifactRef, deletion: Deletion) -> None:
    if deletion.was_latest:
        artifact = f"{ref.project}/{ref.artifact}"
        click.echo(f"{artifact}:latest now points at v{deletion.latest}" if deletion.latest is not None
                   else f"{artifact} has no version left: latest removed")  # fmt: skip


@main.command("gc")
@click.option("--dry-run", is_flag=True, help="Print what would be removed, and remove nothing.")
@json_option
@registry_option
def gc_cmd(dry_run: bool, as_json: bool, registry_url: str | None) -> None:
    """Remove expired and deleted versions (their rows and aliases) and the stored manifests that no
    remaining version uses, with this node's local index copies of them (a shared registry's, under
    manifests/ in the cache dir that `refmount config` shows), and from this node's block cache the blocks
    of objects that no remaining version references (run it on each node whose cache should shrink).

    Safe on several nodes at once (one transaction that keeps writers out; concurrent runs take
    turns), and beside running mounts, except that a file of a removed version that a mount still
    holds open may fail to read afterwards. Removed versions are gone for good; their numbers are
    never used again.
    """
    from .cache import BlockCache

    settings = config.load({"registry": registry_url})
    registry = open_registry(settings.registry, index_dir=Path(settings.cache_dir) / "manifests")
    cache = BlockCache(settings.cache_dir, None, create=False) if BlockCache.exists(settings.cache_dir) else None
    try:
        report = retention.gc(registry, cache=cache, dry_run=dry_run)
    finally:
        registry.close()
        if cache is not None:
            cache.close()
    collected, verb = report.collected, "would remove" if dry_run else "removed"
    if as_json:
        versions = [{"name": name, "reason": why} for name, why in collected.versions]
        manifests = [{"manifest_id": mid, "files": files} for mid, files in collected.manifests]
        copies = [str(path) for path in report.index_copies]
        blocks = None if report.blocks is None else {"blocks": report.blocks.blocks, "bytes": report.blocks.bytes}
        click.echo(json.dumps({"dry_run": dry_run, "versions": versions, "manifests": manifests,
                               "index_copies": copies, "cache_blocks": blocks}, indent=2))  # fmt: skip
        return
    for name, why in collected.versions:
        click.echo(f"{verb} {name} ({why})")
    for content_id, files in collected.manifests:
        click.echo(f"{verb} manifest {content_id[:12]} ({_count(files, 'file')})")
    for path in report.index_copies:
        click.echo(f"{verb} index copy {path}")
    found = [_count(len(collected.versions), "version"), _count(len(collected.manifests), "manifest"),
             _count(len(report.index_copies), "index copy", "index copies")]  # fmt: skip
    if report.blocks is not None:
        click.echo(f"{verb} {_count(report.blocks.blocks, 'cache block')} ({_size(report.blocks.bytes)}) "
                   f"of objects no remaining version references")  # fmt: skip
        found.append(_count(report.blocks.blocks, "cache block"))
    click.echo(f"gc{' --dry-run' if dry_run else ''}: {verb} {', '.join(found)}", err=True)


def _version_index(registry: Registry, ref: ArtifactRef) -> int:
    """``vN`` as it is (an expired version can still take a TTL or be deleted), an alias through the registry."""
    index = version_index(ref.label)
    return index if index is not None else registry.resolve(ref.project, ref.artifact, ref.label).index


def _expiry(version: VersionInfo) -> str:
    """`` expires 2026-01-31 12:00:00 (in 29d 23h)``, or `` expired ...``; empty without a TTL."""
    if version.expires_at is None:
        return ""
    at = datetime.fromtimestamp(version.expires_at).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    if version.expires_at <= time.time():
        return f" expired {at}: it is hidden now and `refmount gc` removes it"
    return f" expires {at} (in {retention.time_left(version)})"


# -- the mount -------------------------------------------------------------------------------------


@main.command("mount")
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option("-f", "--foreground", is_flag=True, help="Stay attached and log to stderr (systemd units use this).")
@registry_option
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Block cache directory, shared by mounts on this node (default: $XDG_CACHE_HOME/refmount).",
)
@click.option(
    "--cache-size",
    metavar="SIZE",
    help=f"Cache size limit (default 10G): {config.SIZE_FORMS}. The blocks stored longest ago go first.",
)
@click.option(
    "--alias-ttl",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="How soon new versions and moved aliases show (default 5).",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="After SIGTERM the mount is detached at once (no new opens) and files already open are still served "
    "until they close, for at most this long (default 30); then reads still waiting on a store are abandoned "
    "and the daemon exits.",
)
@click.option(
    "--allow-other",
    is_flag=True,
    default=None,
    help="Let other users read the mount (non-root needs user_allow_other in /etc/fuse.conf).",
)
@click.option("--uid", type=click.IntRange(min=0), help="Owner uid of everything on the mount (default: yours).")
@click.option("--gid", type=click.IntRange(min=0), help="Owner gid of everything on the mount (default: yours).")
@click.option("-o", "fuse_options", multiple=True, metavar="OPT[,OPT...]", help="Extra FUSE mount options.")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Daemon log file (default: mount-<mountpoint>.log in the cache dir; stderr with -f).",
)
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (requests and latencies per FUSE operation, bytes, "
    "cache hits and misses, store requests per scheme, ...). Off by default; :PORT binds 127.0.0.1 only, "
    "0.0.0.0:PORT every interface, [::1]:PORT IPv6; off turns off a config file's or $REFMOUNT_METRICS' address.",
)
@click.option(
    "--lineage/--no-lineage",
    default=None,
    help="Record in the registry which jobs (run id, SLURM job, Kubernetes pod or process group) open files of "
    "which versions, with counts of files and bytes: see `refmount lineage` (default on). Off, opens and closes no "
    "longer reach the daemon at all (a little faster on many small files).",
)
@click.option(
    "--dir-readahead",
    type=click.IntRange(0, 1024),
    metavar="FILES",
    help="Once a job has opened a few cold files of a directory (or of its version, then one of the directory's "
    "is enough), fetch the directory's other small files (up to 8 MiB each) in the background, at most FILES of "
    "them per file it opens, and never more than a quarter of the cache ahead of it: a shuffled epoch over small "
    "files then waits for the store far less often (default 16; 0 turns it off).",
)
def mount_cmd(mountpoint: Path, foreground: bool, registry_url: str | None, cache_dir: Path | None,
              cache_size: str | None, alias_ttl: float | None, stop_timeout: float | None,
              allow_other: bool | None, uid: int | None, gid: int | None, fuse_options: tuple[str, ...],
              log_file: Path | None, metrics: str | None, lineage: bool | None,
              dir_readahead: int | None) -> None:  # fmt: skip
    """Mount every artifact version read-only at MOUNTPOINT: <project>/<artifact>/<vN or alias>/<path>.

    Bytes are fetched on first read, pinned to the logged object versions, through the block cache.
    Returns once the mount answers (the daemon keeps running); `refmount umount MOUNTPOINT` ends it.

    Aliases (latest, ...) are symlinks to version directories: `find MOUNTPOINT/p/a/latest -type f`
    finds nothing, as find does not follow a symlink it is given; use `find -L` or `latest/`.
    """
    from .fs.mount import MountOptions, run

    options = ",".join(fuse_options) if fuse_options else None
    settings = config.load({"registry": registry_url, "cache_dir": cache_dir, "cache_size": cache_size,
                            "alias_ttl": alias_ttl, "stop_timeout": stop_timeout, "allow_other": allow_other,
                            "uid": uid, "gid": gid, "fuse_options": options, "metrics": metrics,
                            "lineage": lineage, "dir_readahead": dir_readahead})  # fmt: skip
    code = run(MountOptions(
        mountpoint=mountpoint, registry_url=settings.registry, cache_dir=Path(settings.cache_dir),
        cache_size_bytes=settings.cache_size, alias_ttl_s=settings.alias_ttl, stop_timeout_s=settings.stop_timeout,
        allow_other=settings.allow_other,
        uid=settings.uid, gid=settings.gid, fuse_options=settings.fuse_options, foreground=foreground,
        log_file=log_file, metrics=None if settings.metrics == config.METRICS_OFF else settings.metrics,
        lineage=settings.lineage, dir_readahead=settings.dir_readahead,
    ))  # fmt: skip
    sys.exit(code)


@main.command("umount")
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option("--lazy", is_flag=True, help="Detach now even if files are open (they are released on close).")
def umount_cmd(mountpoint: Path, lazy: bool) -> None:
    """Unmount a refmount mount (same as `fusermount3 -u`; SIGTERM to the daemon works too)."""
    from .fs.mount import unmount

    unmount(mountpoint, lazy=lazy)


@main.command("download")
@version_argument
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=8, show_default=True, help="Files fetched at once.")
@click.option("--no-cache", is_flag=True, help="Do not read from or add to the block cache.")
@path_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@registry_option
def download_cmd(target: str, dest: Path, jobs: int, no_cache: bool, prefix: str | None, quiet: bool,
                 registry_url: str | None) -> None:  # fmt: skip
    """Write every file of a version under DEST, verified, in parallel.

    Resumable: files already present are kept when their MD5 matches (the entry's content MD5, or a
    single-part S3 ETag) or, for objects without one, when they are unchanged since a download completed
    them (an xattr stamp). Entries with nothing to pin their bytes by (no ETag, object version or content
    hash) are not downloaded, as the mount does not serve them; a warning on stderr names them. A failure
    that is not about one object (credentials, a missing bucket, an unreachable endpoint) ends the download
    with one line, removing the directories it made that are still empty.

    Exit status: 0, or 4 if any file failed.
    """
    from .download import download

    with _open(registry_url) as registry, _block_cache(no_cache) as cache:
        version = _resolve(registry, target)
        started = time.time()
        with _progress_bar(f"downloading {version.qualified_name}", version.total_size, enabled=not quiet) as bar:
            report = trio.run(lambda: download(registry, version, dest, cache, jobs=jobs, prefix=prefix, progress=bar))
        _record_use(registry, version, started, files=report.written + report.kept, size=report.bytes)
    _warn_unpinned(report.unpinned, "cannot be downloaded")
    _finish(report, f"{report.written} written ({_size(report.bytes)}), {report.kept} already there",
            unpinned="not downloaded")  # fmt: skip


def _record_use(registry: Registry, version: VersionInfo, started: float, *, files: int, size: int) -> None:
    """A download is a use of the version by the job running it, as a mount's reads are (see `lineage`)."""
    from .jobs import identify

    use = LineageRecord(version.qualified_name, "used", identify(os.getpid(), os.getuid()), started, time.time(),
                        files, size)  # fmt: skip
    try:
        registry.record_lineage([use])
    except RefmountError as exc:  # the files are there: only the record of it is lost
        click.echo(f"refmount: warning: lineage not recorded: {exc}", err=True)


@main.command("verify")
@version_argument
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=16, show_default=True, help="Requests at once.")
@click.option("--strict", is_flag=True, help=f"Fail (exit {UNPINNED}) if any entry is unpinned.")
@click.option("--per-object", is_flag=True, help="One request per entry, no listings (slower; for comparison).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts and each problem as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@registry_option
def verify_cmd(target: str, jobs: int, strict: bool, per_object: bool, as_json: bool, quiet: bool,
               registry_url: str | None) -> None:  # fmt: skip
    """Check that every reference still resolves to the logged object version (no data is read).

    Entries that share a bucket and a leading directory are checked with listings of their prefix (one
    request per 1,000 objects), the others with one request each. A failure that is not about one object
    (credentials, a missing bucket, an unreachable endpoint) ends the check with one line.

    Entries with nothing to pin their bytes by (no ETag, object version or content hash: checksum=False
    entries, W&B's entries of http(s) files without an ETag) cannot be checked: they are reported as
    unpinned on stderr and counted in the summary.

    \b
    Exit status: 0 when every pinned reference resolves; 4 if any does not;
    with --strict, 5 when none failed but some entries are unpinned.
    """
    from .verify import verify

    with _open(registry_url) as registry:
        version = _resolve(registry, target)
        with _progress_bar(f"verifying {version.qualified_name}", version.file_count, enabled=not quiet) as bar:
            report = trio.run(lambda: verify(registry, version, jobs=jobs, per_object=per_object, progress=bar))
    if as_json:
        click.echo(json.dumps({"version": version.qualified_name, **report.to_json()}, indent=2))
        if report.problems:
            sys.exit(FAILED)
    else:
        _warn_unpinned(report.unpinned, "cannot be verified")
        resolve = "reference resolves to its logged version" if report.files == 1 else \
            "references resolve to their logged versions"  # fmt: skip
        _finish(report, f"{report.kept} of {report.files} {resolve}",
                unpinned="unpinned, not checked")  # fmt: skip
    if strict and report.unpinned:
        n = len(report.unpinned)
        click.echo(f"refmount: error: {n:,} unpinned {'entry' if n == 1 else 'entries'} (--strict)", err=True)
        sys.exit(UNPINNED)


def _resolve(registry: Registry, target: str) -> VersionInfo:
    ref = ArtifactRef.parse(target)
    return registry.resolve(ref.project, ref.artifact, ref.label)


@contextmanager
def _block_cache(no_cache: bool, cache_dir: Path | None = None) -> Iterator[Any]:
    from .cache import BlockCache

    settings = config.load({"cache_dir": cache_dir})
    cache = None if no_cache else BlockCache(settings.cache_dir, settings.cache_size)
    try:
        yield cache
    finally:
        if cache is not None:
            cache.close()


def _finish(report: Any, summary: str, *, unpinned: str) -> None:
    """Failures on stderr, one summary line on stdout (``unpinned`` says what became of unpinned entries);
    exit FAILED if anything failed."""
    for failure in report.failures:
        click.echo(f"refmount: error: {failure}", err=True)
    if report.unpinned:
        summary += f", {len(report.unpinned):,} {unpinned}"
    if report.skipped:
        summary += f", {report.skipped:,} without a size skipped"
    click.echo(summary + (f"; {len(report.failures)} FAILED" if report.failures else ""))
    if report.failures:
        sys.exit(FAILED)


def _warn_unpinned(paths: list[str], consequence: str) -> None:
    """One line on stderr naming the entries that have nothing to pin their bytes by (the first NAMED)."""
    if not paths:
        return
    one = len(paths) == 1
    subject = "1 entry has nothing to pin its" if one else f"{len(paths):,} entries have nothing to pin their"
    click.echo(f"refmount: warning: {subject} bytes by ({UNPINNED_REASON}) and {consequence}: {_named(paths)}",
               err=True)  # fmt: skip


def _warn_quoted(paths: list[str]) -> None:
    """One line on stderr naming the entries whose keys W&B's refs cannot carry (see uri.object_ref)."""
    if not paths:
        return
    subject = "1 object key holds" if len(paths) == 1 else f"{len(paths):,} object keys hold"
    click.echo(f"refmount: warning: {subject} '?' or '#', which W&B's refs cannot carry: refmount writes such a ref "
               f"percent-encoded (extra.{QUOTED_REF}) and reads it right; W&B cannot load it: {_named(paths)}",
               err=True)  # fmt: skip


def _named(paths: list[str]) -> str:
    """The first NAMED paths, and how many more there are."""
    return ", ".join(paths[:NAMED]) + (f", ... ({len(paths) - NAMED:,} more)" if len(paths) > NAMED else "")


@contextmanager
def _progress_bar(description: str, total: int, *, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal; the callback adds done units."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    with Progress(*Progress.get_default_columns()[:1], BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:  # fmt: skip
        task = bar.add_task(description, total=total)
        yield lambda done: bar.advance(task, done)


# -- configuration and registries -----------------------------------------------------------------


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print {key: {value, source}} as JSON.")
def config_cmd(as_json: bool) -> None:
    """Print the effective settings and where each comes from (default, a file or an environment variable).

    Files read, later ones winning: /etc/refmount/config.toml, then $XDG_CONFIG_HOME/refmount/config.toml
    ($REFMOUNT_CONFIG names a single file to use instead; it must exist). Environment variables
    (REFMOUNT_REGISTRY, REFMOUNT_CACHE_SIZE, ...) override files; `refmount mount` options override both.
    Sizes: 50G = 50Gi = 50GiB = 50GB (binary units: K, M, G, T, P) or a number of bytes.
    A registry password is shown as ***.
    """
    from .registry.url import sqlite_path

    settings = config.load()
    values = {**settings.values, "registry": _redact(settings.registry)}
    shown_json: dict[str, dict[str, Any]] = {k: {"value": v, "source": settings.sources[k]} for k, v in values.items()}
    notes = dict(settings.sources)
    registry_file = sqlite_path(settings.registry)
    if registry_file is not None:  # which file a relative sqlite:/// URL means, here and now
        shown_json["registry"].update(file=str(registry_file), exists=registry_file.exists())
        notes["registry"] += f"; the file {registry_file}" + ("" if registry_file.exists() else ", not created yet")
    if as_json:
        click.echo(json.dumps(shown_json, indent=2))
        return
    for key, value in values.items():
        if config.KEYS[key].parse is config.parse_size:
            shown = _size_setting(value)
        else:
            shown = ",".join(value) if isinstance(value, tuple) else value
        click.echo(f"{key:<13} {shown!s:<60} # {notes[key]}")


def _size_setting(n: int) -> str:
    """A size as one writes it (``10G``, ``1.5T``: the largest binary unit that shows it exactly with at most
    one decimal), and its bytes."""
    for unit, shift in (("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        whole, tenths = divmod(n * 10 >> shift, 10)
        if whole and n * 10 % (1 << shift) == 0:
            return f"{whole}{f'.{tenths}' if tenths else ''}{unit} ({n:,} bytes)"
    return _count(n, "byte")


def cache_dir_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                        help="The block cache directory (default: the one `refmount config` shows; give a mount's "
                        "--cache-dir here to see or change its cache).")(fn)  # fmt: skip


@main.group("cache")
def cache_group() -> None:
    """Work on this node's block cache (the one `refmount config` shows, shared with its mounts)."""


@cache_group.command("prefetch")
@version_argument
@path_option
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=32, show_default=True, help="Files fetched at once.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@cache_dir_option
@registry_option
def cache_prefetch_cmd(target: str, prefix: str | None, jobs: int, quiet: bool, cache_dir: Path | None,
                       registry_url: str | None) -> None:  # fmt: skip
    """Fill the block cache with a version's files, so that a mount on this node reads them without a store
    request (warm a node before a job starts).

    Only the blocks the cache lacks are fetched, pinned as the mount reads them: an interrupted prefetch
    resumes where it stopped. A mount using the same cache may run meanwhile; a block one of them is
    fetching, the other waits for instead of fetching it again. Entries with nothing to pin their bytes by
    are not fetched (the mount does not serve them); a warning names them.

    Exit status: 0, 2 if PATH matches no file, or 4 if any file failed.
    """
    from .warmup import prefetch

    with _open(registry_url) as registry, _block_cache(False, cache_dir) as cache:
        version = _resolve(registry, target)
        with _progress_bar(f"prefetching {version.qualified_name}", version.total_size, enabled=not quiet) as bar:
            report = trio.run(lambda: prefetch(registry, version, cache, prefix=prefix, jobs=jobs, progress=bar))
    _warn_unpinned(report.unpinned, "cannot be prefetched")
    _finish(report, f"{_count(report.fetched, 'block')} fetched ({_size(report.bytes)}), {report.cached:,} already "
            f"cached, of {_count(report.files, 'file')}", unpinned="not fetched")  # fmt: skip


@contextmanager
def _existing_cache(cache_dir: Path | None) -> Iterator[Any]:
    """The node's block cache as it is: never created, its size limit left as the last mount set it."""
    from .cache import BlockCache

    cache = BlockCache(config.load({"cache_dir": cache_dir}).cache_dir, None, create=False)
    try:
        yield cache
    finally:
        cache.close()


@cache_group.command("status")
@click.argument("what", required=False, metavar="[PROJECT[/ARTIFACT[:VERSION]]]",
                shell_complete=completion.projects_and_artifacts)  # fmt: skip
@cache_dir_option
@json_option
@registry_option
def cache_status_cmd(what: str | None, cache_dir: Path | None, as_json: bool, registry_url: str | None) -> None:
    """Show the block cache: directory, size and limit, blocks, and how much of each version it holds.

    Without an argument, every version in the registry is listed and the blocks of none (deleted versions,
    objects no version references any more) are counted; PROJECT, PROJECT/ARTIFACT or one version narrows
    the list. A version's share is of the bytes a mount can serve (files with nothing to pin their bytes
    by are never cached); a block of an object that several versions reference counts for each of them.
    The limit shown is the one the cache was last opened with (each mount enforces its own --cache-size).
    Safe beside running mounts that use the cache.
    """
    from .cachemap import status

    with _open(registry_url) as registry, _existing_cache(cache_dir) as cache:
        versions = _versions_of(registry, what)
        report = status(cache, registry, versions, every_version=what is None)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo(f"cache {report.directory}: {_size(report.volume)} of {_size(report.size_limit)}, "
               f"{_count(report.blocks, 'block')} ({_size(report.block_bytes)})")  # fmt: skip
    if report.unreferenced is not None and report.unreferenced.blocks:
        click.echo(f"{_count(report.unreferenced.blocks, 'block')} ({_size(report.unreferenced.bytes)}) belong to "
                   f"no version (`refmount gc` removes them)")  # fmt: skip
    _print_table([{"version": u.version.qualified_name, "aliases": u.version.aliases, "files": u.version.file_count,
                   "cacheable": u.cacheable_bytes, "cached": u.cached_bytes,
                   "%": "-" if u.percent is None else f"{u.percent:.1f}"} for u in report.versions])  # fmt: skip


def _versions_of(registry: Registry, what: str | None) -> list[VersionInfo]:
    """Every version of the registry, of a project or of an artifact, or the one version ``what`` names."""
    if what is not None and ":" in what:
        return [_resolve(registry, what)]
    if what is not None and "/" in what:
        ref = ArtifactRef.parse(what)
        return registry.versions(ref.project, ref.artifact)
    if what is None:
        return retention.live_versions(registry)
    return [version for artifact in registry.artifacts(what) for version in registry.versions(what, artifact.name)]


@cache_group.command("evict")
@version_argument
@path_option
@cache_dir_option
@registry_option
def cache_evict_cmd(target: str, prefix: str | None, cache_dir: Path | None, registry_url: str | None) -> None:
    """Drop a version's blocks (or those of its files under --path) from the block cache.

    Blocks belong to objects, not versions: a block of an object that another version references too is
    dropped as well. Safe beside running mounts that use the cache; their next read of a dropped block
    fetches it from the store again, unless they still hold it in memory (recently read blocks, up to 128
    MiB per mount) or the kernel's page cache (a file read before stays there until evicted by the kernel).
    """
    from .cachemap import evict

    with _open(registry_url) as registry, _existing_cache(cache_dir) as cache:
        version = _resolve(registry, target)
        removed = evict(cache, registry, version, prefix)
    click.echo(f"evicted {_count(removed.blocks, 'block')} ({_size(removed.bytes)}) of {version.qualified_name}")


@main.group("registry")
def registry_group() -> None:
    """Create, migrate and copy registries."""


@registry_group.command("init")
@registry_option
def registry_init_cmd(registry_url: str | None) -> None:
    """Create the registry (SQLite file or PostgreSQL schema) unless it exists; `log` and `import` do this too.

    Other commands never create one: on a missing registry they fail.
    """
    with _open(registry_url, create=True) as registry:
        click.echo(f"registry {_redact(registry.url)} is ready")


@registry_group.command("copy")
@click.argument("source", metavar="SOURCE_URL")
@click.argument("target", metavar="TARGET_URL")
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary line.")
def registry_copy_cmd(source: str, target: str, quiet: bool) -> None:
    """Copy every project, version (same vN, created time, metadata) and alias from SOURCE to TARGET, and the
    lineage of each version copied.

    Typical use: move a laptop's SQLite registry to the cluster's PostgreSQL one. Safe to re-run;
    a version that exists in TARGET with other content stops the copy before anything is written.
    """
    from .registry.copy import copy_registry

    def show(version: VersionInfo, created: bool) -> None:
        if not quiet:
            click.echo(f"{'copied' if created else 'already present'}: {version.qualified_name}", err=True)

    with _open(source) as src, _open(target, create=True) as dst:  # a missing SOURCE creates no TARGET
        report = copy_registry(src, dst, on_version=show)
    click.echo(f"copied {_count(report.copied, 'version')} ({report.present:,} already present), "
               f"{_count(report.aliases, 'alias', 'aliases')}, {_count(report.lineage, 'lineage record')}")  # fmt: skip


def _redact(url: str) -> str:
    from .registry.url import redact

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
