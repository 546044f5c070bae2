"""Azurite's blob service (npm ``azurite@3.35``, the newest that runs on Node 20) on 127.0.0.1.

Azurite has no blob versioning (a bogus version id returns the current blob), so tests of pinned
Azure reads rely on If-Match only and never claim that version pinning was tested.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.servers import BucketBackend, free_port, http_ok, start_process

INSTALL_DIR = Path("/opt/refmount-test/azurite")  # where scripts/setup.sh --test installs it
ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account and key (public, not a secret)
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _binary() -> str:
    found = shutil.which("azurite-blob") or INSTALL_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not Path(found).exists():
        raise RuntimeError(f"azurite-blob not found: npm install --prefix {INSTALL_DIR} azurite@3.35 "
                           "(scripts/setup.sh --test does)")  # fmt: skip
    return str(found)


@dataclass
class Azurite:
    endpoint: str

    @property
    def connection_string(self) -> str:
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={self.endpoint};"


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    workspace = tempfile.mkdtemp(prefix="refmount-azurite-")
    port = free_port()
    # In memory: nothing to clean up and no disk writes; the workspace is only its working directory.
    argv = [_binary(), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence", "--silent",
            "--skipApiVersionCheck", "--disableTelemetry", "--loose"]  # fmt: skip
    try:
        with start_process(argv, http_ok(f"http://127.0.0.1:{port}/{ACCOUNT}?comp=list"), timeout=60, cwd=workspace):
            yield Azurite(f"http://127.0.0.1:{port}/{ACCOUNT}")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


_containers = itertools.count()


@dataclass
class AzureEnv:
    """An SDK client on Azurite plus helpers to make uniquely named containers."""

    client: Any
    server: Azurite

    def container(self) -> str:
        name = f"container-{os.getpid()}-{next(_containers)}"
        self.client.create_container(name)
        return name

    def put(self, container: str, key: str, body: bytes, **kwargs: Any) -> dict[str, Any]:
        """Upload (overwriting); returns the SDK's answer (``etag``, ``version_id``)."""
        return self.client.get_blob_client(container, key).upload_blob(body, overwrite=True, **kwargs)

    def delete(self, container: str, key: str) -> None:
        self.client.get_blob_client(container, key).delete_blob()


@pytest.fixture
def azure_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureEnv]:
    """Point refmount (and CLI subprocesses) at Azurite through AZURE_STORAGE_CONNECTION_STRING."""
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    for var in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield AzureEnv(BlobServiceClient.from_connection_string(azurite.connection_string), azurite)


class AzureBackend(BucketBackend):
    """Azurite as the store contract tests use it (see tests.servers.StoreBackend): containers are its buckets."""

    scheme: ClassVar[str] = "az"

    @property
    def origin(self) -> str:
        return self.env.server.endpoint.rpartition("/")[0]  # the endpoint without its account

    def base(self) -> str:
        return f"az://{self.env.container()}"

    def route(self, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Callable[[str], str]:
        connection_string = self.env.server.connection_string.replace(self.origin, endpoint)
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string)
        return str

    def without_credentials(self, monkeypatch: pytest.MonkeyPatch) -> str:
        monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
        return "no Azure storage account"


@pytest.fixture
def az_backend(azure_env: AzureEnv) -> AzureBackend:
    return AzureBackend(azure_env)
