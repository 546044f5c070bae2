"""What every store does, against every scheme's real server: one suite, parametrised by scheme.

A scheme's server and what these tests ask of it (a :class:`tests.servers.StoreBackend`) live beside each other
(tests/servers.py, tests/server_*.py); adding a scheme adds one line to ``BACKENDS`` (and leaves it out of
LISTING, CREDENTIALED or NETWORKED where the scheme has no such thing). Store-specific behaviour
(versions, folder markers, odd keys, spooling) stays in tests/test_store_<scheme>.py.
"""

from __future__ import annotations

import dataclasses
import re
import time

import pytest

from refmount.errors import ChangedObject, NotFound, StoreError, TooManyObjects
from refmount.manifest import Entry
from refmount.stores import RetryPolicy, Stores, parse, store_for
from tests.servers import FlakyProxy, StoreBackend, never_answering

BACKENDS = [
    "s3_backend",  # moto_server (tests/servers.py)
    "gs_backend",  # fake-gcs-server (tests/server_gcs.py)
    "az_backend",  # Azurite (tests/server_azure.py)
    "http_backend",  # nginx (tests/server_http.py)
    "file_backend",  # a local directory (tests/servers.py)
]
# What only some schemes have: each test runs on the backends it applies to (and checks they do), not skipped.
LISTING = [name for name in BACKENDS if name != "http_backend"]  # a prefix expands into objects
CREDENTIALED = [name for name in BACKENDS if name not in ("http_backend", "file_backend")]
NETWORKED = [name for name in BACKENDS if name != "file_backend"]
BODY = bytes(range(256)) * 40


def _id(name: str) -> str:
    return name.removesuffix("_backend")


@pytest.fixture(params=BACKENDS, ids=_id)
def backend(request: pytest.FixtureRequest) -> StoreBackend:
    return request.getfixturevalue(request.param)


