"""`refmount download` and `refmount verify` through the real CLI (file:// and moto S3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from refmount.download import STAMP_XATTR
from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.servers import S3Env, free_port


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))


def tree(root: Path) -> dict[str, bytes]:
    files = {"a/b/c.bin": os.urandom(20_000), "top.txt": b"top", "empty": b"", "big.bin": os.urandom(9 << 20)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_download_is_exact_and_resumable(cli: Cli, tmp_path: Path) -> None:
    files = tree(tmp_path / "src")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    dest = tmp_path / "dest"
    assert "4 written" in cli("download", "p/ds", str(dest)).out
    assert read_tree(dest) == files
    (dest / "top.txt").write_bytes(b"TOP")  # damaged, same size: the MD5 catches it
    (dest / "a/b/c.bin").unlink()
    out = cli("download", "p/ds:v0", str(dest), "--no-cache").out
    assert "2 written" in out and "2 already there" in out
    assert read_tree(dest) == files


def test_download_refuses_to_leave_dest_and_reports_changed_sources(cli: Cli, tmp_path: Path) -> None:
    tree(tmp_path / "src")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    (dest / "a").symlink_to(elsewhere)  # a trap inside dest
    result = cli("download", "p/ds", str(dest), ok=False)
    assert "refusing to write outside" in result.err and not any(elsewhere.iterdir())
    (tmp_path / "src/top.txt").write_bytes(b"new")
    # (With the cache, the logged bytes fetched above would still be served: they are pinned.)
    result = cli("download", "p/ds", str(tmp_path / "dest2"), "--no-cache", ok=False)
    assert result.err.startswith("refmount: error: top.txt: reference ") and "no longer matches" in result.err
    assert "FAILED" in result.out
    assert not (tmp_path / "dest2/top.txt").exists() and not partials(tmp_path / "dest2")


def test_verify(cli: Cli, s3_env: S3Env, tmp_path: Path) -> None:
    versioned, plain = s3_env.bucket(versioned=True), s3_env.bucket()
    for b in (versioned, plain):
        for i in range(3):
            s3_env.put(b, f"d/{i}", b"%d" % i)
        cli("log", f"p/{b}", f"s3://{b}/d/")
    assert "3 of 3 references resolve" in cli("verify", f"p/{versioned}").out
    for b in (versioned, plain):
        s3_env.put(b, "d/1", b"changed")
    assert "3 of 3 references resolve" in cli("verify", f"p/{versioned}").out  # pinned versions are still there
    result = cli("verify", f"p/{plain}", ok=False)
    assert "2 of 3" in result.out and f"s3://{plain}/d/1" in result.err and result.code == 4


def test_download_from_s3_matches(cli: Cli, s3_env: S3Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = s3_env.bucket(versioned=True)
    body = os.urandom(3 << 20)
    s3_env.put(b, "m/model.bin", body)
    cli("log", "models/m", f"s3://{b}/m/")
    s3_env.put(b, "m/model.bin", b"newer")
    cli("download", "models/m", str(tmp_path / "out"), "-j", "2")
    assert (tmp_path / "out/model.bin").read_bytes() == body
    s3_env.put(b, "m2/other.bin", body)
    cli("log", "models/m2", f"s3://{b}/m2/")  # never downloaded: not in the block cache
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    result = cli("download", "models/m2", str(tmp_path / "none"), ok=False)
    assert "cannot reach the S3 endpoint" in result.err and "Traceback" not in result.err
    assert not any((tmp_path / "none").rglob("*.bin"))


def partials(dest: Path) -> list[Path]:
    return list(dest.rglob("*.refmount-part"))


def test_download_never_writes_through_planted_links(cli: Cli, tmp_path: Path) -> None:
    files = tree(tmp_path / "src")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (outside / "kept").write_bytes(b"mine")
    (dest / ".top.txt.refmount-part").symlink_to(outside / "kept")  # followed, it would be overwritten
    (dest / ".empty.refmount-part").symlink_to(outside / "new")  # followed, it would be created
    (outside / "big.bin").write_bytes(files["big.bin"])
    (dest / "big.bin").symlink_to(outside / "big.bin")  # the right bytes, but not in dest: replaced
    os.mkfifo(dest / "empty")  # replaced too, without hanging on its open
    assert "4 written" in cli("download", "p/ds", str(dest)).out
    assert read_tree(dest) == files and not any(p.is_symlink() for p in dest.rglob("*"))
    assert sorted(os.listdir(outside)) == ["big.bin", "kept"] and (outside / "kept").read_bytes() == b"mine"


def test_download_to_a_dest_that_cannot_be_created(cli: Cli, tmp_path: Path) -> None:
    tree(tmp_path / "src")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "loop").symlink_to("loop")
    for dest in (tmp_path / "file/x", Path("/proc/refmount-test/x"), tmp_path / "loop/x"):
        result = cli("download", "p/ds", str(dest), ok=False)
        assert result.err.startswith(f"refmount: error: cannot create {dest}: ") and result.code == 2
        assert len(result.err.splitlines()) == 1, result.err


def test_download_reports_what_is_in_the_way_per_file(cli: Cli, tmp_path: Path) -> None:
    files = tree(tmp_path / "src")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    dest = tmp_path / "dest"
    (dest / "top.txt").mkdir(parents=True)  # a directory where a file goes
    (dest / "a").write_bytes(b"")  # a file where a directory goes
    result = cli("download", "p/ds", str(dest), ok=False)
    assert "Traceback" not in result.err and result.code == 4
    assert "2 written" in result.out and "2 FAILED" in result.out
    assert sorted(result.err.splitlines()) == [
        f"refmount: error: a/b/c.bin: cannot create directory {dest / 'a/b'}: a file is in the way",
        f"refmount: error: top.txt: cannot write {dest / 'top.txt'}: Is a directory",
    ]
    assert read_tree(dest) == {"a": b"", "empty": b"", "big.bin": files["big.bin"]} and not partials(dest)


def test_download_keeps_s3_files_only_when_their_md5_is_known(cli: Cli, s3_env: S3Env, tmp_path: Path) -> None:
    b = s3_env.bucket()
    files = {"single.bin": os.urandom(1000), "multi.bin": os.urandom(5 << 20) + b"!"}
    s3_env.put(b, "d/single.bin", files["single.bin"])  # its ETag is its hex MD5
    upload = s3_env.client.create_multipart_upload(Bucket=b, Key="d/multi.bin")["UploadId"]
    parts = []
    for n, body in enumerate((files["multi.bin"][:-1], b"!"), 1):  # its ETag ends in "-2": no MD5
        part = s3_env.client.upload_part(Bucket=b, Key="d/multi.bin", UploadId=upload, PartNumber=n, Body=body)
        parts.append({"PartNumber": n, "ETag": part["ETag"]})
    s3_env.client.complete_multipart_upload(Bucket=b, Key="d/multi.bin", UploadId=upload,
                                            MultipartUpload={"Parts": parts})  # fmt: skip
    cli("log", "p/ds", f"s3://{b}/d/")
    dest = tmp_path / "dest"
    assert "2 written" in cli("download", "p/ds", str(dest)).out
    assert "2 already there" in cli("download", "p/ds", str(dest)).out  # the multipart copy by its stamp
    (dest / "single.bin").write_bytes(os.urandom(1000))  # damaged, same size: its ETag catches it
    (dest / "multi.bin").write_bytes(os.urandom(len(files["multi.bin"])))  # its stamp no longer holds
    assert "2 written" in cli("download", "p/ds", str(dest)).out
    os.removexattr(dest / "multi.bin", STAMP_XATTR)  # a copy made some other way: nothing shows it right
    out = cli("download", "p/ds", str(dest)).out
    assert "1 written" in out and "1 already there" in out
    assert read_tree(dest) == files


def test_a_stamped_file_is_kept_when_its_hex_etag_is_no_md5(tmp_path: Path) -> None:
    """SSE-KMS objects have 32-hex ETags that are not MD5s: only the stamp can show a copy right."""
    from refmount.download import _stamp, already_correct
    from refmount.manifest import Entry

    target = tmp_path / "kms.bin"
    target.write_bytes(b"encrypted at rest")
    entry = Entry(path="kms.bin", ref="s3://b/kms.bin", digest="0123456789abcdef0123456789abcdef", size=17)
    assert not already_correct(entry, target)
    _stamp(target, entry)
    assert already_correct(entry, target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # written since (its bytes unknown)
    assert not already_correct(entry, target)


def test_no_credentials_is_one_line_and_leaves_nothing(cli: Cli, s3_env: S3Env, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Not about one object: verify and download stop at once, say so once, and leave no directory behind."""
    b = s3_env.bucket()
    for i in range(20):
        s3_env.put(b, f"d/{i % 4}/sub/{i:02}", b"%d" % i)
    s3_env.put(b, "lone/x", b"x")  # checked alone (a HEAD), not by a listing
    cli("log", "p/ds", f"s3://{b}/d/", f"s3://{b}/lone/x")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(var, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for command in (
        ["verify", "p/ds"],
        ["verify", "p/ds", "--per-object"],
        ["download", "p/ds", str(tmp_path / "out")],
    ):
        result = cli(*command, ok=False)
        assert result.code == 4 and len(result.err.splitlines()) == 1, result.err
        assert result.err.startswith("refmount: error: no AWS credentials found (set AWS_PROFILE")
    assert not (tmp_path / "out").exists()  # no directory left behind, dest included
