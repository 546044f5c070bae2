"""The stores' framework itself: stores registered by themselves (entry points), and Stores sets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from refmount.stores import Stores, schemes, store_class
from refmount.stores.azure import AzureStore
from refmount.stores.http import HTTPStore
from refmount.uri import registered_stores, store_scheme


def test_every_store_registered_serves_what_it_is_registered_for() -> None:
    assert schemes() == {"s3", "gs", "az", "http", "https", "file"}
    for name, target in registered_stores().items():
        cls = store_class(target)
        if name.startswith("*."):  # a host claimed among http(s) URLs
            assert store_scheme(f"https://account{name[1:]}/container/key") in cls.schemes
        else:
            assert name in cls.schemes


def test_azure_claims_its_blob_hosts_and_nothing_else() -> None:
    stores = Stores()
    for url in ("https://acct.blob.core.windows.net/c/k", "http://acct.blob.core.usgovcloudapi.net/c/k"):
        assert store_scheme(url) == "az" and isinstance(stores.store_for(url), AzureStore)
    for url in ("https://example.com/c/k", "https://blob.core.windows.net.example.com/k"):
        assert store_scheme(url) == "https" and isinstance(stores.store_for(url), HTTPStore)


def test_listing_stores_imports_none() -> None:
    """`refmount ls` must not pay for boto3 (or any SDK) to know the schemes."""
    sdks = ("boto3", "gcsfs", "azure.storage.blob", "requests")
    code = ("import sys, refmount.stores as s; s.parse('s3://b/k'); s.store_for('file:///x'); "
            f"print(sorted(m for m in {sdks!r} if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_changed_environment_builds_a_new_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """No reset hook: a store is rebuilt when the variables its clients are built from change."""
    stores = Stores()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    first = stores.store_for("gs://b/k")
    assert stores.store_for("gs://other/k") is first and stores.store_for("https://x/y") is stores.store_for("http://x")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:2")
    assert stores.store_for("gs://b/k") is not first
    assert Stores().store_for("file:///x") is not stores.store_for("file:///x")  # sets share nothing


def test_a_forked_child_builds_its_own_stores_and_keeps_the_inherited_ones() -> None:
    stores = Stores()
    inherited = stores.store_for("file:///x")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running anything of the parent's
        ok = stores.store_for("file:///x") is not inherited and inherited in stores._inherited
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert stores.store_for("file:///x") is inherited  # the parent's own are untouched
