"""One store per URI scheme, found by :func:`store_for`."""

from __future__ import annotations

import importlib
import threading

from ..errors import InvalidInput
from ..uri import RefURI, parse_ref
from .base import DEFAULT_MAX_OBJECTS, Store

# scheme -> "module:Class"; imported on first use so that `refmount ls` never pays for boto3.
_STORES = {
    "s3": "refmount.stores.s3:S3Store",
    "file": "refmount.stores.file:FileStore",
}
SCHEMES = frozenset(_STORES)

_instances: dict[str, Store] = {}
_lock = threading.Lock()


def parse(uri: str) -> RefURI:
    """Vet ``uri`` and check that some store serves its scheme."""
    return parse_ref(uri, known_schemes=SCHEMES)


def store_for(ref: RefURI | str) -> Store:
    """The (shared, thread-safe) store for a reference's scheme."""
    scheme = ref.scheme if isinstance(ref, RefURI) else ref.partition("://")[0].lower()
    if scheme not in _STORES:
        raise InvalidInput(f"unknown scheme {scheme!r} (supported: {', '.join(sorted(SCHEMES))})")
    with _lock:
        if scheme not in _instances:
            module, cls = _STORES[scheme].split(":")
            _instances[scheme] = getattr(importlib.import_module(module), cls)()
        return _instances[scheme]


def reset() -> None:
    """Forget store instances, so the next use reads credentials and endpoints from the environment again."""
    with _lock:
        _instances.clear()


__all__ = ["DEFAULT_MAX_OBJECTS", "SCHEMES", "Store", "parse", "store_for"]
