"""Which kernel features the installed pyfuse3 lets refmount use.

refmount's ``scripts/setup.sh`` builds pyfuse3 from its sdist with a small patch
(``patches/pyfuse3-3.5.0.patch``) that lets ``opendir`` ask the kernel to keep a directory's listing,
sets connection parameters at init, lets the kernel cache symlinks, and lets a file system do
without ``open``/``release`` requests. A stock pyfuse3 works too: each missing feature is detected
here by the attribute the patch adds, and the mount log says what is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pyfuse3


@dataclass(frozen=True)
class Features:
    cached_listings: bool  # opendir may answer FileInfo(cache_readdir=True): listings of versions stay in the kernel
    connection_tuning: bool  # max_background / congestion_threshold set at init
    cached_symlinks: bool  # FUSE_CAP_CACHE_SYMLINKS: alias links are read once per target
    no_open: bool  # open answered ENOSYS by pyfuse3: no open/release per file, reads name the inode

    @classmethod
    def detect(cls) -> Features:
        return cls(
            cached_listings=hasattr(pyfuse3.FileInfo, "cache_readdir"),
            connection_tuning=hasattr(pyfuse3.Operations, "max_background"),
            cached_symlinks=hasattr(pyfuse3.Operations, "enable_cache_symlinks"),
            no_open=hasattr(pyfuse3.Operations, "enable_no_open"),
        )

    def summary(self) -> str:
        """``cached_listings=yes no_open=no ...``: for the mount log's header."""
        return " ".join(f"{f.name}={'yes' if getattr(self, f.name) else 'no'}" for f in fields(self))

    def lost(self) -> list[str]:
        """What a stock pyfuse3 costs, one phrase per missing feature."""
        costs = {
            "cached_listings": "every listing of a version directory reaches the daemon",
            "connection_tuning": "the kernel keeps at most 12 requests in flight",
            "cached_symlinks": "every path through an alias reads the link from the daemon",
            "no_open": "every open and close of a file reaches the daemon",
        }
        return [cost for name, cost in costs.items() if not getattr(self, name)]
