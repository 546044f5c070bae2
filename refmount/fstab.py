"""``mount.fuse.refmount``: the helper mount(8) runs for ``mount -t fuse.refmount`` and fstab lines.

    # /etc/fstab
    refmount  /mnt/artifacts  fuse.refmount  registry=postgresql://refmount@db/refmount,allow_other,_netdev  0 0

mount(8) calls ``mount.fuse.refmount SOURCE MOUNTPOINT -o OPTIONS``. refmount settings among the options
(registry, cache-dir, cache-size, alias-ttl, stop-timeout, allow-other, uid, gid, log-file, metrics, no-lineage,
dir-readahead; each spelled as its flag or with underscores, ``cache-size=1G`` = ``cache_size=1G``) become flags.
Options that only mount(8) and systemd read (``_netdev``, ``nofail``, ``noauto``, ``user``, ``x-systemd.*``,
``comment=`` ...) and generic options that mean nothing to a read-only FUSE mount are dropped; the rest go to FUSE.
"""

from __future__ import annotations

import sys

from .cli import main as cli_main
from .mountopts import not_for_fuse

_SETTINGS = {"registry", "cache-dir", "cache-size", "alias-ttl", "stop-timeout", "uid", "gid", "log-file", "metrics",
             "dir-readahead"}  # fmt: skip
_FLAGS = {"allow-other", "no-lineage"}


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
        key, has_value, value = option.partition("=")
        flag = key.replace("_", "-")  # only refmount's own names are respelled: FUSE's keep their underscores
        if flag in _SETTINGS:
            if not value:
                raise SystemExit(f"mount.fuse.refmount: option {key} needs a value ({key}=...)")
            out += [f"--{flag}", value]
        elif flag in _FLAGS and not has_value:
            out.append(f"--{flag}")
        elif not not_for_fuse(option):
            fuse.append(option)
    if fuse:
        out += ["-o", ",".join(fuse)]
    return out


def main() -> None:
    cli_main(mount_args(sys.argv[1:]), prog_name="refmount")
