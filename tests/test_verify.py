"""`refmount verify` at listing speed: listings of shared prefixes on S3 (moto), GCS (fake-gcs-server) and
Azure (Azurite) find what the per-object checks find, with far fewer requests (counted on the clients);
a missing bucket ends verify with one line (see also test_download.py)."""

from __future__ import annotations

import collections
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import trio
import urllib3

import refmount.stores
from refmount import verify as verify_module
from refmount.registry import open_registry
from refmount.stores import store_for
from refmount.stores.gcs import _GCSFileSystem
from refmount.stores.s3_listing import ListingPages
from refmount.verify import Report, verify
from tests.conftest import Cli
from tests.server_azure import AzureEnv
from tests.server_gcs import GCSEnv
from tests.servers import S3Env

N = 40  # entries under one prefix: one listing page


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))


def run_verify(registry_url: str, target: str, *, per_object: bool = False) -> Report:
    """Verify in this process, where the store clients' requests can be counted."""
    project, _, artifact = target.partition("/")
    registry = open_registry(registry_url)
    try:
        version = registry.resolve(project, artifact, "latest")
        return trio.run(lambda: verify(registry, version, per_object=per_object))
    finally:
        registry.close()


def problems(report: Report) -> dict[str, str]:
    return {p.path: p.message.partition("): ")[2] for p in report.problems}


def same_as_per_object(registry_url: str, target: str, listed: Report) -> None:
    """The listing decides exactly as one request per entry does: same entries, same words."""
    alone = run_verify(registry_url, target, per_object=True)
    assert alone.list_requests == 0 and alone.object_requests == alone.files
    assert sorted(listed.problems, key=str) == sorted(alone.problems, key=str) and listed.kept == alone.kept


