"""``mount.fuse.refmount``: the helper mount(8) runs for ``mount -t fuse.refmount`` and fstab lines.

    # /etc/fstab
    refmount  /mnt/artifacts  fuse.refmount  registry=postgresql://refmount@db/refmount,allow_other,_netdev  0 0

mount(8) calls ``mount.fuse.refmount SOURCE MOUNTPOINT -o OPTIONS``. refmount settings among the
options (registry, cache_dir, cache_size, alias_ttl, stop_timeout, allow_other, uid, gid) become flags, generic
mount options that mean nothing to a read-only FUSE mount are dropped, the rest go to FUSE.
"""

from __future__ import annotations

import sys

from .cli import main as cli_main

_SETTINGS = {"registry", "cache_dir", "cache_size", "alias_ttl", "stop_timeout", "uid", "gid", "log_file"}
_IGNORED = {"rw", "ro", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "auto", "noauto", "user", "nouser",
            "users", "defaults", "_netdev", "nofail", "owner", "group", "x-systemd.automount"}  # fmt: skip


def mount_args(argv: list[str]) -> list[str]:
    """Translate mount(8)'s ``SOURCE MOUNTPOINT [-o OPTS]`` into ``refmount mount`` arguments."""
    positional, options = [], []
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            options.extend(next(args, "").split(","))
        elif arg.startswith("-o"):
            options.extend(arg[2:].split(","))
        elif not arg.startswith("-"):
            positional.append(arg)
    if len(positional) != 2:
        raise SystemExit("usage: mount.fuse.refmount SOURCE MOUNTPOINT [-o OPTIONS]")
    out = ["mount", positional[1]]
    fuse: list[str] = []
    for option in filter(None, options):
        key, _, value = option.partition("=")
        if key in _SETTINGS and value:
            out += [f"--{key.replace('_', '-')}", value]
        elif key == "allow_other":
            out.append("--allow-other")
        elif key not in _IGNORED and not key.startswith("x-"):
            fuse.append(option)
    if fuse:
        out += ["-o", ",".join(fuse)]
    return out


def main() -> None:
    cli_main(mount_args(sys.argv[1:]), prog_name="refmount")
