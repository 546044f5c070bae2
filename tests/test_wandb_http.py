"""The wandb SDK (offline, no server) as the judge of http(s) references.

The same references are made in both tools, against nginx (ETag) and a bare http.server (no ETag),
and must give equal entries and artifact digests. Then a manifest W&B made of a file served without
an ETag, which pins nothing, goes through import, verify, download and the mount: never one byte of
it is served.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from refmount.manifest import CONTENT_MD5, Manifest
from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.server_http import HTTPDir, PlainServed
from tests.wandb_sdk import Ref, both, without_own_keys

WARNING = ("refmount: warning: 1 entry has nothing to pin its bytes by (no ETag, object version or content hash) "
           "and {}: config.json")  # fmt: skip


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.fixture
def weak_dir(plain_http: PlainServed, tmp_path: Path) -> HTTPDir:
    """A fresh directory whose files the bare server sends with a weak ETag."""
    (plain_http.root / "weak" / tmp_path.name).mkdir(parents=True)
    return HTTPDir(plain_http.root / "weak" / tmp_path.name, f"{plain_http.url}/weak/{tmp_path.name}")


def test_same_entries_and_digest_as_wandb(wandb: Any, nginx_dir: HTTPDir, plain_dir: HTTPDir,
                                          weak_dir: HTTPDir) -> None:  # fmt: skip
    tagged = nginx_dir.put("model.bin", os.urandom(3000))
    untagged = plain_dir.put("config.json", b'{"k":1}')
    weak = weak_dir.put("w.bin", b"weakly tagged")
    refs: list[Ref] = [
        (tagged, None, True),
        (tagged, "weights/best.bin", True),
        (tagged, "location.bin", False),
        (untagged, None, True),
        (untagged, "conf/c.json", True),
        (untagged, "untagged-location.json", False),
        (weak, None, True),
    ]
    theirs, ours = both(wandb, refs)
    wandb_contents = theirs.manifest.to_manifest_json()["contents"]
    contents = ours.manifest.to_json()["contents"]
    assert without_own_keys(contents) == wandb_contents
    assert ours.manifest.digest == theirs.digest
    assert contents["config.json"]["digest"] == untagged  # W&B's digest for a file without an ETag
    assert contents["config.json"]["extra"] == {CONTENT_MD5: b64md5(b'{"k":1}')}  # refmount's pin
    assert contents["w.bin"]["digest"] == wandb_contents["w.bin"]["digest"] != contents["w.bin"]["extra"]["etag"]
    assert all(e.pinned == (e.size is not None) for e in ours.manifest)  # only the locations are unpinned


def test_redirected_url_gets_the_digest_wandb_gives_it(wandb: Any, plain_dir: HTTPDir) -> None:
    """W&B's digest of a file without an ETag is the URL the body came from, after redirects
    (http.server redirects a directory named without its '/'); refmount's ref stays the URL given."""
    plain_dir.put("listed/a.txt", b"a")
    url = f"{plain_dir.url}/listed"
    theirs, ours = both(wandb, [(url, None, True)])
    (theirs_entry,) = theirs.manifest.to_manifest_json()["contents"].items()
    (entry,) = ours.manifest
    assert (entry.path, entry.digest, entry.size) == (theirs_entry[0], url + "/", theirs_entry[1]["size"])
    assert theirs_entry[1]["ref"] == url + "/" and entry.ref == url and entry.pinned
    assert ours.manifest.digest == theirs.digest


def test_wandb_reads_refmount_manifests(wandb: Any, nginx_dir: HTTPDir, plain_dir: HTTPDir) -> None:
    from wandb.sdk.artifacts.artifact_manifests.artifact_manifest_v1 import ArtifactManifestV1

    _, ours = both(wandb, [(nginx_dir.put("m.bin", b"tagged"), None, True),
                           (plain_dir.put("c.json", b"{}"), None, True)])  # fmt: skip
    data = ours.manifest.to_json()
    read = ArtifactManifestV1.from_manifest_json(json.loads(json.dumps(data)))
    assert read.digest() == ours.manifest.digest
    assert read.to_manifest_json()["contents"] == data["contents"]  # the content MD5 survives a trip through W&B


