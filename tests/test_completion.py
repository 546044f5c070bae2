"""Shell completion through the real command line (click's ``_REFMOUNT_COMPLETE`` protocol, as bash's
completion function calls it) against a real registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from refmount.stores.file import file_uri
from tests.conftest import Cli


def complete(line: str, tmp_path: Path, registry_url: str | None) -> list[str]:
    """What bash would be offered for the last word of ``line`` (words split at spaces)."""
    conf = tmp_path / "empty.toml"
    conf.touch()
    env = {key: value for key, value in os.environ.items() if not key.startswith("REFMOUNT_")}
    env.update(_REFMOUNT_COMPLETE="bash_complete", COMP_WORDS=line, COMP_CWORD=str(len(line.split(" ")) - 1),
               REFMOUNT_CONFIG=str(conf), XDG_DATA_HOME=str(tmp_path / "xdg-data"))  # fmt: skip
    if registry_url is not None:
        env["REFMOUNT_REGISTRY"] = registry_url
    proc = subprocess.run([sys.executable, "-m", "refmount"], env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr  # never a traceback, never an error
    return [line.partition(",")[2] for line in proc.stdout.splitlines() if line]


@pytest.fixture
def logged(cli: Cli, tmp_path: Path) -> str:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    cli("log", "vision/mnist", file_uri(data), "--alias", "best")
    (data / "a.txt").write_text("changed")
    cli("log", "vision/mnist", file_uri(data))
    cli("log", "vision/imgs", file_uri(data))
    cli("log", "audio/speech", file_uri(data))
    return cli.registry_url


def test_names_come_from_the_registry(logged: str, tmp_path: Path) -> None:
    def offered(line: str) -> list[str]:
        return complete(line, tmp_path, logged)

    assert offered("refmount l") == ["lineage", "link", "log", "ls"]  # command names, as before
    assert offered("refmount ls ") == ["audio", "vision", "audio/speech", "vision/imgs", "vision/mnist"]
    assert offered("refmount ls vi") == ["vision", "vision/imgs", "vision/mnist"]
    assert offered("refmount show vision/m") == ["vision/mnist"]
    labels = ["vision/mnist:v0", "vision/mnist:v1", "vision/mnist:best", "vision/mnist:latest"]
    assert offered("refmount show vision/mnist") == ["vision/mnist", *labels]  # named whole: its versions too
    assert offered("refmount export vision/mnist:") == labels
    assert offered("refmount download vision/mnist:") == offered("refmount verify vision/mnist:") == labels
    assert offered("refmount show --json vision/mnist:b") == ["vision/mnist:best"]
    assert offered("refmount alias vision/mnist:v0 ") == ["best"]  # latest is refmount's to move
    assert offered("refmount log a") == ["audio/speech"]
    assert offered("refmount import manifest.json vision/i") == ["vision/imgs"]
    assert offered("refmount show nope/") == [] and offered("refmount show vision/mnist:zz") == []


def test_without_a_usable_registry_nothing_is_offered_and_nothing_said(logged: str, tmp_path: Path) -> None:
    not_a_registry = tmp_path / "notes.txt"
    not_a_registry.write_text("hello")
    assert complete("refmount show ", tmp_path, None) == []  # the default registry does not exist
    assert not (tmp_path / "xdg-data").exists()  # and was not created
    for url in [f"sqlite:///{not_a_registry}", "bogus://x", f"sqlite:///{tmp_path}/missing.db"]:
        assert complete("refmount show ", tmp_path, url) == []
        assert complete(f"refmount ls --registry {url} ", tmp_path, logged) == []  # --registry is the one asked
    assert not_a_registry.read_text() == "hello"
    assert complete(f"refmount ls --registry {logged} a", tmp_path, None) == ["audio", "audio/speech"]
    assert complete("refmount alias ", tmp_path, logged)[:1] == ["audio/speech"]
    assert complete("refmount alias nope ", tmp_path, logged) == []  # no such TARGET: no aliases
