"""A throwaway PostgreSQL cluster on a loopback port (Debian's packages), one database per test."""

from __future__ import annotations

import glob
import itertools
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Postgres:
    port: int
    bin_dir: Path
    data_dir: Path
    socket_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str) -> str:
        return subprocess.run([str(self.bin_dir / "psql"), "-X", "-q", "-At", "-d", self.url(), "-c", sql],
                              check=True, capture_output=True, text=True).stdout  # fmt: skip

    def pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres([str(self.bin_dir / "pg_ctl"), "-w", "-D", str(self.data_dir), "-o", options,
                      "-l", str(self.data_dir.parent / "server.log"), *args])  # fmt: skip

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self.pg_ctl("start")


def _as_postgres(argv: list[str]) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=60)


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found: run scripts/setup.sh --test (apt-get install postgresql)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    # Not under pytest's tmp dir: that one is private to root and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="refmount-pg-"))
    shutil.chown(root, "postgres")
    server = Postgres(_free_port(), _bin_dir(), root / "data", root)
    try:
        _as_postgres([str(server.bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(server.data_dir)])
        server.start()
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres: Postgres) -> str:
    """A fresh, empty database on the session's server."""
    name = f"test_{next(_databases)}"
    postgres.psql(f"CREATE DATABASE {name}")
    return postgres.url(name)
