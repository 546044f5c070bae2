"""Real refmount mounts for tests: a foreground daemon in a subprocess, always unmounted at teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def is_mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines())


def answers(path: Path, probe: Callable[[], object]) -> bool:
    """Is ``path`` mounted and does ``probe`` (a request the kernel never caches, like an xattr) come back?"""
    if not is_mounted(path):
        return False
    try:
        probe()
        return True
    except OSError:
        return False


@dataclass
class MountedFS:
    path: Path
    registry_url: str
    cache_dir: Path
    log_file: Path
    alias_ttl: float = 1.0
    extra_args: tuple[str, ...] = ()
    user: int | None = None  # run the daemon as this uid (and gid), not root: it mounts through fusermount3
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> MountedFS:
        argv = [sys.executable, "-m", "refmount", "mount", str(self.path), "--foreground", "--registry",
                self.registry_url, "--cache-dir", str(self.cache_dir), "--alias-ttl", str(self.alias_ttl),
                "--log-file", str(self.log_file), *self.extra_args]  # fmt: skip
        self.proc = subprocess.Popen(as_user(argv, self.user), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=user_env(self.user))  # fmt: skip
        deadline = time.monotonic() + 30
        while not answers(self.path, self.stats):  # the stats xattr reaches the new daemon
            if self.proc.poll() is not None:
                raise RuntimeError(f"refmount exited {self.proc.returncode}: {self.proc.stderr.read().decode()}"  # type: ignore[union-attr]
                                   f"\n{self.log()}")  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"mount did not come up:\n{self.log()}")
            time.sleep(0.05)
        return self

    def stats(self) -> dict[str, Any]:
        if self.user is None:
            return json.loads(os.getxattr(self.path, "user.refmount.stats"))
        # Only the mount's owner may enter a FUSE mount made without allow_other, root included.
        probe = f"import os, sys; sys.stdout.buffer.write(os.getxattr({str(self.path)!r}, 'user.refmount.stats'))"
        done = subprocess.run(as_user([sys.executable, "-c", probe], self.user), capture_output=True,
                              env=user_env(self.user))  # fmt: skip
        if done.returncode:
            raise OSError(f"stats of {self.path}: {done.stderr.decode().strip()}")
        return json.loads(done.stdout)

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        return None if self.proc is None else self.proc.returncode


def as_user(argv: list[str], uid: int | None) -> list[str]:
    """``argv`` run as ``uid`` (its group too, no other groups, no capabilities); as it is for None."""
    return argv if uid is None else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


def user_env(uid: int | None) -> dict[str, str]:
    """This environment, with a home ``uid`` may write to (config and data directories are looked for there)."""
    return os.environ.copy() if uid is None else {**os.environ, "HOME": "/tmp", "XDG_CONFIG_HOME": "/tmp/.config"}


@pytest.fixture
def mount_factory(tmp_path: Path, registry_url: str) -> Iterator[Any]:
    """``mount_factory(**overrides)`` mounts a fresh directory; every mount is undone at teardown."""
    mounts: list[MountedFS] = []

    def make(**overrides: Any) -> MountedFS:
        n = len(mounts)
        path = tmp_path / f"mnt{n}"
        path.mkdir(exist_ok=True)
        settings: dict[str, Any] = {"path": path, "registry_url": registry_url, "cache_dir": tmp_path / "cache",
                                    "log_file": tmp_path / f"mount{n}.log"}  # fmt: skip
        settings.update(overrides)
        mounted = MountedFS(**settings)
        mounts.append(mounted)
        return mounted.start()

    yield make
    for mounted in mounts:
        mounted.stop()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something true (returned), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def read_whole(path: Path, *, drop_pages: bool = False) -> bytes:
    """Open, read to EOF and close with plain syscalls (Python's open() adds an ioctl for isatty). ``drop_pages``:
    the kernel's pages of the file are dropped once it is open, so its reads reach the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if drop_pages:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
