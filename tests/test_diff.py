"""`refmount diff`: entries added, removed and changed between two versions, on SQLite and PostgreSQL registries."""

from __future__ import annotations

from pathlib import Path

import pytest

from refmount.diff import diff
from refmount.manifest import Entry
from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.test_mount import log


def two_versions(registry_url: str, src: Path) -> None:
    """v0 and v1 of p/ds: one file kept, one changed, one removed, one added (names that sort differently by
    locale: 'B.txt' < 'a_b.txt' < 'aB.txt' in code point order)."""
    src.mkdir()
    (src / "B.txt").write_bytes(b"kept")
    (src / "a_b.txt").write_bytes(b"before")
    (src / "gone.txt").write_bytes(b"bye")
    log(registry_url, "p/ds", file_uri(src))
    (src / "a_b.txt").write_bytes(b"after!!")
    (src / "gone.txt").unlink()
    (src / "aB.txt").write_bytes(b"new")
    log(registry_url, "p/ds", file_uri(src))


@pytest.fixture(params=["sqlite", "postgres"])
def any_cli(request: pytest.FixtureRequest, cli: Cli) -> Cli:
    return Cli(request.getfixturevalue("postgres_url")) if request.param == "postgres" else cli


def test_diff_lists_added_removed_and_changed(any_cli: Cli, tmp_path: Path) -> None:
    two_versions(any_cli.registry_url, tmp_path / "src")
    any_cli("alias", "p/ds:v0", "before")
    found = any_cli("diff", "p/ds:before", "p/ds", "--json").json()  # an alias, and latest by default
    assert (found["from"], found["to"], found["unchanged"]) == ("p/ds:v0", "p/ds:v1", 1)
    assert [(e["path"], e["size"]) for e in found["added"]] == [("aB.txt", 3)]
    assert [(e["path"], e["ref"]) for e in found["removed"]] == [("gone.txt", file_uri(tmp_path / "src/gone.txt"))]
    [changed] = found["changed"]
    assert (changed["path"], changed["differs"]) == ("a_b.txt", ["digest", "size"])
    assert (changed["from"]["size"], changed["to"]["size"]) == (6, 7)

    text = any_cli("diff", "p/ds:v0", "p/ds:v1").out.splitlines()  # piped: tab-separated, in path order
    assert text == ["p/ds:v0 -> p/ds:v1: 1 added, 1 removed, 1 changed, 1 unchanged",
                    "change\tpath\told-size\tnew-size\tdiffers",
                    "added\taB.txt\t-\t3\t-",
                    "changed\ta_b.txt\t6\t7\tdigest,size",
                    "removed\tgone.txt\t3\t-\t-"]  # fmt: skip
    backwards = any_cli("diff", "p/ds:latest", "p/ds:v0", "--json").json()
    assert [e["path"] for e in backwards["added"]] == ["gone.txt"]
    assert [e["path"] for e in backwards["removed"]] == ["aB.txt"]


def test_diff_across_artifacts_and_of_a_version_with_itself(cli: Cli, registry_url: str, tmp_path: Path) -> None:
    two_versions(registry_url, tmp_path / "src")
    log(registry_url, "q/copy", file_uri(tmp_path / "src"))  # the same objects as p/ds:v1, in another artifact
    same = cli("diff", "q/copy", "p/ds:v1")
    assert same.code == 0 and same.out.startswith("q/copy:v0 -> p/ds:v1: 0 added, 0 removed, 0 changed, 3 unchanged")
    assert cli("diff", "p/ds:v0", "p/ds:v0", "--json").json()["unchanged"] == 3


def test_bad_input_is_one_line(cli: Cli, registry_url: str, tmp_path: Path) -> None:
    two_versions(registry_url, tmp_path / "src")
    for args, message in (
        (["p/ds:v0", "p/ds:v7"], "p/ds has no version v7"),
        (["p/nope", "p/ds"], "nope"),
        (["p/ds", "nope"], "expected PROJECT/ARTIFACT[:VERSION], got 'nope'"),
    ):
        result = cli("diff", *args, ok=False)
        assert message in result.err and len(result.err.strip().splitlines()) == 1 and not result.out, result.err
    help_text = cli("diff", "--help").out
    assert "--json" in help_text and "--registry" in help_text


def entry(path: str, digest: str = "d", size: int = 1, **extra: str) -> Entry:
    return Entry(path, f"s3://b/{path}", digest, size, extra)


def test_what_counts_as_changed() -> None:
    base = entry("x", versionID="1")
    others = {
        ("digest",): entry("x", digest="e", versionID="1"),
        ("version",): entry("x", versionID="2"),
        ("content_md5",): entry("x", versionID="1", content_md5="MTIzNDU2Nzg5MDEyMzQ1Ng=="),
        ("size",): entry("x", size=5, versionID="1"),
        ("ref",): Entry("x", "s3://b/elsewhere", "d", 1, {"versionID": "1"}),
    }
    for fields, other in others.items():
        assert diff([base], [other]).changed[0].fields == fields
    logged_again = entry("x", versionID="1", mtime_ns="5")  # extra that does not pin the bytes
    assert diff([base], [logged_again]).unchanged == 1
