"""Which mount options belong to mount(8), fstab tools and systemd, or mean nothing to refmount's mount:
libfuse refuses the first kind, and the kernel must never see either."""

from __future__ import annotations

_USERSPACE = {"auto", "noauto", "defaults", "_netdev", "nofail", "user", "nouser", "users", "owner", "group"}
_USERSPACE_PREFIXES = ("x-", "comment=")
# Generic mount options with no meaning for refmount's read-only mount (it is always ro, nodev, nosuid).
_MEANINGLESS = {"rw", "ro", "dev", "nodev", "suid", "nosuid", "exec", "noexec"}


def not_for_fuse(option: str) -> bool:
    """Whether ``option`` (``key`` or ``key=value``) is one that refmount drops instead of passing to FUSE."""
    return option.partition("=")[0] in _USERSPACE | _MEANINGLESS or option.startswith(_USERSPACE_PREFIXES)
