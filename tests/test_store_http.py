"""http(s):// references against real nginx (ETag, Range, If-Match) and a bare Python http.server."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from refmount.errors import ChangedObject, InvalidInput, NotFound, StoreError, Unpinned
from refmount.manifest import CONTENT_MD5, Entry
from refmount.stores import parse, store_for
from refmount.stores.http import HTTPStore
from tests.conftest import Cli
from tests.server_http import HTTPDir, PlainServed, Served, TLSServed, fresh_dir
from tests.servers import free_port

BODY = bytes(range(256)) * 40


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def downloads(served: PlainServed, url: str) -> int:
    """How many GETs of ``url`` the server has answered."""
    return served.gets[urlsplit(url).path]


def scan(uri: str, **kw) -> list[Entry]:
    return list(store_for(uri).scan(parse(uri), **kw))


@pytest.fixture
def store() -> HTTPStore:
    s = store_for("http")
    assert isinstance(s, HTTPStore) and store_for("https") is s
    return s


def open_files(pid: int) -> list[str]:
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            links.append(os.readlink(fd))
    return links


def overwrite(directory: HTTPDir, name: str, body: bytes) -> None:
    """Replace a file so that nginx's ETag (mtime seconds + size) surely changes."""
    directory.put(name, body)
    os.utime(directory.root / name, (1, 1))


def test_scan_with_etag(nginx_dir: HTTPDir) -> None:
    url = nginx_dir.put("sub/model.bin", BODY)
    (entry,) = scan(url)
    quoted = entry.extra["etag"]
    assert quoted.startswith('"') and entry.digest == quoted.strip('"') and entry.etag == quoted
    assert entry.path == "model.bin" and entry.size == len(BODY) and entry.ref == url
    (named,) = scan(url, name="weights/best.bin", max_objects=1)
    assert named.path == "weights/best.bin" and named.digest == entry.digest
    (location,) = scan(url, checksum=False)
    assert location.digest == location.ref == url and not location.is_snapshot


def test_redirects_are_followed(nginx: Served, nginx_dir: HTTPDir) -> None:
    url = nginx_dir.put("a.txt", b"moved here")
    moved = url.replace(nginx.url, nginx.url + "/moved")
    (entry,) = scan(moved)
    assert entry.ref == moved and entry.size == 10 and entry.digest == scan(url)[0].digest
    assert store_for(moved).read(entry, 0, 5) == b"moved"


def test_scan_without_etag_keeps_the_url_as_digest_and_pins_the_content_md5(plain_dir: HTTPDir) -> None:
    url = plain_dir.put("data.csv", BODY)
    (entry,) = scan(url)  # the server refuses HEAD: the size comes from the streamed GET
    assert entry.digest == entry.ref == url and entry.size == len(BODY)  # W&B's digest: the URL
    assert entry.extra == {CONTENT_MD5: b64md5(BODY)} and entry.content_md5 == b64md5(BODY) and entry.pinned


def test_reads_of_entries_without_etag_or_content_md5_are_refused(plain_http: PlainServed, plain_dir: HTTPDir,
                                                                  store: HTTPStore) -> None:  # fmt: skip
    url = plain_dir.put("config.json", b'{"k":1}')
    wandb_made = Entry(path="config.json", ref=url, digest=url, size=7)  # as W&B records it: pins nothing
    location = Entry(path="config.json", ref=url, digest=url)  # checksum=False
    before = downloads(plain_http, url)
    for entry in (wandb_made, location):
        assert not entry.pinned
        for call in (lambda e: store.read(e, 0, 7), store.check):
            with pytest.raises(Unpinned, match="nothing to pin its bytes by") as info:
                call(entry)
            assert str(info.value).startswith(f"config.json: reference {url} ") and "\n" not in str(info.value)
    assert downloads(plain_http, url) == before  # refused without asking the server


def test_entries_logged_by_earlier_releases_still_read(plain_dir: HTTPDir, store: HTTPStore) -> None:
    """Before refmount took W&B's digest, an ETag-less file's digest was its base64 MD5: still a pin."""
    url = plain_dir.put("old.bin", BODY)
    old = Entry(path="old.bin", ref=url, digest=b64md5(BODY), size=len(BODY))
    assert old.pinned and store.read(old, 10, 5) == BODY[10:15]
    plain_dir.put("old.bin", BODY[::-1])
    with pytest.raises(ChangedObject, match="MD5 differs"):
        HTTPStore().read(old, 0, 10)


def test_one_url_two_contents_are_two_pins(plain_dir: HTTPDir, store: HTTPStore) -> None:
    """Both versions of a changed file have the URL as digest: the spool tells them apart by their MD5."""
    url = plain_dir.put("c.json", b'{"k":1}')
    (first,) = scan(url)
    assert store.read(first, 0, 7) == b'{"k":1}'  # now spooled
    plain_dir.put("c.json", b'{"k":2}')
    (second,) = scan(url)
    assert second.digest == first.digest and second.content_md5 != first.content_md5
    assert store.read(second, 0, 7) == b'{"k":2}'


