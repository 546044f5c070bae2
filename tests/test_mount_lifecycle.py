"""``refmount mount`` and ``umount`` through the real CLI and kernel: which mounts umount may remove,
symlinked mountpoints, and one-line errors (the daemon's too) when a mount cannot start."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, CliResult
from tests.mounts import is_mounted


@contextmanager
def tmpfs_at(path: Path, *options: str) -> Iterator[Path]:
    """A real tmpfs (not refmount's) mounted at ``path`` for the block, always unmounted after."""
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", *(["-o", ",".join(options)] if options else []), "none", str(path)],
                   check=True)  # fmt: skip
    try:
        yield path
    finally:
        if is_mounted(path):
            subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture(autouse=True)
def registry(cli: Cli) -> None:
    """An empty registry: mounting one that does not exist is an error of its own."""
    cli("registry", "init")


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    """An empty mountpoint, unmounted at teardown whatever the test left there (stacked mounts too)."""
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    for _ in range(5):
        if not is_mounted(path):
            break
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def one_line_error(result: CliResult, *fragments: str) -> None:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refmount: error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], result.err


def test_umount_removes_refmount_mounts_only(tmp_path: Path, cli: Cli, mount_factory: Any) -> None:
    with tmpfs_at(tmp_path / "tmpfs") as tmpfs:
        one_line_error(cli("umount", str(tmpfs), ok=False), f"{tmpfs} is a tmpfs mount, not a refmount mount")
        one_line_error(cli("umount", "--lazy", str(tmpfs), ok=False), "not a refmount mount")
        assert is_mounted(tmpfs)
    # A stale refmount mount (its daemon killed) is still refmount's own: umount removes it.
    crashed = mount_factory()
    assert crashed.proc is not None
    crashed.proc.kill()
    crashed.proc.wait()
    assert is_mounted(crashed.path)
    cli("umount", str(crashed.path))
    assert not is_mounted(crashed.path)


def test_mount_and_umount_through_a_symlink(tmp_path: Path, cli: Cli, mnt: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(mnt)
    cli("mount", str(link), "--cache-dir", str(tmp_path / "cache"))
    assert is_mounted(mnt)
    one_line_error(cli("mount", str(link), "--cache-dir", str(tmp_path / "cache"), ok=False),
                   "already a mount point")  # fmt: skip
    cli("umount", str(link))
    assert not is_mounted(mnt)


@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_unusable_cache_dir_or_log_file_is_one_line(tmp_path: Path, cli: Cli, mnt: Path, foreground: bool) -> None:
    """Reported by the command itself before it forks: no daemon, nothing mounted."""
    (tmp_path / "file").write_text("x")
    cases = {
        ("--cache-dir", "/proc/refmount-cache"): "cannot use the cache directory /proc/refmount-cache: "
                                                  "No such file or directory",
        ("--cache-dir", str(tmp_path / "file" / "cache")): f"cannot use the cache directory {tmp_path}/file/cache: "
                                                            "Not a directory",
        ("--cache-dir", str(tmp_path / "ro")): f"cannot use the cache directory {tmp_path}/ro: Read-only file system",
        ("--log-file", str(tmp_path / "nodir" / "x.log")): f"cannot write the log file {tmp_path}/nodir/x.log: "
                                                            "No such file or directory",
    }  # fmt: skip
    with tmpfs_at(tmp_path / "ro", "ro"):
        for args, message in cases.items():
            cache = () if args[0] == "--cache-dir" else ("--cache-dir", str(tmp_path / "cache"))
            result = cli("mount", str(mnt), *cache, *args, *(["--foreground"] if foreground else []), ok=False)
            one_line_error(result, message)
            assert "daemon" not in result.err and result.code == 2, result.err
            assert not is_mounted(mnt)


@pytest.mark.parametrize("foreground", [False, True], ids=["daemon", "foreground"])
def test_libfuse_refusal_is_one_line(tmp_path: Path, cli: Cli, mnt: Path, foreground: bool) -> None:
    """libfuse prints its reason on stderr (/dev/null in the daemon) and pyfuse3 raises a bare RuntimeError."""
    args = ["mount", str(mnt), "--cache-dir", str(tmp_path / "cache"), "-o", "bogusopt"]
    result = cli(*args, *(["--foreground"] if foreground else []), ok=False)
    one_line_error(result, f"cannot mount {mnt}: fuse: unknown option(s): `-o bogusopt'")
    assert not is_mounted(mnt)


def test_mounts_of_earlier_releases_are_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    """They show as plain ``fuse`` (no subtype) with refmount as their source; a unit test on mountinfo lines."""
    from refmount.fs import mount

    lines = {
        "/mnt/old": "36 25 0:32 / /mnt/old rw,nosuid,nodev - fuse refmount rw,user_id=0,group_id=0",
        "/mnt/new": "37 25 0:33 / /mnt/new rw,nosuid,nodev - fuse.refmount refmount rw,user_id=0,group_id=0",
        "/mnt/sshfs": "38 25 0:34 / /mnt/sshfs rw,nosuid,nodev - fuse.sshfs host:/ rw,user_id=0,group_id=0",
        "/mnt/other": "39 25 0:35 / /mnt/other rw,nosuid,nodev - fuse other rw,user_id=0,group_id=0",
    }
    real_read_text = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        return (
            "\n".join(lines.values()) if str(self) == "/proc/self/mountinfo" else real_read_text(self, *args, **kwargs)
        )

    monkeypatch.setattr(Path, "read_text", read_text)
    assert [mount.mount_type(Path(path)) for path in lines] == [mount.FSTYPE, mount.FSTYPE, "fuse.sshfs", "fuse"]