def test_wandb_file_locations_are_unpinned(wandb: Any, tmp_path: Path) -> None:
    """W&B's checksum=False digest of a file:// reference is the MD5 of its URI: it looks like a
    content MD5 but pins nothing."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    theirs = wandb.Artifact("files", type="dataset")
    theirs.add_reference(file_uri(data), checksum=False)
    theirs.add_reference(file_uri(data / "a.txt"), name="pinned.txt")
    manifest = Manifest.from_json(theirs.manifest.to_manifest_json())
    assert {e.path: e.pinned for e in manifest} == {"a.txt": False, "pinned.txt": True}


@pytest.fixture
def wandb_manifest(wandb: Any, nginx_dir: HTTPDir, plain_dir: HTTPDir, tmp_path: Path) -> tuple[Path, str, HTTPDir]:
    """A manifest W&B made: model.bin (nginx, an ETag) and config.json (no ETag: nothing pins it).
    Returns its file, its artifact digest and where config.json is served from."""
    art = wandb.Artifact("wb", type="dataset")
    art.add_reference(nginx_dir.put("model.bin", b"weights"))
    art.add_reference(plain_dir.put("config.json", b'{"k":1}'))
    path = tmp_path / "wandb-manifest.json"
    path.write_text(json.dumps(art.manifest.to_manifest_json()))
    return path, art.digest, plain_dir


def test_wandb_entry_without_etag_imports_with_a_warning(wandb_manifest: tuple[Path, str, HTTPDir],
                                                        cli: Cli) -> None:  # fmt: skip
    path, digest, _ = wandb_manifest
    result = cli("import", str(path), "web/wb", "--json")
    assert result.json()["digest"] == digest and result.json()["unpinned"] == 1
    assert result.err.strip() == WARNING.format("will not be served")
    again = cli("import", str(path), "web/wb")  # kept in the manifest: same digest, no new version
    assert again.out == "unchanged, still web/wb:v0\n" and again.err.strip() == WARNING.format("will not be served")
    assert json.loads(cli("export", "web/wb").out) == json.loads(path.read_text())


def test_verify_reports_unpinned_entries_and_strict_fails(wandb_manifest: tuple[Path, str, HTTPDir],
                                                         cli: Cli) -> None:  # fmt: skip
    path, _, plain = wandb_manifest
    cli("import", str(path), "web/wb")
    result = cli("verify", "web/wb", "-q")
    assert result.out == "1 of 2 references resolve to their logged versions, 1 unpinned, not checked\n"
    assert result.err.strip() == WARNING.format("cannot be verified")
    plain.put("config.json", b'{"k":2}')  # changed at the same size: nothing can tell
    strict = cli("verify", "web/wb", "-q", "--strict", ok=False)
    assert strict.code == 5 and strict.out == result.out
    assert strict.err.splitlines() == [
        WARNING.format("cannot be verified"),
        "refmount: error: 1 unpinned entry (--strict)",
    ]
    assert "--strict" in cli("verify", "--help").out and "with --strict, 5" in cli("verify", "--help").out


def test_download_skips_unpinned_entries_with_a_warning(
    wandb_manifest: tuple[Path, str, HTTPDir], cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))
    path, _, _ = wandb_manifest
    cli("import", str(path), "web/wb")
    result = cli("download", "web/wb", str(tmp_path / "out"), "-q")
    assert (tmp_path / "out/model.bin").read_bytes() == b"weights" and not (tmp_path / "out/config.json").exists()
    assert result.out == "1 written (7 B), 0 already there, 1 not downloaded\n"
    assert result.err.strip() == WARNING.format("cannot be downloaded")


def test_mount_never_serves_an_unpinned_entry(wandb_manifest: tuple[Path, str, HTTPDir], cli: Cli,
                                              mount_factory: Any) -> None:  # fmt: skip
    path, _, plain = wandb_manifest
    cli("import", str(path), "web/wb")
    version = mount_factory().path / "web/wb/v0"
    assert (version / "model.bin").read_bytes() == b"weights"
    for content in (b'{"k":1}', b'{"k":2}'):  # as logged, then changed at the same size
        plain.put("config.json", content)
        with pytest.raises(OSError) as info:
            (version / "config.json").read_bytes()
        assert info.value.errno in (errno.EIO, errno.ENOENT)


def test_mount_hides_an_unpinned_entry(wandb_manifest: tuple[Path, str, HTTPDir], cli: Cli,
                                       mount_factory: Any) -> None:  # fmt: skip
    path, _, _ = wandb_manifest
    cli("import", str(path), "web/wb")
    version = mount_factory().path / "web/wb/v0"
    assert sorted(os.listdir(version)) == ["model.bin"]
    assert not (version / "config.json").exists()


def test_relogging_a_changed_file_without_etag_makes_a_new_version(plain_dir: HTTPDir, cli: Cli) -> None:
    """Its digest (the URL) stays the same; its content MD5 does not: the new bytes must be loggable."""
    url = plain_dir.put("config.json", b'{"k":1}')
    first = cli("log", "web/conf", url, "--json").json()
    assert not cli("log", "web/conf", url, "--json").json()["created"]
    plain_dir.put("config.json", b'{"k":2}')
    second = cli("log", "web/conf", url, "--json").json()
    assert second["created"] and second["name"] == "web/conf:v1" and second["digest"] == first["digest"]
    pins = [json.loads(cli("export", f"web/conf:v{i}").out)["contents"]["config.json"]["extra"] for i in (0, 1)]
    assert pins == [{CONTENT_MD5: b64md5(b'{"k":1}')}, {CONTENT_MD5: b64md5(b'{"k":2}')}]


def test_both_versions_of_a_file_without_etag_read_their_own_bytes(
    plain_dir: HTTPDir, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One URL (= digest) for two contents: the block cache must not hand one version the other's blocks."""
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))
    url = plain_dir.put("config.json", b'{"k":1}')
    cli("log", "web/conf", url)
    cli("download", "web/conf:v0", str(tmp_path / "v0"), "-q")  # v0's bytes now in the block cache
    plain_dir.put("config.json", b'{"k":2}')
    cli("log", "web/conf", url)
    cli("download", "web/conf:v1", str(tmp_path / "v1"), "-q")
    assert (tmp_path / "v1/config.json").read_bytes() == b'{"k":2}'
    cached = cli("download", "web/conf:v0", str(tmp_path / "v0-again"), "-q")  # from the cache: still v0's bytes
    assert (tmp_path / "v0-again/config.json").read_bytes() == b'{"k":1}' and "1 written" in cached.out
