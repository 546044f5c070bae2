"""What a mount's log says: one header line, no library noise, one line per failure."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

import refmount
from tests.conftest import Cli
from tests.servers import S3Env


def test_the_log_starts_with_one_header_line(cli: Cli, tmp_path: Path, mount_factory: Any) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("x")
    cli("log", "p/a", (tmp_path / "src").as_uri() + "/")
    m = mount_factory(extra_args=("--cache-size", "2G", "-o", "noatime"))
    first = m.log().splitlines()[0]
    assert f"refmount {refmount.__version__} mounted {m.path}: registry {m.registry_url}, " in first
    assert f"cache {m.cache_dir} (2.0 GiB), alias_ttl 1s, stop_timeout 30s, allow_other no" in first
    assert "fuse options noatime, kernel features: cached_listings=" in first


def test_the_header_hides_the_registry_password() -> None:
    from refmount.fs.features import Features
    from refmount.fs.mount import MountOptions, _header

    options = MountOptions(Path("/mnt/a"), "postgresql://u:hunter2@db:5432/r", Path("/c"), 1 << 30)
    line = _header(options, Features.detect())
    assert "registry postgresql://u:***@db:5432/r," in line and "hunter2" not in line


def test_an_eio_is_one_log_line_and_no_library_info_lines(s3_env: S3Env, cli: Cli, mount_factory: Any) -> None:
    bucket = s3_env.bucket()
    s3_env.put(bucket, "ds/a.bin", b"logged bytes")
    cli("log", f"p/{bucket}", f"s3://{bucket}/ds/")
    m = mount_factory()
    s3_env.put(bucket, "ds/a.bin", b"NEW BYTES!!!")  # same size, other bytes
    with pytest.raises(OSError) as info:
        (m.path / f"p/{bucket}/v0/a.bin").read_bytes()
    assert info.value.errno == errno.EIO
    m.stop()
    lines = m.log().splitlines()
    assert len([line for line in lines if "EIO for" in line]) == 1, m.log()
    assert not [line for line in lines if " INFO botocore" in line or " INFO urllib3" in line], m.log()
