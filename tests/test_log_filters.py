"""Keys that cannot be file paths (--on-invalid) and --exclude, on `log` and `add_reference`, with real servers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import refmount
from refmount.errors import InvalidInput, InvalidKey
from refmount.selection import Report
from refmount.stores.file import file_uri
from tests.server_gcs import GCSEnv
from tests.server_http import HTTPDir

LONG = "x" * 300  # one component over NAME_MAX (255 bytes)
CONTROL = "contains a control or NUL character"
ODD = {"a\tb": CONTROL, f"{LONG}/f": "has a component longer than 255 bytes"}


def test_api_skips_or_refuses_odd_keys_on_gcs(gcs_env: GCSEnv, caplog: pytest.LogCaptureFixture) -> None:
    b = gcs_env.bucket()
    for key in ["ok/1", *ODD]:
        gcs_env.put(b, f"p/{key}", b"data")
    with caplog.at_level(logging.WARNING, logger="refmount"):
        entries = refmount.Artifact("a").add_reference(f"gs://{b}/p/")
    assert [e.path for e in entries] == ["ok/1"]
    assert "skipped 2 keys that cannot be file paths: 'a\\tb'" in caplog.text
    assert caplog.text.rstrip().endswith("on_invalid='error' to refuse")
    report = Report()
    refmount.Artifact("a").add_reference(f"gs://{b}/p/", report=report.add)
    assert sorted(s.problem for s in report.skipped) == sorted(ODD.values()) and report.excluded == 0
    art = refmount.Artifact("a")
    with pytest.raises(InvalidKey, match=r"object 'a\\tb' under gs://.* cannot be a file path"):
        art.add_reference(f"gs://{b}/p/", on_invalid="error")
    assert len(art.manifest) == 0


def test_exclude_through_the_api(tmp_path: Path, plain_dir: HTTPDir) -> None:
    (tmp_path / "a.csv").write_text("a")
    (tmp_path / "b.tmp").write_text("b")
    art = refmount.Artifact("a")
    report = Report()
    assert [e.path for e in art.add_reference(file_uri(tmp_path), exclude=["*.tmp"], report=report.add)] == ["a.csv"]
    assert report.excluded == 1
    url = plain_dir.put("model.tmp", b"weights")  # one http(s) file: its name is its path
    assert [e.path for e in art.add_reference(url, "model.bin", exclude="*.tmp")] == ["model.bin"]
    with pytest.raises(InvalidInput, match=r"nothing to add from http.*model.tmp: 1 excluded$"):
        art.add_reference(url, exclude="*.tmp")
    assert {e.path for e in art.manifest} == {"a.csv", "model.bin"}
