"""`mount -t fuse.refmount` (and fstab lines) through mount(8) and the mount.fuse.refmount helper."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from refmount.fstab import mount_args
from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.mounts import is_mounted


def test_options_become_flags() -> None:
    args = mount_args(["refmount", "/mnt/a", "-o", "rw,nodev,registry=sqlite:///r.db,alias_ttl=3,allow_other,"
                       "cache_size=5G,_netdev,x-systemd.automount,noatime,no_lineage,dir_readahead=0"])  # fmt: skip
    assert args == ["mount", "/mnt/a", "--registry", "sqlite:///r.db", "--alias-ttl", "3", "--allow-other",
                    "--cache-size", "5G", "--no-lineage", "--dir-readahead", "0", "-o", "noatime"]  # fmt: skip


def test_both_spellings_and_userspace_options_stay_out_of_fuse() -> None:
    options = ("cache-size=1G,cache_dir=/c,alias-ttl=2,stop_timeout=9,allow-other,log-file=/l,_netdev,nofail,"
               "noauto,auto,defaults,user,users,x-systemd.automount,x-systemd.requires=db.service,x-mine=1,"
               "comment=systemd.automount,default_permissions,allow_root")  # fmt: skip
    assert mount_args(["refmount", "/mnt/a", "-o", options]) == [
        "mount", "/mnt/a", "--cache-size", "1G", "--cache-dir", "/c", "--alias-ttl", "2", "--stop-timeout", "9",
        "--allow-other", "--log-file", "/l", "-o", "default_permissions,allow_root"]  # fmt: skip


def test_a_setting_without_a_value_is_one_line() -> None:
    with pytest.raises(SystemExit, match=r"^mount.fuse.refmount: option cache-size needs a value \(cache-size=...\)$"):
        mount_args(["refmount", "/mnt/a", "-o", "cache-size"])


def test_mount_t_fuse_refmount(cli: Cli, tmp_path: Path, registry_url: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("hello")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # The flags' spellings and options only mount(8) and systemd read, as an fstab line would have them.
    options = (
        f"registry={registry_url},cache-dir={tmp_path / 'cache'},cache-size=1G,alias-ttl=1,nosuid,nodev,"
        "_netdev,nofail,x-systemd.automount,x-systemd.mount-timeout=30,comment=artifacts,x-note=1,users"
    )
    try:
        subprocess.run(["mount", "-t", "fuse.refmount", "refmount", str(mnt), "-o", options], check=True, timeout=60)
        assert (mnt / "p/ds/v0/x.txt").read_text() == "hello"
        subprocess.run(["umount", str(mnt)], check=True, timeout=30)
        assert not is_mounted(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def test_userspace_options_typed_with_dash_o_stay_out_of_fuse(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("hello")
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        cli("mount", str(mnt), "--cache-dir", str(tmp_path / "cache"), "-o", "_netdev,nofail,x-systemd.automount")
        assert (mnt / "p/ds/v0/x.txt").read_text() == "hello"
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
