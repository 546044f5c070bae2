"""Keys that cannot be file paths (--on-invalid) and --exclude, on `log` and `add_reference`, with real servers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

import refmount
from refmount.errors import InvalidInput, InvalidKey
from refmount.selection import Report
from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.server_gcs import GCSEnv
from tests.server_http import HTTPDir
from tests.servers import S3Env

LONG = "x" * 300  # one component over NAME_MAX (255 bytes)
CONTROL = "contains a control or NUL character"
ODD = {"a\tb": CONTROL, f"{LONG}/f": "has a component longer than 255 bytes"}


def listed(cli: Cli, version: str) -> set[str]:
    return set(json.loads(cli("show", version, "--json").out)["contents"])


def odd_prefix(s3_env: S3Env) -> str:
    b = s3_env.bucket(versioned=True)
    for key in ["ok/1", "ok/2", *ODD]:
        s3_env.put(b, f"p/{key}", b"data")
    return f"s3://{b}/p/"


def test_odd_keys_are_skipped_with_one_warning_naming_them(s3_env: S3Env, cli: Cli) -> None:
    result = cli("log", "p/a", odd_prefix(s3_env))
    (warning,) = result.err.strip().splitlines()
    assert warning.startswith("refmount: warning: skipped 2 keys that cannot be file paths: ")
    assert "'a\\tb' (contains a control or NUL character)" in warning
    assert f"'{LONG[:60]}'...(302 bytes) (has a component longer than 255 bytes)" in warning
    assert warning.endswith("; --on-invalid error to refuse")
    assert result.out.startswith("logged p/a:v0 (2 files,") and "; 2 skipped)" in result.out
    assert listed(cli, "p/a:v0") == {"ok/1", "ok/2"}
    assert cli("log", "p/a", odd_prefix(s3_env), "--json").json()["skipped"] == 2


def test_on_invalid_error_refuses_in_one_line_and_logs_nothing(s3_env: S3Env, cli: Cli) -> None:
    prefix = odd_prefix(s3_env)
    cli("log", "p/a", prefix + "ok/", "-q")
    result = cli("log", "p/a", prefix, "--on-invalid", "error", ok=False)
    assert result.code == 2 and not result.out
    (line,) = result.err.strip().splitlines()
    assert line == f"refmount: error: object 'a\\tb' under {prefix} cannot be a file path: it {CONTROL}"
    assert [v["name"] for v in cli("ls", "p/a", "--json").json()] == ["p/a:v0"]  # no new version
    # an excluded key is not checked: --exclude can leave known odd keys out under --on-invalid error
    out = cli("log", "p/a", prefix, "--on-invalid", "error", "--exclude", "a*", "--exclude", "x*", "--json").json()
    assert out["name"] == "p/a:v1" and out["files"] == 2 and out["excluded"] == 2


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


def test_exclude_on_s3_leaves_matching_keys_out(s3_env: S3Env, cli: Cli) -> None:
    b = s3_env.bucket()
    for key in ["a.bin", "b.tmp", "sub/c.tmp", "cache/x", "cache/deep/y", "sub/cache/z"]:
        s3_env.put(b, f"p/{key}", b"data")
    result = cli("log", "p/a", f"s3://{b}/p/", "--exclude", "*.tmp", "--exclude", "cache/*")
    assert "; 4 excluded)" in result.out and not result.err
    assert listed(cli, "p/a:v0") == {"a.bin", "sub/cache/z"}  # '*' crosses '/'; 'cache/*' is the top-level cache/
    # globs match the path in the artifact, under --name
    out = cli("log", "p/b", f"s3://{b}/p/", "--name", "data", "--exclude", "data/sub/*", "--json").json()
    assert out["excluded"] == 2 and listed(cli, "p/b:v0") == {"data/a.bin", "data/b.tmp", "data/cache/x",
                                                              "data/cache/deep/y"}  # fmt: skip


def test_exclude_on_file_tree_and_the_mount_shows_the_rest(tmp_path: Path, cli: Cli, mount_factory: Any) -> None:
    root = tmp_path / "tree"
    for rel in ["keep.txt", "run.tmp", "cache/blob", "d/keep2.txt", "d/scratch.tmp"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    cli("log", "p/f", file_uri(root), "--exclude", "*.tmp", "--exclude", "cache/*", "-q")
    assert listed(cli, "p/f:v0") == {"keep.txt", "d/keep2.txt"}
    m = mount_factory()
    version = m.path / "p" / "f" / "v0"
    seen = {os.path.relpath(os.path.join(d, f), version) for d, _, files in os.walk(version) for f in files}
    assert seen == {"keep.txt", "d/keep2.txt"} and (version / "d" / "keep2.txt").read_text() == "d/keep2.txt"


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
    plain_dir.put("a\tb", b"tab")  # a file whose name, decoded, has a tab: W&B names it by its URL's last part
    assert [e.path for e in art.add_reference(f"{plain_dir.url}/a%09b")] == ["a%09b"]
    assert {e.path for e in art.manifest} == {"a.csv", "model.bin", "a%09b"}


def test_bad_options_are_one_line_errors(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "a.tmp").write_text("a")
    for args, message in {
        ("--on-invalid", "bogus"): "'bogus' is not one of 'skip', 'error'",
        ("--exclude", ""): "an exclude pattern must be a non-empty glob, got ''",
        ("--exclude", "*.tmp"): "nothing to add from file://",
    }.items():
        result = cli("log", "p/a", file_uri(tmp_path), *args, ok=False)
        assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert "no registry at" in cli("ls", ok=False).err  # nothing was logged, not even a registry made
    with pytest.raises(InvalidInput, match="on_invalid must be one of 'skip', 'error', got 'bogus'"):
        refmount.Artifact("a").add_reference(file_uri(tmp_path), on_invalid="bogus")  # type: ignore[arg-type]