def test_reads_with_etag_are_guarded_by_if_match(nginx_dir: HTTPDir, store: HTTPStore) -> None:
    url = nginx_dir.put("k.bin", BODY)
    (entry,) = scan(url)
    overwrite(nginx_dir, "k.bin", bytes(len(BODY)))  # same size, other bytes: only the ETag tells
    with pytest.raises(ChangedObject, match="If-Match failed"):
        store.read(entry, 0, 10)
    with pytest.raises(ChangedObject):
        store.check(entry)


def test_reads_without_etag_or_range_verify_the_md5(plain_http: PlainServed, plain_dir: HTTPDir) -> None:
    store = HTTPStore()  # a fresh store: nothing verified yet
    url = plain_dir.put("k.bin", BODY)
    (entry,) = scan(url)
    gets = downloads(plain_http, url)
    assert store.read(entry, 1000, 17) == BODY[1000:1017]  # the server answers 200: the body is sliced
    assert store.read(entry, len(BODY) - 5, 100) == BODY[-5:]
    assert store.read(entry, 0, len(BODY)) == BODY
    store.check(entry)
    assert downloads(plain_http, url) == gets + 1  # verified once, then served from the spool
    plain_dir.put("k.bin", bytes(len(BODY)))
    with pytest.raises(ChangedObject, match="MD5 differs"):
        HTTPStore().read(entry, 0, 10)
    with pytest.raises(ChangedObject, match="MD5 differs"):
        HTTPStore().check(entry)


def test_concurrent_reads_without_etag_share_one_download(plain_http: PlainServed, plain_dir: HTTPDir) -> None:
    url = plain_dir.put("shared.bin", BODY)
    (entry,) = scan(url)
    store, before = HTTPStore(), downloads(plain_http, url)
    with ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(lambda i: store.read(entry, i * 1024, 1024), range(10)))
    assert b"".join(parts) == BODY and downloads(plain_http, url) == before + 1


def test_spool_budget(plain_http: PlainServed, plain_dir: HTTPDir) -> None:
    urls = [plain_dir.put(f"{i}.bin", BODY) for i in range(2)]
    first, second = (scan(url)[0] for url in urls)
    before = downloads(plain_http, urls[0])
    store = HTTPStore(spool_bytes=len(BODY) + 1)  # room for one body: the least recently used one goes
    assert store.read(first, 0, 10) == BODY[:10] and store.read(second, 0, 10) == BODY[:10]
    assert store.read(first, 10, 10) == BODY[10:20] and downloads(plain_http, urls[0]) == before + 2
    too_small = HTTPStore(spool_bytes=len(BODY) - 1)  # the body is bigger than the budget: streamed each time
    before = downloads(plain_http, urls[0])
    assert too_small.read(first, 1000, 17) == BODY[1000:1017]
    assert too_small.read(first, len(BODY) - 5, 100) == BODY[-5:]
    assert too_small.read(first, 0, len(BODY)) == BODY
    assert downloads(plain_http, urls[0]) == before + 3  # nothing kept: each read verifies the whole body
    plain_dir.put("0.bin", BODY[::-1])
    with pytest.raises(ChangedObject, match="MD5 differs"):
        too_small.read(first, 0, 10)


def test_range_ignored_but_etag_sent(nginx: Served, nginx_dir: HTTPDir, plain_http: Served,
                                     store: HTTPStore) -> None:  # fmt: skip
    """An entry with an ETag read from a server that ignores Range and sends no ETag: still exact."""
    url = nginx_dir.put("same.bin", BODY)
    (entry,) = scan(url)
    elsewhere = fresh_dir(plain_http)
    moved = Entry(path=entry.path, ref=elsewhere.put("same.bin", BODY), digest=entry.digest, size=entry.size,
                  extra=entry.extra)  # fmt: skip
    assert store.read(moved, 100, 50) == BODY[100:150]
    elsewhere.put("same.bin", BODY[:-1])  # the size gives the change away
    with pytest.raises(ChangedObject, match="size is now"):
        store.read(moved, 100, 50)


def test_errors_are_one_line_and_name_the_url(nginx: Served, nginx_dir: HTTPDir) -> None:
    cases = {
        f"{nginx_dir.url}/nope": (NotFound, r"no such file \(HTTP 404"),
        f"{nginx.url}/denied/x": (StoreError, r"access denied \(HTTP 403"),
        f"http://127.0.0.1:{free_port()}/x": (StoreError, "cannot reach the server"),
    }
    for url, (error, message) in cases.items():
        with pytest.raises(error, match=message) as info:
            scan(url)
        assert str(info.value).startswith(url) and "\n" not in str(info.value)
    with pytest.raises(InvalidInput, match="no host"):
        scan("http:///x")


