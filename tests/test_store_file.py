"""file:// references against real temp directories."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from refmount.errors import ChangedObject, InvalidInput
from refmount.manifest import Entry, b64_md5
from refmount.stores import parse
from refmount.stores.file import FileStore, file_uri


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "train" / "deep").mkdir(parents=True)
    (root / "train" / "0001.png").write_bytes(b"png-1")
    (root / "train" / "deep" / "x.bin").write_bytes(os.urandom(3000))
    (root / "empty").write_bytes(b"")
    (root / "name with space%?.txt").write_bytes(b"odd")
    return root


def scan(uri: str, **kw) -> list[Entry]:
    return list(FileStore().scan(parse(uri), **kw))


def test_scan_directory(tree: Path) -> None:
    entries = {e.path: e for e in scan(file_uri(tree))}
    assert set(entries) == {"train/0001.png", "train/deep/x.bin", "empty", "name with space%?.txt"}
    e = entries["train/0001.png"]
    assert e.digest == b64md5(b"png-1") and e.size == 5 and e.ref == file_uri(tree / "train" / "0001.png")
    assert entries["empty"].size == 0
    odd = entries["name with space%?.txt"]
    assert FileStore().read(odd, 0, 10) == b"odd"  # the ref round-trips through URI quoting


def test_trailing_slash_and_name_prefix(tree: Path) -> None:
    with_slash = scan(file_uri(tree) + "/", name="imgs")
    assert {e.path for e in with_slash} == {f"imgs/{p}" for p in ("train/0001.png", "train/deep/x.bin", "empty",
                                                                 "name with space%?.txt")}  # fmt: skip


def test_symlinks_never_escape_the_root(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"secret")
    (tree / "escape").symlink_to(outside)
    (tree / "inside").symlink_to(tree / "train" / "0001.png")
    (tree / "dirlink").symlink_to(tree / "train")
    (tree / "loop").symlink_to(tree)
    paths = {e.path: e for e in scan(file_uri(tree))}
    assert "escape" not in paths
    assert paths["inside"].digest == b64md5(b"png-1")
    assert not any(p.startswith(("dirlink/", "loop/")) for p in paths)


def test_checksum_false_gives_wandbs_location_entries(tree: Path) -> None:
    """As W&B: an entry per file, with its size, whose digest is the MD5 of the file's URI: nothing pins it."""
    entries = {e.path: e for e in scan(file_uri(tree), checksum=False)}
    assert set(entries) == {e.path for e in scan(file_uri(tree))}
    png = entries["train/0001.png"]
    assert png.ref == file_uri(tree / "train/0001.png") and png.size == 5 and not png.extra
    assert png.digest == b64_md5(hashlib.md5((tree / "train/0001.png").as_uri().encode()).digest())
    assert not any(e.pinned for e in entries.values())
    (single,) = scan(file_uri(tree / "empty"), checksum=False, name="e.bin")
    assert (single.path, single.size, single.pinned) == ("e.bin", 0, False)


def test_non_local(tree: Path) -> None:
    with pytest.raises(InvalidInput, match="must be local"):
        scan("file://otherhost/data")


def test_a_new_mtime_rehashes_and_same_size_changes_are_caught(tree: Path) -> None:
    store = FileStore()
    big = tree / "train" / "deep" / "x.bin"
    data = big.read_bytes()
    (entry,) = scan(file_uri(big))
    os.utime(big, ns=(1, 1))  # same bytes, new mtime: the MD5 is recomputed and still matches
    assert store.read(entry, 0, 10) == data[:10]

    big.write_bytes(bytes(len(data)))  # same size, other bytes
    with pytest.raises(ChangedObject, match="content changed"):
        store.read(entry, 0, 10)
    big.write_bytes(b"short")
    with pytest.raises(ChangedObject, match="size is now 5"):
        store.check(entry)


def test_every_check_is_made_on_the_file_that_is_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path flipped from one file to another after the open (a symlink swapped by whoever logged it)
    cannot pass the first file's bytes off as the second's: the MD5 is taken from the open file."""
    secret, decoy, link = tmp_path / "secret", tmp_path / "decoy", tmp_path / "link"
    secret.write_bytes(b"private bytes")
    decoy.write_bytes(b"public  bytes")
    link.symlink_to(secret)
    entry = Entry(path="x", ref=file_uri(link), digest=b64md5(decoy.read_bytes()), size=13)  # no mtime: hashed
    real_fstat = os.fstat

    def fstat_then_flip(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        link.unlink()
        link.symlink_to(decoy)
        return st

    monkeypatch.setattr("refmount.stores.file.os.fstat", fstat_then_flip)
    with pytest.raises(ChangedObject, match="MD5 differs"):
        FileStore().read(entry, 0, 13)
