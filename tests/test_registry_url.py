"""Registry URLs: SQLAlchemy's slashes for SQLite (three = relative, four = absolute), one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refmount.registry.url import normalize
from refmount.stores.file import file_uri


@pytest.fixture
def data(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("hello")
    return tmp_path / "data"


def run(cwd: Path, *args: str, registry: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REFMOUNT_REGISTRY"}
    if registry is not None:
        env["REFMOUNT_REGISTRY"] = registry
    return subprocess.run([sys.executable, "-m", "refmount", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_three_slashes_are_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize("sqlite:///rel/registry.db") == f"sqlite:///{tmp_path}/rel/registry.db"
    assert normalize(f"sqlite:///{tmp_path}/abs.db") == f"sqlite:///{tmp_path}/abs.db"  # four slashes
    assert normalize("sqlite:///~/r.db") == f"sqlite:///{Path.home()}/r.db"
    assert normalize("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"


def test_a_relative_registry_is_made_in_the_working_directory_and_config_names_the_file(
    tmp_path: Path, data: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert run(work, "log", "p/a", file_uri(data), registry="sqlite:///reg.db").returncode == 0
    assert (work / "reg.db").is_file()
    listed = run(work, "ls", "--json", registry="sqlite:///reg.db")
    assert json.loads(listed.stdout) == [{"project": "p"}], listed.stderr
    shown = json.loads(run(work, "config", "--json", registry="sqlite:///reg.db").stdout)["registry"]
    assert shown["value"] == f"sqlite:///{work}/reg.db"
    assert shown["file"] == f"{work}/reg.db" and shown["exists"] is True
    text = run(work, "config", registry="sqlite:///other.db").stdout
    assert f"the file {work}/other.db, not created yet" in text


def test_a_daemon_opens_the_relative_registry_of_the_directory_it_was_started_in(tmp_path: Path, data: Path) -> None:
    work, mnt = tmp_path / "work", tmp_path / "mnt"
    work.mkdir()
    mnt.mkdir()
    assert run(work, "log", "p/a", file_uri(data), registry="sqlite:///reg.db").returncode == 0
    try:
        started = run(work, "mount", str(mnt), "--cache-dir", str(tmp_path / "cache"), registry="sqlite:///reg.db")
        assert started.returncode == 0, started.stderr
        assert sorted(os.listdir(mnt / "p" / "a")) == ["latest", "v0"]
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def test_an_absolute_path_written_the_old_way_still_opens_when_that_is_unambiguous(tmp_path: Path, data: Path) -> None:
    old_style = f"sqlite://{tmp_path}/reg.db"  # three slashes in front of an absolute path
    assert run(tmp_path, "log", "p/a", file_uri(data), "--registry", f"sqlite:///{tmp_path}/reg.db").returncode == 0
    elsewhere = tmp_path / "elsewhere"  # no tmp/.../reg.db under it: only the absolute reading exists
    elsewhere.mkdir()
    listed = run(elsewhere, "ls", "--json", registry=old_style)
    assert json.loads(listed.stdout) == [{"project": "p"}], listed.stderr
    assert f"write sqlite:///{tmp_path}/reg.db" in listed.stderr
    assert not list(elsewhere.iterdir())


@pytest.mark.parametrize(
    "url, reason",
    [("sqlite:reg.db", "no // after sqlite:"), ("sqlite://host/reg.db", "has no host, here 'host'"),
     ("sqlite://", "no file named"), ("sqlite:///", "no file named"), ("mysql://h/db", "unsupported scheme"),
     ("postgresql://u:secret@h:port/db", "Port could not be cast"), ("postgresql://", "no host or database")],
)  # fmt: skip
def test_a_malformed_registry_url_is_one_line(tmp_path: Path, url: str, reason: str) -> None:
    for args, registry in ((("ls", "--registry", url), None), (("config",), url), (("ls",), url)):
        result = run(tmp_path, *args, registry=registry)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("refmount: error: ") and reason in lines[0], lines
        assert "secret" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing created