def only(names: list[str]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("backend", names, ids=_id, indirect=True)


def scan(uri: str, **kw) -> list[Entry]:
    return list(store_for(uri).scan(parse(uri), **kw))


def logged(backend: StoreBackend, key: str = "k.bin", body: bytes = BODY) -> Entry:
    uri = f"{backend.base()}/{key}"
    backend.put(uri, body)
    (entry,) = scan(uri)
    return entry


def one_line(error: BaseException, *about: str) -> str:
    message = str(error)
    assert "\n" not in message and all(name in message for name in about), message
    return message


@only(LISTING)
def test_scan_of_a_prefix(backend: StoreBackend) -> None:
    assert backend.lists
    base = backend.base()
    for key, body in {"data/a.txt": b"a", "data/sub/deep/b.bin": b"bb", "data2/x": b"sibling"}.items():
        backend.put(f"{base}/{key}", body)
    for uri in (f"{base}/data", f"{base}/data/"):
        entries = {e.path: e for e in scan(uri)}
        assert set(entries) == {"a.txt", "sub/deep/b.bin"}  # data2/ is a sibling, not inside
    a = entries["a.txt"]
    assert a.size == 1 and a.ref == f"{base}/data/a.txt" and a.digest and a.is_snapshot
    assert {e.path for e in scan(f"{base}/data", name="imgs")} == {"imgs/a.txt", "imgs/sub/deep/b.bin"}
    with pytest.raises(TooManyObjects, match="max_objects=1"):
        scan(f"{base}/data/", max_objects=1)
    with pytest.raises(NotFound):
        scan(f"{base}/nothing/")


def test_scan_of_one_object(backend: StoreBackend) -> None:
    uri = f"{backend.base()}/models/cnn/model.h5"
    backend.put(uri, b"weights")
    (entry,) = scan(uri)
    assert (entry.path, entry.ref, entry.size) == ("model.h5", uri, 7) and entry.digest and entry.pinned
    (named,) = scan(uri, name="ckpt/best.h5")
    assert named.path == "ckpt/best.h5" and named.digest == entry.digest


def test_pinned_reads_of_a_range(backend: StoreBackend) -> None:
    entry = logged(backend)
    store = store_for(entry.ref)
    assert store.read(entry, 0, len(BODY)) == BODY
    assert store.read(entry, 1000, 17) == BODY[1000:1017]
    assert store.read(entry, len(BODY) - 5, 100) == BODY[-5:]
    assert store.read(entry, len(BODY), 10) == b"" and store.read(entry, 3, 0) == b""
    targets = [memoryview(bytearray(n)) for n in (100, 1000, 7)]
    assert store.read_into(entry, 50, targets) == 1107 and b"".join(map(bytes, targets)) == BODY[50:1157]
    store.check(entry)


@pytest.mark.parametrize("change", ["overwrite", "delete"])
def test_a_changed_object_is_never_read(backend: StoreBackend, change: str) -> None:
    entry = logged(backend)
    if change == "overwrite":
        backend.put(entry.ref, b"other bytes")
    else:
        backend.delete(entry.ref)
    store = store_for(entry.ref)
    with pytest.raises(ChangedObject) as info:
        store.read(entry, 0, 10)
    one_line(info.value, entry.path, entry.ref)
    with pytest.raises(ChangedObject):
        store.check(entry)


def test_a_missing_bucket_is_one_line(backend: StoreBackend) -> None:
    uri = backend.missing()
    with pytest.raises(NotFound) as info:
        scan(uri)
    assert one_line(info.value).startswith(uri)


@only(CREDENTIALED)
def test_no_credentials_is_one_line(backend: StoreBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = logged(backend)
    expected = backend.without_credentials(monkeypatch)
    assert expected is not None
    with pytest.raises(StoreError, match=expected) as info:
        store_for(entry.ref).read(entry, 0, 10)
    one_line(info.value)
    with pytest.raises(StoreError, match=expected):
        scan(entry.ref)


@only(NETWORKED)
def test_a_temporary_failure_is_retried_by_refmount_alone(backend: StoreBackend,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A 503 costs one more request, made by refmount's policy: no SDK retries hidden inside an attempt."""
    assert backend.origin is not None
    uri = f"{backend.base()}/k.bin"
    backend.put(uri, BODY)
    with FlakyProxy(backend.origin).serving() as proxy:
        uri = backend.route(monkeypatch, proxy.endpoint)(uri)
        (entry,) = scan(uri)
        store, before = store_for(entry.ref), proxy.requests
        assert store.read(entry, 10, 20) == BODY[10:30]
        plain = proxy.requests - before
        proxy.failures[:] = [503]
        before = proxy.requests
        assert store.read(entry, 10, 20) == BODY[10:30]
        assert proxy.requests - before == plain + 1 and not proxy.failures
        proxy.failures[:] = [503]
        before = proxy.requests
        assert scan(uri) == [entry]
        proxy.failures[:] = [503] * 10
        before = proxy.requests
        with pytest.raises(StoreError, match="503") as info:
            scan(uri)
        assert "giving up after 4 attempts" in one_line(info.value, uri)
        assert proxy.requests - before == 4  # one request per attempt: an SDK retrying inside would make more


@only(NETWORKED)
def test_an_endpoint_that_never_answers_costs_the_deadline(backend: StoreBackend,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Timeouts are per attempt, and no attempt starts past the deadline: the reader is let go in about
    ``deadline + read_timeout``, with one line that says so (not attempts x the SDKs' own retries)."""
    assert backend.origin is not None
    entry = logged(backend)
    policy = RetryPolicy(connect_timeout=1.0, read_timeout=0.5, base_delay=0.1, deadline=1.5)
    with never_answering() as endpoint:
        entry = dataclasses.replace(entry, ref=backend.route(monkeypatch, endpoint)(entry.ref))
        store = Stores(policy=policy).store_for(entry.ref)
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            store.read(entry, 0, 10)
        elapsed = time.monotonic() - start
    assert elapsed < policy.deadline + policy.read_timeout + 0.5, elapsed
    assert re.search(r"giving up after [23] attempts", one_line(info.value, entry.ref))
