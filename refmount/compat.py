"""Reaching into other libraries' internals, only where it was checked.

A few hot or awkward paths use attributes that libraries do not promise (gcsfs's undecorated request
function, botocore's connection pool, urllib3's http.client response, diskcache's cull). Each such use asks
:func:`checked` first: the installed version must lie in the range it was checked with, else the
caller takes its plain, public route (slower, never wrong). pyproject.toml bounds the same packages
from above, so an upgrade past the range is a deliberate change.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import re

log = logging.getLogger(__name__)

# package -> (lowest checked, first version not checked)
CHECKED: dict[str, tuple[str, str]] = {
    "diskcache": ("5.6", "5.7"),
    "gcsfs": ("2024.2", "2027"),
    "botocore": ("1.34", "2"),
    "urllib3": ("2", "3"),
}


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


@functools.cache
def checked(package: str) -> bool:
    """Is the installed ``package`` a version whose internals refmount was checked against?"""
    lowest, below = CHECKED[package]
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    ok = _parts(lowest) <= _parts(version) < _parts(below)
    if not ok:
        log.info("%s %s is outside the versions refmount was checked with (%s to before %s): using its public "
                 "interface only", package, version, lowest, below)  # fmt: skip
    return ok