def test_tls_is_verified(self_signed_https: TLSServed, monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_dir(self_signed_https).put("f.txt", b"secure")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    with pytest.raises(StoreError, match="TLS verification failed"):
        scan(url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(self_signed_https.ca_bundle))  # trust it explicitly
    (entry,) = scan(url)
    assert entry.content_md5 == b64md5(b"secure") and store_for(url).read(entry, 0, 6) == b"secure"


def test_weak_etags_are_kept_and_checked(plain_http: Served, store: HTTPStore) -> None:
    weak = HTTPDir(plain_http.root / "weak", f"{plain_http.url}/weak")
    url = weak.put(f"w{os.getpid()}.bin", BODY)
    (entry,) = scan(url)
    assert entry.etag == f'W/"{hashlib.md5(BODY).hexdigest()}"'
    assert entry.digest == f'W/"{hashlib.md5(BODY).hexdigest()}'  # as wandb 0.31 records it: quotes stripped
    assert store.read(entry, 100, 50) == BODY[100:150]  # no If-Match sent: it could never match
    store.check(entry)
    weak.put(url.rpartition("/")[2], BODY[::-1])
    with pytest.raises(ChangedObject, match="ETag is now"):
        store.read(entry, 100, 50)


def test_cli_log_show_relog_and_change(nginx_dir: HTTPDir, plain_dir: HTTPDir, cli: Cli) -> None:
    model = nginx_dir.put("model.bin", BODY)
    labels = plain_dir.put("labels.csv", b"a,b\n")
    args = ("log", "models/cnn", model, labels, "--name", "weights/model.bin", "--name", "labels.csv", "--json")
    first = cli(*args).json()
    assert first["name"] == "models/cnn:v0" and first["files"] == 2
    contents = json.loads(cli("show", "models/cnn:v0", "--json").out)["contents"]
    assert contents["labels.csv"] == {"digest": labels, "ref": labels, "size": 4,
                                      "extra": {CONTENT_MD5: b64md5(b"a,b\n")}}  # fmt: skip
    assert contents["weights/model.bin"]["extra"]["etag"].strip('"') == contents["weights/model.bin"]["digest"]
    assert not cli(*args).json()["created"]
    overwrite(nginx_dir, "model.bin", BODY[::-1])
    assert cli(*args).json()["name"] == "models/cnn:v1"
    plain_dir.put("labels.csv", b"a,c\n")
    assert cli(*args).json()["name"] == "models/cnn:v2"
    result = cli("log", "models/cnn", f"{nginx_dir.url}/missing.bin", ok=False)
    assert "no such file" in result.err and len(result.err.strip().splitlines()) == 1, result.err


def test_download_and_verify(nginx_dir: HTTPDir, plain_dir: HTTPDir, cli: Cli, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))
    big = os.urandom((9 << 20) + 5)
    cli("log", "web/dl", nginx_dir.put("big.bin", big), plain_dir.put("plain.bin", big), "--name", "big.bin",
        "--name", "plain.bin")  # fmt: skip
    cli("download", "web/dl", str(tmp_path / "out"), "-q")
    assert (tmp_path / "out/big.bin").read_bytes() == big and (tmp_path / "out/plain.bin").read_bytes() == big
    assert "2 of 2 references resolve" in cli("verify", "web/dl", "-q").out
    overwrite(nginx_dir, "big.bin", big[::-1])
    plain_dir.put("plain.bin", big[::-1])
    result = cli("verify", "web/dl", "-q", ok=False)
    assert "0 of 2" in result.out and "If-Match failed" in result.err and "MD5 differs" in result.err
    result = cli("download", "web/dl", str(tmp_path / "again"), "--no-cache", "-q", ok=False)
    assert "FAILED" in result.out and not (tmp_path / "again/big.bin").exists()


def test_mount_reads_exact_bytes_and_fails_on_change(nginx_dir: HTTPDir, plain_dir: HTTPDir, plain_http: PlainServed,
                                                     cli: Cli, mount_factory: Any) -> None:  # fmt: skip
    big = os.urandom((9 << 20) + 123)  # more than one 8 MiB block: ranged reads through the kernel
    urls = [nginx_dir.put("big.bin", big), nginx_dir.put("small.bin", b"logged"), plain_dir.put("plain.bin", big)]
    cli("log", "web/files", *urls)
    m = mount_factory()
    version = m.path / "web/files/v0"
    assert (version / "big.bin").read_bytes() == big
    before = downloads(plain_http, urls[2])
    assert (version / "plain.bin").read_bytes() == big  # no ETag, no Range: whole body, MD5-verified
    assert downloads(plain_http, urls[2]) == before + 1  # once for both blocks, not once per block
    spooled = [link for link in open_files(m.proc.pid) if "refmount-http-" in link]
    assert spooled and all(link.startswith(f"{m.cache_dir}/tmp/") for link in spooled)  # not in /tmp
    overwrite(nginx_dir, "small.bin", b"LOGGED")
    with pytest.raises(OSError) as info:
        (version / "small.bin").read_bytes()
    assert info.value.errno == errno.EIO and "If-Match failed" in m.log()
