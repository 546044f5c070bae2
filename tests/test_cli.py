"""The real `refmount` command, end to end, on file:// references and a private SQLite registry."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest

from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.server_http import StallingServer
from tests.servers import free_port


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "mnist"
    (root / "train").mkdir(parents=True)
    for i in range(3):
        (root / "train" / f"{i:04}.png").write_bytes(b"img%d" % i)
    (root / "labels.csv").write_text("0,1,2\n")
    return root


def snapshot(cli: Cli) -> str:
    """Everything the registry says, to show that a failed command changed nothing."""
    out = [cli("ls", "--json").out]
    for project in cli("ls", "--json").json():
        for art in cli("ls", project["project"], "--json").json():
            out.append(cli("ls", art["artifact"], "--json").out)
    return "\n".join(out)


def test_log_unchanged_changed_and_listing(cli: Cli, data: Path) -> None:
    first = cli("log", "vision/mnist", file_uri(data) + "/", "--type", "dataset", "--metadata", "split=train",
                "--metadata", "n=3", "--description", "first", "--json").json()  # fmt: skip
    assert first["created"] and first["name"] == "vision/mnist:v0" and first["files"] == 4
    assert first["metadata"] == {"split": "train", "n": 3}
    again = cli("log", "vision/mnist", file_uri(data), "--alias", "best")
    assert "unchanged, still vision/mnist:v0" in again.out
    (data / "train" / "0003.png").write_bytes(b"new")
    assert "logged vision/mnist:v1" in cli("log", "vision/mnist", file_uri(data)).out
    versions = cli("ls", "vision/mnist", "--json").json()
    assert [(v["version"], v["aliases"]) for v in versions] == [("v0", ["best"]), ("v1", ["latest"])]
    assert cli("ls", "--json").json() == [{"project": "vision"}]
    assert cli("ls", "vision", "--json").json()[0] == {"artifact": "vision/mnist", "type": "dataset", "versions": 2,
                                                        "latest": "v1"}  # fmt: skip
    table = cli("ls", "vision/mnist").out
    assert "v0" in table and "best" in table
    shown = cli("show", "vision/mnist:best").out
    assert "train/0000.png" in shown and file_uri(data / "labels.csv") in shown and "train/0003.png" not in shown


def test_several_references_with_names(cli: Cli, data: Path) -> None:
    cli("log", "vision/mix", file_uri(data / "train"), file_uri(data / "labels.csv"), "--name", "imgs",
        "--name", "meta/labels.csv")  # fmt: skip
    paths = set(json.loads(cli("show", "vision/mix", "--json").out)["contents"])
    assert paths == {"imgs/0000.png", "imgs/0001.png", "imgs/0002.png", "meta/labels.csv"}


def test_alias_commands(cli: Cli, data: Path) -> None:
    cli("log", "p/a", file_uri(data))
    (data / "labels.csv").write_text("changed\n")
    cli("log", "p/a", file_uri(data))
    assert "p/a:best -> v0" in cli("alias", "p/a:v0", "best").out
    cli("alias", "p/a:latest", "best")
    assert cli("ls", "p/a", "--json").json()[1]["aliases"] == ["best", "latest"]
    moved = cli("alias", "p/a:v0", "best", "--delete", ok=False)  # since moved to v1: left alone
    assert (
        moved.err == "refmount: error: best points at v1, not v0: nothing removed (name p/a alone to remove "
        "it anyway)\n"
    )
    assert cli("ls", "p/a", "--json").json()[1]["aliases"] == ["best", "latest"]
    cli("alias", "p/a:v1", "best", "--delete")
    assert cli("ls", "p/a", "--json").json()[1]["aliases"] == ["latest"]
    cli("alias", "p/a:v0", "best")
    cli("alias", "p/a", "best", "--delete")  # wherever it points
    assert cli("ls", "p/a", "--json").json()[0]["aliases"] == []
    listed = cli("ls", "p/a:v0", ok=False)
    assert "ls takes PROJECT or PROJECT/ARTIFACT, not a version" in listed.err and "refmount show p/a:v0" in listed.err


def test_export_import_round_trip(cli: Cli, data: Path, tmp_path: Path) -> None:
    logged = cli("log", "p/a", file_uri(data), "--json").json()
    exported = tmp_path / "manifest.json"
    exported.write_text(cli("export", "p/a:v0").out)
    manifest = json.loads(exported.read_text())
    assert manifest["version"] == 1 and len(manifest["contents"]) == 4
    imported = cli("import", str(exported), "p/copy", "--type", "dataset", "--json").json()
    assert imported["digest"] == logged["digest"] and imported["created"]
    assert json.loads(cli("show", "p/copy", "--json").out) == manifest


def test_bad_input_is_one_line_nonzero_and_changes_nothing(cli: Cli, data: Path, tmp_path: Path) -> None:
    cli("log", "p/a", file_uri(data))
    before = snapshot(cli)
    hostile = tmp_path / "hostile.json"
    bad_calls = {
        ("log", "p/a", "ftp://x/y"): "unknown scheme",
        ("log", "p/a", "s3://key:secret@bucket/x"): "embeds credentials",
        ("log", "p/a", "s3://bucket/x?X-Amz-Signature=1"): "signed URL",
        ("log", "p/a", file_uri(tmp_path / "missing")): "no such file",
        ("log", "p/a", file_uri(data), file_uri(data)): "duplicate artifact path",
        ("log", "p/a", file_uri(data), "--max-objects", "2"): "max_objects=2",
        ("log", "p/a", file_uri(data), "--alias", "latest"): "reserved",
        ("log", "p/a", file_uri(data), "--alias", "v3"): "reserved",
        ("log", "p/a:v0", file_uri(data)): "without a version",
        ("log", "bad project/a", file_uri(data)): "invalid project name",
        ("log", "p/a", file_uri(data), "--type", "model"): "has type 'dataset'",
        ("log", "p/a", file_uri(data), "--name", "x", "--name", "y"): "--name",
        ("log", "p/a", file_uri(data), "--metadata", "novalue"): "KEY=VALUE",
        ("alias", "p/a:v9", "best"): "no version v9",
        ("alias", "p/a:v0", "latest"): "reserved",
        ("alias", "p/nope:v0", "best"): "no artifact p/nope",
        ("show", "p/a:nope"): "no alias 'nope'",
        ("show", "nope"): "PROJECT/ARTIFACT",
        ("ls", "nope"): "no project",
        ("import", str(hostile), "p/h"): "'..' component",
        ("ls", "--registry", "mysql://x/y"): "unsupported scheme",
        ("ls", "--no-such-flag"): "No such option",
        ("log", "p/a"): "Missing argument",
    }
    hostile.write_text(json.dumps({"version": 1, "contents": {"../etc/passwd": {"digest": "x", "ref": "s3://b/k"}}}))
    for args, message in bad_calls.items():
        result = cli(*args, ok=False)
        assert message in result.err, (args, result.err)
        assert len(result.err.strip().splitlines()) == 1, (args, result.err)
        assert "Traceback" not in result.err
    assert snapshot(cli) == before


def test_help_explains_every_option(cli: Cli) -> None:
    from refmount.cli import main

    for name, command in main.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"refmount {name} {param.opts[0]} has no help text"
        assert "Usage:" in cli(name, "--help").out
    assert "refmount" in cli("--version").out


def test_registry_copy_to_postgres_and_back(cli: Cli, data: Path, postgres_url: str, tmp_path: Path) -> None:
    cli("log", "vision/mnist", file_uri(data), "--metadata", "k=1", "--run", "prep")
    (data / "labels.csv").write_text("changed\n")
    cli("log", "vision/mnist", file_uri(data), "--alias", "best")
    cli("registry", "init", "--registry", postgres_url)
    assert (
        "copied 2 versions (0 already present), 2 aliases, 1 lineage record"
        in cli("registry", "copy", cli.registry_url, postgres_url).out
    )
    assert "copied 0 versions (2 already present), 2 aliases, 0 lineage records" in cli(
        "registry", "copy", cli.registry_url, postgres_url).out  # fmt: skip
    lineage = cli("lineage", "vision/mnist:v0", "--json", "--registry", postgres_url).json()["records"]
    assert [(r["role"], r["job"]) for r in lineage] == [("produced", "run:prep")]
    here = cli("ls", "vision/mnist", "--json").json()
    there = cli("ls", "vision/mnist", "--json", "--registry", postgres_url).json()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "manifest_id"} for r in rows]  # noqa: E731
    assert strip(there) == strip(here)
    assert cli("export", "vision/mnist:v0", "--registry", postgres_url).out == cli("export", "vision/mnist:v0").out

    other = f"sqlite:///{tmp_path / 'other.db'}"
    cli("log", "vision/mnist", file_uri(data / "train"), "--registry", other)  # v0 with other content
    before = cli("ls", "vision/mnist", "--json", "--registry", other).out
    assert "other content; nothing copied" in cli("registry", "copy", postgres_url, other, ok=False).err
    assert cli("ls", "vision/mnist", "--json", "--registry", other).out == before


# -- the command line itself -----------------------------------------------------------------------


def test_mountpoint_shortcut_takes_options_in_any_order(cli: Cli, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")  # mount gets as far as finding it missing, so nothing is mounted
    for args in [("-f", missing), (missing, "-f"), ("--registry", cli.registry_url, "-o", "ro", missing),
                 ("-v", "-o", "log", "-f", missing), ("-fv", "-oro", "--uid=0", missing)]:  # fmt: skip
        err = cli(*args, ok=False).err
        assert f"mountpoint {missing} does not exist" in err and len(err.strip().splitlines()) == 1, (args, err)
        assert cli(*args, "--help").out.startswith("Usage: refmount mount "), args
    err = cli("--alias-ttl", "3", "-f", "--", missing, ok=False).err
    assert f"mountpoint {missing} does not exist" in err, err


def test_mistyped_command_is_no_such_command(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for args in [("lgo", "x"), ("lgo",), ("-f", "lgo"), ("--registry", cli.registry_url, "lgo", "x")]:
        err = cli(*args, ok=False).err
        assert "No such command 'lgo'. Did you mean 'log'?" in err and len(err.strip().splitlines()) == 1, err
    assert "Missing argument 'MOUNTPOINT'" in cli("-f", ok=False).err
    assert "No such option '-x'" in cli("-x", ok=False).err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lgo").mkdir()  # a word that names a directory here is a mountpoint after all
    assert cli("lgo", "--help").out.startswith("Usage: refmount mount ")


@pytest.mark.parametrize("group", [[], ["registry"]])
def test_group_without_command_prints_its_help(cli: Cli, group: list[str]) -> None:
    result = cli(*group, ok=False)
    assert result.code == 2  # click's exit code for a group's no_args_is_help
    assert result.err == cli(*group, "--help").out and "error" not in result.err


# `log` waits for HEAD in the main thread: a bare KeyboardInterrupt. `download` waits for GET in a
# trio worker thread: trio raises the KeyboardInterrupt wrapped in an exception group.
@pytest.mark.parametrize("command, stall", [("log", "HEAD"), ("download", "GET")])
def test_ctrl_c_is_one_line(cli: Cli, stalling_http: StallingServer, tmp_path: Path, command: str, stall: str) -> None:
    if command == "download":
        cli("log", "p/slow", stalling_http.url)
    stalling_http.stall = stall
    args = {"log": ["log", "p/other", stalling_http.url], "download": ["download", "p/slow", str(tmp_path / "dest"),
                                                                        "--no-cache", "-q"]}[command]  # fmt: skip
    # A child inherits an ignored SIGINT (as background jobs have it) but not a handler: handle it while forking.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "refmount", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "REFMOUNT_REGISTRY": cli.registry_url})  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert stalling_http.arrived.wait(60), f"refmount {command} never asked for the file"
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # the request still hangs: the worker thread is left behind
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert err.strip() == "refmount: aborted" and proc.returncode == 130, (proc.returncode, err)


def test_unreachable_server_is_one_line_without_retry_warnings(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}/x"
    err = cli("log", "w/x", url, ok=False).err
    assert "cannot reach the server" in err and len(err.strip().splitlines()) == 1, err
    assert "Retrying" in cli("-v", "log", "w/x", url, ok=False).err  # still there for whoever asks


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``root``: to show that nothing was created or changed."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def test_only_writing_commands_create_a_missing_registry(cli: Cli, data: Path, tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    path = tmp_path / "typo" / "dir" / "registry.db"
    missing = f"sqlite:///{path}"
    expected = f"refmount: error: no registry at {path} (log a version first, or run `refmount registry init`)"
    before = tree(tmp_path)
    for args in [
        ("ls",),
        ("ls", "p"),
        ("ls", "p/a"),
        ("show", "p/a"),
        ("export", "p/a:v0"),
        ("alias", "p/a:v0", "best"),
        ("alias", "p/a", "best", "--delete"),
        ("verify", "p/a"),
        ("download", "p/a", str(tmp_path / "dest")),
        ("mount", str(tmp_path / "mnt"), "--cache-dir", str(tmp_path / "cache")),
    ]:
        result = cli(*args, "--registry", missing, ok=False)
        assert result.err.strip() == expected, (args, result.err)
    result = cli("registry", "copy", missing, f"sqlite:///{tmp_path / 'copy.db'}", ok=False)
    assert result.err.strip() == expected
    assert tree(tmp_path) == before

    cli("log", "p/a", file_uri(data), "--registry", missing)
    exported = tmp_path / "manifest.json"
    exported.write_text(cli("export", "p/a", "--registry", missing).out)
    imported = f"sqlite:///{tmp_path / 'new' / 'imported.db'}"
    cli("import", str(exported), "p/a", "--registry", imported)
    copied = f"sqlite:///{tmp_path / 'new' / 'copied.db'}"
    cli("registry", "copy", missing, copied)
    for url in (missing, imported, copied):
        assert cli("ls", "p/a", "--json", "--registry", url).json()[0]["version"] == "v0"
    initialized = f"sqlite:///{tmp_path / 'new' / 'init.db'}"
    assert "is ready" in cli("registry", "init", "--registry", initialized).out
    assert not list(tmp_path.rglob(".*.tmp"))  # the files built before linking into place are gone
    assert cli("ls", "--json", "--registry", initialized).json() == []


def test_the_default_registry_is_created_by_the_first_log(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "empty.toml").write_text("")  # and no config file of this machine's
    monkeypatch.setenv("REFMOUNT_CONFIG", str(tmp_path / "empty.toml"))
    fresh = Cli("")  # no REFMOUNT_REGISTRY: the default, under $XDG_DATA_HOME
    default = tmp_path / "xdg" / "refmount" / "registry.db"
    assert f"no registry at {default} (log a version first" in fresh("ls", ok=False).err
    assert not (tmp_path / "xdg").exists()
    fresh("log", "p/a", file_uri(data))
    assert default.is_file() and fresh("ls", "--json").json() == [{"project": "p"}]


def test_a_file_that_is_not_a_registry_is_refused_by_every_command_and_left_untouched(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    import sqlite3

    cli("log", "p/a", file_uri(data))
    exported = tmp_path / "manifest.json"
    exported.write_text(cli("export", "p/a").out)
    files = tmp_path / "files"
    files.mkdir()
    (files / "empty.db").write_bytes(b"")
    (files / "text.db").write_text("not a database\n" * 100)
    other = sqlite3.connect(files / "other.db")
    other.execute("CREATE TABLE schema_version (version INTEGER)")
    other.execute("INSERT INTO schema_version VALUES (1)")
    other.commit()
    other.close()
    (tmp_path / "mnt").mkdir()
    before = tree(files)
    for name in ("empty.db", "text.db", "other.db"):
        url = f"sqlite:///{files / name}"
        for args in [
            ("ls", "--registry", url),
            ("show", "p/a", "--registry", url),
            ("alias", "p/a:v0", "best", "--registry", url),
            ("log", "p/a", file_uri(data), "--registry", url),
            ("import", str(exported), "p/b", "--registry", url),
            ("registry", "init", "--registry", url),
            ("registry", "copy", cli.registry_url, url),
            ("registry", "copy", url, f"sqlite:///{tmp_path / 'copy.db'}"),
            ("mount", str(tmp_path / "mnt"), "--registry", url),
        ]:
            result = cli(*args, ok=False)
            assert f"{files / name} is not a refmount registry (" in result.err, (args, result.err)
            assert len(result.err.strip().splitlines()) == 1, (args, result.err)
    assert tree(files) == before
    assert not (tmp_path / "copy.db").exists() and not any((tmp_path / "mnt").iterdir())


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"size": 10**30}, "manifest entry 'bad.bin' has an invalid size 1000000000000000000000000000000"),
        ({"size": 2**63}, "manifest entry 'bad.bin' has an invalid size 9223372036854775808"),
        ({"ref": "s3:///key"}, "manifest entry 'bad.bin': s3:///key: no bucket name (expected s3://BUCKET/KEY)"),
        ({"ref": "s3://b/key?part=1"}, "manifest entry 'bad.bin': s3://b/key?part=1: unsupported query parameter"),
        ({"ref": "gs:///key"}, "manifest entry 'bad.bin': gs:///key: no bucket name"),
        ({"ref": "az:///key"}, "manifest entry 'bad.bin': az:///key: no container name"),
        ({"ref": "https://acct.blob.core.windows.net/c/k?x=1"}, "query parameters are not supported"),
        ({"ref": "http:///file.bin"}, "manifest entry 'bad.bin': http:///file.bin: no host in the URL"),
        (
            {"ref": "file://otherhost/tmp/x"},
            "manifest entry 'bad.bin': file://otherhost/tmp/x: file:// references must",
        ),
        (
            {"ref": "file:///tmp/src/c?x=1"},
            "manifest entry 'bad.bin': file:///tmp/src/c?x=1: file:// references take no",
        ),
        ({"ref": "ftp://host/x"}, "manifest entry 'bad.bin': unknown scheme 'ftp'"),
        ({"extra": {"etag": 7}}, "manifest entry 'bad.bin' has an invalid extra.etag 7 (expected text)"),
        ({"extra": {"content_md5": "abc"}}, "manifest entry 'bad.bin' has an invalid extra.content_md5 'abc'"),
    ],
)
def test_import_refuses_entries_no_registry_or_store_can_serve(
    cli: Cli, data: Path, tmp_path: Path, entry: dict[str, object], message: str
) -> None:
    cli("log", "p/a", file_uri(data))
    before = snapshot(cli)
    manifest = json.loads(cli("export", "p/a").out)
    manifest["contents"]["bad.bin"] = {"digest": "d", "ref": file_uri(data / "labels.csv"), "size": 1, **entry}
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(manifest))
    for target in ("p/a", "p/new"):
        result = cli("import", str(hostile), target, ok=False)
        assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert snapshot(cli) == before


def test_file_references_take_no_query_or_fragment(cli: Cli, data: Path) -> None:
    cli("log", "p/a", file_uri(data))
    before = snapshot(cli)
    for uri, message in {
        file_uri(data / "labels.csv") + "?x=1": "file:// references take no query parameters",
        file_uri(data) + "?versionId=3": "file:// references take no query parameters",
        file_uri(data) + "#part": "has a fragment",
    }.items():
        for extra in ((), ("--no-checksum",)):
            result = cli("log", "p/a", uri, *extra, ok=False)
            assert uri in result.err and message in result.err, result.err
            assert len(result.err.strip().splitlines()) == 1, result.err
    assert snapshot(cli) == before
    weird = data / "what?.txt"  # a '?' in a file name is percent-encoded, not a query
    weird.write_text("?")
    cli("log", "p/a", file_uri(weird))
    assert json.loads(cli("export", "p/a").out)["contents"]["what?.txt"]["ref"].endswith("/what%3F.txt")


def test_name_must_be_a_relative_artifact_path(cli: Cli, data: Path) -> None:
    cli("log", "p/a", file_uri(data))
    before = snapshot(cli)
    for name, message in {
        "/abs": "artifact path '/abs' is absolute",
        "../x": "artifact path '../x' has an empty, '.' or '..' component",
        "a/../../x": "'..' component",
        "a//b": "empty, '.' or '..' component",
        "./a": "empty, '.' or '..' component",
        "": "artifact path is empty",
        "/": "artifact path is empty",
    }.items():
        for uri in (file_uri(data), file_uri(data / "labels.csv")):
            result = cli("log", "p/a", uri, "--name", name, ok=False)
            assert result.err.startswith(f"refmount: error: invalid --name {name!r}: "), result.err
            assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert snapshot(cli) == before
    cli("log", "p/b", file_uri(data / "train"), file_uri(data / "labels.csv"), "--name", "imgs/", "--name", "l.csv")
    paths = set(json.loads(cli("export", "p/b").out)["contents"])
    assert paths == {"imgs/0000.png", "imgs/0001.png", "imgs/0002.png", "l.csv"}  # a trailing '/' is allowed


# -- output ----------------------------------------------------------------------------------------


def test_piped_tables_are_one_tab_separated_line_per_row_never_wrapped_or_cut(cli: Cli, data: Path) -> None:
    name, alias = "imgs-" + "x" * 100, "best-" + "y" * 100  # each wider than an 80-column table's cell
    cli("log", f"vision/{name}", file_uri(data), "--alias", alias)
    (data / "train" / f"{'z' * 120}.png").write_bytes(b"long")
    cli("log", f"vision/{name}", file_uri(data))

    def rows(*args: str) -> list[list[str]]:  # the Cli runs refmount with stdout to a pipe
        return [line.split("\t") for line in cli(*args).out.splitlines()]

    assert rows("ls") == [["project"], ["vision"]]
    assert rows("ls", "vision") == [["artifact", "type", "versions", "latest"],
                                    [f"vision/{name}", "dataset", "2", "v1"]]  # fmt: skip
    versions = rows("ls", f"vision/{name}")
    assert versions[0] == ["version", "digest", "created", "files", "bytes", "aliases", "expires", "ttl_left"]
    assert [(row[0], row[3:]) for row in versions[1:]] == [("v0", ["4", "18", alias, "-", "-"]),
                                                          ("v1", ["5", "22", "latest", "-", "-"])]  # fmt: skip
    assert all(" " not in cell for row in versions for cell in row)  # `awk '{print $6}'` finds the aliases
    shown = cli("show", f"vision/{name}:v1").out.splitlines()
    header = shown.index("size\tpath\treference\tversion\tdigest")  # after the version's own line(s)
    entries = [line.split("\t") for line in shown[header + 1 :]]
    assert all(len(row) == 5 for row in entries) and len(entries) == 5
    long = next(row for row in entries if row[1].startswith("train/zzz"))
    assert long[:2] == ["4", f"train/{'z' * 120}.png"] and long[2] == file_uri(data / "train" / f"{'z' * 120}.png")


def test_a_terminal_gets_an_aligned_table_folding_what_is_too_wide(cli: Cli, data: Path) -> None:
    name = "imgs-" + "x" * 100
    cli("log", f"vision/{name}", file_uri(data))
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "80"}
    subprocess.run([sys.executable, "-m", "refmount", "ls", "vision"], stdout=secondary, env=env, timeout=120,
                   check=True)  # fmt: skip
    os.close(secondary)
    out = b""
    with contextlib.suppress(OSError):  # EIO once everything written is read
        while chunk := os.read(primary, 65536):
            out += chunk
    os.close(primary)
    lines = re.sub(r"\x1b\[[0-9;]*m", "", out.decode()).splitlines()  # without rich's colours
    assert lines[0].split() == ["artifact", "type", "versions", "latest"]
    assert lines[1].split()[1:] == ["dataset", "1", "v0"] and "\t" not in out.decode() and "…" not in out.decode()
    assert "".join(line.split()[0] for line in lines[1:]) == f"vision/{name}"  # folded within its column, not cut


def test_mount_help_says_find_does_not_follow_aliases(cli: Cli) -> None:
    shown = " ".join(cli("mount", "--help").out.split())  # as one line, whatever click's wrapping
    assert "Aliases (latest, ...) are symlinks" in shown and "use `find -L` or `latest/`" in shown


def test_counts_are_singular_for_one(cli: Cli, data: Path, tmp_path: Path) -> None:
    one = tmp_path / "one.csv"
    one.write_text("x\n")
    assert "(1 file, 2 B," in cli("log", "p/one", file_uri(one)).out
    assert cli("verify", "p/one", "-q").out == "1 of 1 reference resolves to its logged version\n"
    assert "(4 files," in cli("log", "p/four", file_uri(data)).out
    copied = cli("registry", "copy", cli.registry_url, f"sqlite:///{tmp_path / 'copy.db'}", "-q").out
    assert copied == "copied 2 versions (0 already present), 2 aliases, 0 lineage records\n"
    single = f"sqlite:///{tmp_path / 'single.db'}"
    Cli(single)("log", "p/one", file_uri(one), "--run", "r")
    assert Cli(single)("registry", "copy", single, f"sqlite:///{tmp_path / 'c.db'}", "-q").out == (
        "copied 1 version (0 already present), 1 alias, 1 lineage record\n"
    )


def test_config_shows_sizes_as_written_and_in_bytes(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def cache_size() -> str:
        return next(line for line in cli("config").out.splitlines() if line.startswith("cache_size"))

    monkeypatch.setenv("REFMOUNT_CACHE_SIZE", "10G")
    assert "10G (10,737,418,240 bytes)" in cache_size()
    monkeypatch.setenv("REFMOUNT_CACHE_SIZE", "1.5TiB")
    assert "1.5T (1,649,267,441,664 bytes)" in cache_size()
    monkeypatch.setenv("REFMOUNT_CACHE_SIZE", "1000")
    assert "1,000 bytes" in cache_size()
    assert cli("config", "--json").json()["cache_size"]["value"] == 1000  # scripts get the number


def test_import_takes_log_s_version_options(cli: Cli, data: Path, tmp_path: Path) -> None:
    exported = tmp_path / "manifest.json"
    cli("log", "p/a", file_uri(data))
    exported.write_text(cli("export", "p/a").out)
    imported = cli("import", str(exported), "p/b", "--type", "model", "--alias", "best", "--description", "copied",
                   "--metadata", "split=train", "--metadata", "n=3", "--json").json()  # fmt: skip
    assert imported["metadata"] == {"split": "train", "n": 3} and imported["description"] == "copied"
    assert imported["type"] == "model" and imported["aliases"] == ["best", "latest"]
    assert "--metadata KEY=VALUE" in cli("import", "--help").out
    bad = cli("import", str(exported), "p/c", "--metadata", "novalue", ok=False)
    assert bad.err == "refmount: error: --metadata takes KEY=VALUE, got 'novalue'\n"
