"""Real HTTP servers on 127.0.0.1: nginx (ETag, Range, If-Match) and a bare Python http.server.

nginx is Debian's package, run in the foreground with a private config and prefix (it does not
start on install here). The Python server is the opposite case: no ETag, Range ignored (always
200 with the whole file) and HEAD refused, as some simple servers do; it also runs behind a
self-signed certificate to show that TLS is verified.
"""

from __future__ import annotations

import collections
import hashlib
import http.server
import itertools
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.servers import DirectoryBackend, free_port, http_ok, start_process

GCS_DENIAL = "tester@example.com does not have storage.objects.list access to the bucket."
_NGINX_CONF = """\
daemon off;
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 128; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /moved/ {{ rewrite ^/moved/(.*)$ /$1 redirect; }}
        location /denied/ {{ return 403; }}
        # Answers every request the way GCS's JSON API refuses access (a GCS endpoint for error tests).
        location /gcs-denied/ {{
            default_type application/json;
            return 403 '{{"error": {{"code": 403, "message": "{gcs_denial}"}}}}';
        }}
    }}
}}
"""


@dataclass
class Served:
    """A directory and the base URL it is served at."""

    root: Path
    url: str


@pytest.fixture(scope="session")
def nginx() -> Iterator[Served]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx not found: apt-get install nginx (scripts/setup.sh --test does)")
    prefix = Path(tempfile.mkdtemp(prefix="refmount-nginx-"))
    root = prefix / "www"
    for sub in ("tmp", "www", "logs"):
        (prefix / sub).mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(prefix=prefix, port=port, root=root, gcs_denial=GCS_DENIAL))
    url = f"http://127.0.0.1:{port}"
    try:
        with start_process([binary, "-p", str(prefix), "-c", str(conf)], http_ok(url + "/")):
            yield Served(root, url)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


class _PlainHandler(http.server.SimpleHTTPRequestHandler):
    """http.server as it is (no ETag, no Range), minus HEAD; it counts GETs per path.

    Files under ``/weak/`` get a weak ETag, and ``If-Match`` there always fails, as RFC 9110's
    strong comparison demands of a weak validator.
    """

    def __init__(self, *args: Any, gets: collections.Counter[str], **kwargs: Any) -> None:
        self.gets = gets
        super().__init__(*args, **kwargs)

    def do_HEAD(self) -> None:
        self.send_error(501, "HEAD not supported")

    def do_GET(self) -> None:
        self.gets[self.path] += 1
        if self.path.startswith("/weak/") and "If-Match" in self.headers:
            self.send_error(412, "a weak ETag never matches If-Match")
            return
        super().do_GET()

    def end_headers(self) -> None:
        local = Path(self.translate_path(self.path))
        if self.path.startswith("/weak/") and local.is_file():
            self.send_header("ETag", f'W/"{hashlib.md5(local.read_bytes()).hexdigest()}"')
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class PlainServed(Served):
    gets: collections.Counter[str]  # GET requests per URL path, as the server saw them


@contextmanager
def _python_server(tls: ssl.SSLContext | None = None) -> Iterator[PlainServed]:
    root = Path(tempfile.mkdtemp(prefix="refmount-python-http-"))
    gets: collections.Counter[str] = collections.Counter()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_PlainHandler, directory=str(root), gets=gets))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="python-http", daemon=True)
    thread.start()
    try:
        yield PlainServed(root, f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}", gets)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def plain_http() -> Iterator[PlainServed]:
    with _python_server() as served:
        yield served


@dataclass
class TLSServed(Served):
    ca_bundle: Path  # the self-signed certificate: trusted only when a client is told to


@pytest.fixture(scope="session")
def self_signed_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServed]:
    certs = tmp_path_factory.mktemp("tls")
    cert, key = certs / "cert.pem", certs / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with _python_server(context) as served:
        yield TLSServed(served.root, served.url, cert)


_dirs = itertools.count()


@dataclass
class HTTPDir:
    """A fresh directory on one server; ``put`` writes a file and returns its URL."""

    root: Path
    url: str

    def put(self, name: str, body: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return f"{self.url}/{name}"


def fresh_dir(served: Served) -> HTTPDir:
    name = f"t{next(_dirs)}"
    (served.root / name).mkdir()
    return HTTPDir(served.root / name, f"{served.url}/{name}")


@pytest.fixture
def nginx_dir(nginx: Served) -> HTTPDir:
    return fresh_dir(nginx)


@pytest.fixture
def plain_dir(plain_http: PlainServed) -> HTTPDir:
    return fresh_dir(plain_http)


class NginxBackend(DirectoryBackend):
    """nginx as the store contract tests use it (see tests.servers.StoreBackend): one file per reference."""

    lists: ClassVar[bool] = False

    @property
    def origin(self) -> str:
        return self.url

    def route(self, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Callable[[str], str]:
        return lambda ref: ref.replace(self.url, endpoint, 1)  # the server is named in each URL

    def without_credentials(self, monkeypatch: pytest.MonkeyPatch) -> None:
        return None  # refmount sends none to HTTP servers


@pytest.fixture
def http_backend(nginx: Served) -> NginxBackend:
    return NginxBackend(nginx.root, nginx.url)


@dataclass
class StallingServer:
    """An HTTP file whose answers to ``stall`` requests (GET or HEAD; none when empty) wait until the test
    releases them (at most a minute)."""

    url: str
    body: bytes
    stall: str = "GET"  # or "HEAD"
    arrived: threading.Event = field(default_factory=threading.Event)  # a stalled request came in
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)  # the methods asked, in order


@pytest.fixture
def stalling_http() -> Iterator[StallingServer]:
    body = b"slow" * 1024

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self._answer(b"")

        def do_GET(self) -> None:
            self._answer(body)

        def _answer(self, content: bytes) -> None:
            served.requests.append(self.command)
            if self.command == served.stall:
                served.arrived.set()
                served.release.wait(60)
            try:
                self.send_response(200)
                self.send_header("ETag", '"slow-1"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(content)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the interrupted client is gone

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served = StallingServer(f"http://127.0.0.1:{server.server_port}/slow.bin", body)
    thread = threading.Thread(target=server.serve_forever, name="stalling-http", daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.release.set()
        server.shutdown()
        server.server_close()
        thread.join()
