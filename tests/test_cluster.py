"""Several "nodes" on one PostgreSQL registry; database outages; systemd readiness through the daemon."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.mounts import is_mounted, wait_for
from tests.server_postgres import Postgres


def write_tree(root: Path, tag: str) -> None:
    for rel in ("train/a.bin", "train/b.bin", "labels.csv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(f"{tag}:{rel}".encode() * 100)


def test_two_nodes_share_one_registry(cli: Cli, postgres_url: str, tmp_path: Path, mount_factory: Any) -> None:
    write_tree(tmp_path / "v0", "v0")
    cli("log", "vision/mnist", file_uri(tmp_path / "v0"), "--registry", postgres_url)
    nodes = [mount_factory(registry_url=postgres_url, cache_dir=tmp_path / f"node{n}-cache") for n in range(2)]
    for node in nodes:
        assert os.readlink(node.path / "vision/mnist/latest") == "v0"
    write_tree(tmp_path / "v1", "v1")
    cli("log", "vision/mnist", file_uri(tmp_path / "v1"), "--registry", postgres_url)  # a third process
    for node in nodes:
        wait_for(lambda node=node: os.readlink(node.path / "vision/mnist/latest") == "v1", "the new version")
    contents = [(node.path / "vision/mnist/latest/labels.csv").read_bytes() for node in nodes]
    assert contents[0] == contents[1] == (tmp_path / "v1/labels.csv").read_bytes()
    assert all((node.cache_dir / "manifests").is_dir() for node in nodes)  # manifests indexed locally


def test_database_outage(cli: Cli, postgres: Postgres, postgres_url: str, tmp_path: Path, mount_factory: Any) -> None:
    write_tree(tmp_path / "v0", "v0")
    write_tree(tmp_path / "v1", "v1")
    cli("log", "p/ds", file_uri(tmp_path / "v0"), "--registry", postgres_url)
    cli("log", "p/ds", file_uri(tmp_path / "v1"), "--registry", postgres_url)
    cli("log", "p/other", file_uri(tmp_path / "v0"), "--registry", postgres_url)
    node = mount_factory(registry_url=postgres_url, alias_ttl=0.5)
    assert sorted(os.listdir(node.path / "p")) == ["ds", "other"]
    assert os.listdir(node.path / "p/ds") == ["v0", "v1", "latest"]  # both resolved, neither looked inside
    assert (node.path / "p/ds/v0/labels.csv").exists()  # p/ds:v0's index is now local
    postgres.stop()
    try:
        time.sleep(1)  # let the namespace answers expire
        assert (node.path / "p/ds/v0/train/b.bin").read_bytes() == (tmp_path / "v0/train/b.bin").read_bytes()
        assert os.readlink(node.path / "p/ds/latest") == "v1"
        for never_looked_at in ("p/other", "p/ds/v1"):  # these need the database
            with pytest.raises(OSError) as info:
                os.listdir(node.path / never_looked_at)
            assert info.value.errno == errno.EIO
        assert node.log().count("is unavailable") == 1 and "unexpected error" not in node.log()
    finally:
        postgres.start()
    wait_for(lambda: _lists(node.path / "p/other"), "recovery after the database came back")
    assert "reachable again" in node.log()


def _lists(path: Path) -> bool:
    try:
        return "v0" in os.listdir(path)
    except OSError:
        return False


def test_systemd_notify_ready_and_stopping(tmp_path: Path, registry_url: str, cli: Cli) -> None:
    write_tree(tmp_path / "src", "x")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": address, "REFMOUNT_REGISTRY": registry_url,
               "REFMOUNT_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-m", "refmount", "mount", "--foreground", str(mnt)], env=env,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            assert sock.recv(100) == b"READY=1"
            assert (mnt / "p/ds/v0/labels.csv").exists()  # READY came only once the mount answered
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(100) == b"STOPPING=1"
            assert proc.wait(15) == 0
            assert not is_mounted(mnt)
        finally:
            if proc.poll() is None:
                proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def test_listing_versions_copies_no_manifest(cli: Cli, postgres_url: str, tmp_path: Path, mount_factory: Any) -> None:
    for tag in ("v0", "v1", "v2"):
        write_tree(tmp_path / tag, tag)
        cli("log", "p/ds", file_uri(tmp_path / tag), "--registry", postgres_url)
    node = mount_factory(registry_url=postgres_url)
    copies = node.cache_dir / "manifests"
    assert sorted(os.listdir(node.path / "p/ds")) == ["latest", "v0", "v1", "v2"]
    assert not copies.exists() or not any(copies.glob("*.db"))  # a manifest is copied only when entered
    assert (node.path / "p/ds/v1/labels.csv").read_bytes() == (tmp_path / "v1/labels.csv").read_bytes()
    assert len(list(copies.glob("*.db"))) == 1
    assert sorted(os.listdir(node.path / "p/ds/latest/train")) == ["a.bin", "b.bin"]
    assert len(list(copies.glob("*.db"))) == 2