@pytest.fixture
def s3_requests(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """S3 requests made in this process, by operation: counted where botocore's and the listing's own
    requests both go (urllib3), not by botocore's events, which the listing's requests skip."""
    counts: collections.Counter[str] = collections.Counter()
    urlopen = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def counted(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query, keep_blank_values=True)
        operation = "ListObjectVersions" if "versions" in query else "ListObjectsV2" if "list-type" in query else None
        counts.update([operation or f"{method.title()}Object"])
        return urlopen(self, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "urlopen", counted)
    return counts


@pytest.mark.parametrize("versioned", [False, True])
def test_s3_listing_finds_changed_and_deleted_objects(cli: Cli, registry_url: str, s3_env: S3Env, versioned: bool,
                                                      s3_requests: collections.Counter[str]) -> None:  # fmt: skip
    b = s3_env.bucket(versioned=versioned)
    for i in range(N):
        s3_env.put(b, f"d/{i:02}", b"%d" % i)
    s3_env.put(b, "d/odd key+ü%.bin", b"listed URL-encoded")
    s3_env.put(b, "elsewhere", b"not logged")
    cli("log", "p/ds", f"s3://{b}/d/")
    s3_requests.clear()
    report = run_verify(registry_url, "p/ds")
    assert report.kept == N + 1 and not report.problems and report.listed == N + 1
    assert s3_requests == {"ListObjectVersions" if versioned else "ListObjectsV2": 1}  # not one per entry
    assert store_for("s3").listing_pages.usable  # read without botocore's parser (see s3_listing)

    s3_env.put(b, "d/01", b"overwritten")
    s3_env.client.delete_object(Bucket=b, Key="d/02")  # a delete marker in a versioned bucket
    if versioned:  # the logged version itself removed
        old = s3_env.client.list_object_versions(Bucket=b, Prefix="d/03")["Versions"][0]["VersionId"]
        s3_env.client.delete_object(Bucket=b, Key="d/03", VersionId=old)
    s3_requests.clear()
    report = run_verify(registry_url, "p/ds")
    if versioned:  # logged versions stay readable after an overwrite or a delete marker
        assert problems(report) == {"03": "the object was deleted"}
    else:
        assert problems(report) == {"01": "the object was overwritten (ETag differs)", "02": "the object was deleted"}
    assert report.kept == N + 1 - len(report.problems) and sum(s3_requests.values()) == 1
    same_as_per_object(registry_url, "p/ds", report)


def test_a_listing_stops_at_its_budget_and_the_rest_is_asked_alone(
    cli: Cli, registry_url: str, s3_env: S3Env, s3_requests: collections.Counter[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Three entries in a prefix of many other objects: the listing covers 5 objects per entry (scaled
    down from 100, with pages of 10), then the entries it has not reached get a HEAD each."""
    monkeypatch.setattr(verify_module, "LISTED_PER_ENTRY", 5)
    monkeypatch.setattr(refmount.stores.s3, "_PAGE_SIZE", 10)
    monkeypatch.setattr(ListingPages, "page", lambda *_: None)  # as when it fails: pages through botocore
    b = s3_env.bucket()
    for key in ("d/a", "d/m", "d/z", *(f"d/f{i:02}" for i in range(40))):
        s3_env.put(b, key, key.encode())
    cli("log", "p/few", *(f"s3://{b}/d/{k}" for k in "amz"))
    s3_env.client.delete_object(Bucket=b, Key="d/z")
    s3_requests.clear()
    report = run_verify(registry_url, "p/few")
    assert s3_requests == {"ListObjectsV2": 2, "HeadObject": 2}  # 15 objects listed: d/a decided there
    assert report.listed == 1 and report.kept == 2 and problems(report) == {"z": "the object was deleted"}


def test_gcs_listing_finds_changed_and_deleted_objects(cli: Cli, registry_url: str, gcs_env: GCSEnv,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    requests = count_gcs_requests(monkeypatch)
    versioned, plain = gcs_env.bucket(versioned=True), gcs_env.bucket()
    for b in (versioned, plain):
        for i in range(N):
            gcs_env.put(b, f"d/{i:02}", b"%d" % i)
        cli("log", f"p/{b}", f"gs://{b}/d/")
        gcs_env.put(b, "d/01", b"overwritten")
        gcs_env.delete(b, "d/02")
    requests.clear()
    report = run_verify(registry_url, f"p/{versioned}")  # noncurrent generations are still there
    assert report.kept == N and not report.problems and requests == {("GET", "b/{}/o"): 1}
    report = run_verify(registry_url, f"p/{plain}")
    gone = "the logged generation no longer exists (overwritten or deleted)"
    assert problems(report) == {"01": gone, "02": gone} and report.kept == N - 2
    assert requests == {("GET", "b/{}/o"): 2}
    same_as_per_object(registry_url, f"p/{plain}", report)


def count_gcs_requests(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[tuple[str, str]]:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    request = _GCSFileSystem._request

    async def counted(self: Any, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        counts.update([(method, path)])
        return await request(self, method, path, *args, **kwargs)

    monkeypatch.setattr(_GCSFileSystem, "_request", counted)
    return counts


def test_azure_listing_finds_changed_and_deleted_blobs(cli: Cli, registry_url: str, azure_env: AzureEnv,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Azurite keeps no versions: entries are pinned by ETag (see tests/server_azure.py)."""
    from azure.core.pipeline.transport import RequestsTransport

    requests: list[str] = []
    send = RequestsTransport.send
    monkeypatch.setattr(RequestsTransport, "send", lambda self, request, **kw: requests.append(request.url) or
                        send(self, request, **kw))  # fmt: skip
    c = azure_env.container()
    for i in range(N):
        azure_env.put(c, f"d/{i:02}", b"%d" % i)
    cli("log", "p/az", f"az://{c}/d/")
    requests.clear()
    assert run_verify(registry_url, "p/az").kept == N and len(requests) == 1 and "comp=list" in requests[0]
    azure_env.put(c, "d/01", b"overwritten")
    azure_env.delete(c, "d/02")
    requests.clear()
    report = run_verify(registry_url, "p/az")
    assert problems(report) == {"01": "the blob was overwritten or deleted (If-Match failed)",
                                "02": "the blob or its logged version was deleted"}  # fmt: skip
    assert report.kept == N - 2 and len(requests) == 1
    same_as_per_object(registry_url, "p/az", report)


def test_verify_json(cli: Cli, s3_env: S3Env) -> None:
    b = s3_env.bucket()
    for i in range(3):
        s3_env.put(b, f"d/{i}", b"%d" % i)
    cli("log", "p/ds", f"s3://{b}/d/")
    s3_env.put(b, "d/1", b"changed")
    result = cli("verify", "p/ds", "--json", ok=False)
    assert result.code == 4 and result.err == ""
    report = result.json()
    assert report["version"] == "p/ds:v0" and report["references"] == 3 and report["resolved"] == 2
    assert report["failed"] == 1 and report["requests"] == {"list": 1, "per_object": 0}
    (problem,) = report["problems"]
    assert problem["path"] == "1" and problem["ref"] == f"s3://{b}/d/1" and "ETag differs" in problem["problem"]
    assert json.loads(cli("verify", "p/ds", "--json", "--per-object", ok=False).out)["requests"]["per_object"] == 3


def test_missing_bucket_ends_verify(cli: Cli, s3_env: S3Env) -> None:
    b = s3_env.bucket()
    for i in range(5):
        s3_env.put(b, f"d/{i}", b"%d" % i)
    cli("log", "p/ds", f"s3://{b}/d/")
    for i in range(5):
        s3_env.client.delete_object(Bucket=b, Key=f"d/{i}")
    s3_env.client.delete_bucket(Bucket=b)
    result = cli("verify", "p/ds", ok=False)
    assert result.code == 3 and result.err == f"refmount: error: s3://{b}/d/0: bucket '{b}' does not exist at " \
        f"{s3_env.endpoint}\n"  # fmt: skip
