"""Mounting says which stores the registry references are unusable, and why, without failing the mount."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.servers import S3Env, free_port

NO_AWS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": None,
          "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config",
          "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


@pytest.fixture
def mixed(s3_env: S3Env, cli: Cli, tmp_path: Path) -> str:
    """A registry with one artifact on S3 (moto) and one on file://; returns the S3 bucket."""
    bucket = s3_env.bucket()
    s3_env.put(bucket, "ds/a.bin", b"on s3")
    cli("log", "p/s3", f"s3://{bucket}/ds/")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("on disk")
    cli("log", "p/local", file_uri(tmp_path / "src"))
    return bucket


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def mount(mountpoint: Path, tmp_path: Path, **env: str | None) -> subprocess.CompletedProcess[str]:
    """``refmount mount`` (a daemon, as a user runs it) with ``env`` changes (None: unset)."""
    environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    argv = [sys.executable, "-m", "refmount", "mount", str(mountpoint), "--cache-dir", str(tmp_path / "cache"),
            "--log-file", str(tmp_path / "mount.log")]  # fmt: skip
    return subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=120)


def problems(text: str) -> list[str]:
    return [line for line in text.splitlines() if "store is not usable" in line]


def test_usable_stores_mount_silently(mixed: str, mountpoint: Path, tmp_path: Path) -> None:
    result = mount(mountpoint, tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert (mountpoint / "p/s3/v0/a.bin").read_bytes() == b"on s3"
    assert not problems((tmp_path / "mount.log").read_text())


@pytest.mark.parametrize(
    "env, reason",
    [(NO_AWS, "no AWS credentials found"),
     ({**NO_AWS, "AWS_PROFILE": "no-such-profile"}, "The config profile (no-such-profile) could not be found"),
     ({"AWS_S3_ENDPOINT_URL": "http://127.0.0.1:{port}"}, "cannot reach the endpoint http://127.0.0.1:{port}")],
)  # fmt: skip
def test_an_unusable_store_is_one_line_on_the_terminal_and_in_the_log_and_the_mount_goes_on(
    mixed: str, mountpoint: Path, tmp_path: Path, env: dict[str, str | None], reason: str
) -> None:
    port = str(free_port())  # nothing listens there
    env = {k: v.replace("{port}", port) if v else v for k, v in env.items()}
    result = mount(mountpoint, tmp_path, **env)
    assert result.returncode == 0, result.stderr
    expected = f"the s3:// store is not usable, reads of its files will fail (EIO): {reason.replace('{port}', port)}"
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"refmount: WARNING: {expected}")
    (logged,) = problems((tmp_path / "mount.log").read_text())
    assert logged.endswith(line.removeprefix("refmount: WARNING: "))
    assert (mountpoint / "p/local/v0/x.txt").read_text() == "on disk"  # other stores are served
    with pytest.raises(OSError) as info:
        (mountpoint / "p/s3/v0/a.bin").read_bytes()
    assert info.value.errno == errno.EIO


def test_stores_no_artifact_uses_are_not_checked(cli: Cli, mountpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("on disk")
    cli("log", "p/local", file_uri(tmp_path / "src"))
    result = mount(mountpoint, tmp_path, **NO_AWS)
    assert result.returncode == 0 and result.stderr == ""
    assert "s3" not in (tmp_path / "mount.log").read_text()


def test_a_foreground_daemon_names_them_in_its_log(
    mixed: str, mount_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in NO_AWS.items():
        monkeypatch.delenv(var, raising=False) if value is None else monkeypatch.setenv(var, value)
    m = mount_factory()  # -f, as systemd runs it: the log is the only place to say it
    assert (m.path / "p/local/v0/x.txt").read_text() == "on disk"
    give_up = time.monotonic() + 60  # a guard against waiting forever, far above the check's time
    while not problems(m.log()):  # the check runs once the mount is up
        assert m.proc is not None and m.proc.poll() is None and time.monotonic() < give_up, m.log()
        time.sleep(0.05)
    m.stop()
    (line,) = problems(m.log())
    assert "the s3:// store is not usable, reads of its files will fail (EIO): no AWS credentials found" in line
