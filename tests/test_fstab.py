"""`mount -t fuse.refmount` (and fstab lines) through mount(8) and the mount.fuse.refmount helper."""

from __future__ import annotations

import subprocess
from pathlib import Path

from refmount.fstab import mount_args
from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.mounts import is_mounted


def test_options_become_flags() -> None:
    args = mount_args(["refmount", "/mnt/a", "-o", "rw,nodev,registry=sqlite:///r.db,alias_ttl=3,allow_other,"
                       "cache_size=5G,_netdev,x-systemd.automount,noatime"])  # fmt: skip
    assert args == ["mount", "/mnt/a", "--registry", "sqlite:///r.db", "--alias-ttl", "3", "--allow-other",
                    "--cache-size", "5G", "-o", "noatime"]  # fmt: skip


def test_mount_t_fuse_refmount(cli: Cli, tmp_path: Path, registry_url: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("hello")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    options = f"registry={registry_url},cache_dir={tmp_path / 'cache'},alias_ttl=1,nosuid,nodev"
    try:
        subprocess.run(["mount", "-t", "fuse.refmount", "refmount", str(mnt), "-o", options], check=True, timeout=60)
        assert (mnt / "p/ds/v0/x.txt").read_text() == "hello"
        subprocess.run(["umount", str(mnt)], check=True, timeout=30)
        assert not is_mounted(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
