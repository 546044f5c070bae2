"""`refmount cache prefetch` (a version's blocks into the node's cache, which a mount then serves from), and the
--path selection it shares with `download` and `show`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.server_http import StallingServer
from tests.test_mount import log, make_tree


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache the CLI uses: the one mount_factory's mounts use too."""
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_mount_serves_prefetched_files_without_fetching(cli: Cli, registry_url: str, tmp_path: Path,
                                                          cache_dir: Path, mount_factory: Any) -> None:  # fmt: skip
    tree = make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    blocks = 1 + 1 + 1 + 3  # train/0001.png, x.bin, labels.csv, big.bin (three blocks); empty has none
    first = cli("cache", "prefetch", "p/ds", "-q")
    mib = sum(map(len, tree.values())) / 2**20
    assert first.out == f"{blocks} blocks fetched ({mib:.1f} MiB), 0 already cached, of 5 files\n"
    again = cli("cache", "prefetch", "p/ds:latest", "-q")  # resumes: nothing left to fetch
    assert again.out == f"0 blocks fetched (0 B), {blocks:,} already cached, of 5 files\n"
    mounted = mount_factory()
    for rel, data in tree.items():
        assert (mounted.path / "p/ds/v0" / rel).read_bytes() == data
    assert mounted.stats()["fetches"] == 0


def read_through_a_mount(registry_url: str, mount_factory: Any, served: StallingServer) -> Any:
    """Log ``served``'s file as p/web and read it through a new mount (one GET at the server); the mount."""
    served.stall = ""
    log(registry_url, "p/web", served.url)
    mounted = mount_factory()
    assert (mounted.path / "p/web/v0/slow.bin").read_bytes() == served.body  # the mount fetches it
    assert served.requests.count("GET") == 1
    return mounted


def test_prefetch_beside_a_live_mount_fetches_each_block_once(cli: Cli, registry_url: str, cache_dir: Path,
                                                              mount_factory: Any,
                                                              stalling_http: StallingServer) -> None:  # fmt: skip
    read_through_a_mount(registry_url, mount_factory, stalling_http)
    assert cli("cache", "prefetch", "p/web", "-q").out.startswith("0 blocks fetched (0 B), 1 already cached")
    assert stalling_http.requests.count("GET") == 1


def test_path_selects_files(cli: Cli, registry_url: str, tmp_path: Path, cache_dir: Path) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    assert cli("cache", "prefetch", "p/ds", "--path", "train/", "-q").out.startswith("2 blocks fetched")
    assert cli("cache", "prefetch", "p/ds", "--path", "labels.csv", "-q").out.startswith("1 block fetched")


def test_bad_input_is_one_line(cli: Cli, registry_url: str, tmp_path: Path, cache_dir: Path) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    for args, message in (
        (["p/ds", "--path", "nope/"], "no file of p/ds:v0 is at or under 'nope/'"),
        (["p/ds:v9"], "v9"),
        (["p/nothing"], "nothing"),
    ):
        result = cli("cache", "prefetch", *args, "-q", ok=False)
        assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert cli("cache", "prefetch", "p/ds", "-q").out.startswith("6 blocks fetched")  # nothing was cached before
    assert "--path" in cli("cache", "prefetch", "--help").out


def test_download_and_show_take_the_same_path(cli: Cli, registry_url: str, tmp_path: Path, cache_dir: Path) -> None:
    tree = make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    shown = cli("show", "p/ds", "--path", "train").out.splitlines()
    assert [line.split("\t")[1] for line in shown[1:] if "\t" in line][1:] == ["train/0001.png", "train/deep/er/x.bin"]
    out = tmp_path / "out"
    assert cli("download", "p/ds", str(out), "--path", "train/deep/", "-q").out.startswith("1 written")
    assert [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] == ["train/deep/er/x.bin"]
    assert (out / "train/deep/er/x.bin").read_bytes() == tree["train/deep/er/x.bin"]
    for command in (["show", "p/ds"], ["download", "p/ds", str(tmp_path / "none")]):
        result = cli(*command, "--path", "nope", ok=False)
        assert result.err.strip() == "refmount: error: no file of p/ds:v0 is at or under 'nope'" and not result.out
    assert not (tmp_path / "none").exists()
