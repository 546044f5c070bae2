"""The systemd unit and the notify protocol."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from refmount.sdnotify import notify

UNIT = Path(__file__).parent.parent / "systemd" / "refmount@.service"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    mountpoint = tmp_path / "artifacts"
    mountpoint.mkdir()
    escaped = subprocess.run(["systemd-escape", "--path", str(mountpoint)], capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
    instance = tmp_path / f"refmount@{escaped}.service"
    shutil.copy(UNIT, instance)
    result = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in UNIT.read_text()


def test_systemd_waits_longer_than_the_daemon_serves_open_files_after_sigterm() -> None:
    from refmount import config

    stop = next(line for line in UNIT.read_text().splitlines() if line.startswith("TimeoutStopSec="))
    assert float(stop.partition("=")[2].removesuffix("s")) > config.defaults()["stop_timeout"]


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_datagrams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        address = f"\0refmount-test-{tmp_path.name}" if abstract else str(tmp_path / "notify.sock")
        server.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + address[1:] if abstract else address)
        assert notify("READY=1")
        assert server.recv(100) == b"READY=1"


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not notify("READY=1")
