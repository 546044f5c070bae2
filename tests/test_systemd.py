"""The systemd unit and the notify protocol."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from refmount.sdnotify import notify
from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.mounts import answers

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


def unit_environment(etc: Path, var_cache: Path) -> dict[str, str]:
    """The environment systemd gives the unit's daemon (its Environment=, EnvironmentFile= and CacheDirectory=
    lines), with /etc/refmount and /var/cache standing at ``etc`` and ``var_cache``."""
    env = {"PATH": os.environ["PATH"]}
    for line in UNIT.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            env.update(item.split("=", 1) for item in shlex.split(value))
        elif key == "EnvironmentFile":
            path = Path(value.removeprefix("-").replace("/etc/refmount", str(etc)))
            if path.exists() or not value.startswith("-"):
                env.update(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        elif key == "CacheDirectory":
            env["CACHE_DIRECTORY"] = str(var_cache / value)
    return env


def exec_start(mountpoint: Path) -> list[str]:
    line = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    return [arg.replace("%f", str(mountpoint)) for arg in shlex.split(line.partition("=")[2])]


def settings(env: dict[str, str]) -> dict[str, dict[str, object]]:
    result = subprocess.run(["refmount", "config", "--json"], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_the_config_file_wins_over_the_units_cache_default(tmp_path: Path) -> None:
    etc, var_cache = tmp_path / "etc", tmp_path / "var-cache"
    etc.mkdir()
    env = {**unit_environment(etc, var_cache), "REFMOUNT_CONFIG": str(etc / "config.toml")}  # for /etc/refmount
    (etc / "config.toml").write_text("")
    assert settings(env)["cache_dir"]["value"] == str(var_cache / "refmount")  # the service's default
    (etc / "config.toml").write_text(f'cache_dir = "{tmp_path / "cache"}"\n')
    assert settings(env)["cache_dir"] == {"value": str(tmp_path / "cache"), "source": str(etc / "config.toml")}


def test_the_env_file_is_optional_and_read(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "config.toml").write_text("alias_ttl = 7\n")
    env = {**unit_environment(etc, tmp_path), "REFMOUNT_CONFIG": str(etc / "config.toml")}
    assert settings(env)["alias_ttl"]["value"] == 7
    (etc / "env").write_text("REFMOUNT_ALIAS_TTL=9\nAWS_ENDPOINT_URL=http://127.0.0.1:9\n")
    env = {**unit_environment(etc, tmp_path), "REFMOUNT_CONFIG": str(etc / "config.toml")}
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert settings(env)["alias_ttl"] == {"value": 9.0, "source": "env REFMOUNT_ALIAS_TTL"}


def test_the_daemon_under_the_units_environment_uses_the_config_and_reloads_on_sighup(
    cli: Cli, tmp_path: Path, registry_url: str
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("one")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    etc, mnt, log_file = tmp_path / "etc", tmp_path / "mnt", tmp_path / "daemon.log"
    etc.mkdir()
    mnt.mkdir()
    (etc / "config.toml").write_text(f'registry = "{registry_url}"\ncache_dir = "{tmp_path / "cache"}"\n'
                                     "alias_ttl = 3600\n")  # fmt: skip
    env = {**unit_environment(etc, tmp_path / "var-cache"), "REFMOUNT_CONFIG": str(etc / "config.toml")}
    argv = ["refmount" if arg == "/usr/local/bin/refmount" else arg for arg in exec_start(mnt)]
    with open(log_file, "w") as stderr:
        daemon = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        while not answers(mnt, lambda: os.getxattr(mnt, "user.refmount.stats")):
            assert daemon.poll() is None, log_file.read_text()
            time.sleep(0.05)
        assert f"cache {tmp_path / 'cache'}" in log_file.read_text()
        assert not (tmp_path / "var-cache").exists()
        assert sorted(os.listdir(mnt / "p" / "ds")) == ["latest", "v0"]
        assert os.readlink(mnt / "p" / "ds" / "latest") == "v0"
        (tmp_path / "src" / "x.txt").write_text("two")
        cli("log", "p/ds", file_uri(tmp_path / "src"))
        assert sorted(os.listdir(mnt / "p" / "ds")) == ["latest", "v0"]  # cached for alias_ttl, an hour

        daemon.send_signal(signal.SIGHUP)  # what `systemctl reload` sends (ExecReload=)
        while "SIGHUP: reloaded" not in log_file.read_text():
            assert daemon.poll() is None, log_file.read_text()
            time.sleep(0.05)
        assert (mnt / "p" / "ds" / "latest" / "x.txt").read_text() == "two"  # before a listing renews `latest`
        assert sorted(os.listdir(mnt / "p" / "ds")) == ["latest", "v0", "v1"]
        assert "ExecReload=/bin/kill -HUP $MAINPID" in UNIT.read_text()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
