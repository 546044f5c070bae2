"""One store per URI scheme, found by :func:`store_for`."""

from __future__ import annotations

import importlib
import os
import threading

from ..errors import InvalidInput
from ..uri import RefURI, parse_ref, store_scheme
from .base import DEFAULT_MAX_OBJECTS, Store, unpinned

# scheme -> "module:Class"; imported on first use so that `refmount ls` never pays for boto3.
_STORES = {
    "s3": "refmount.stores.s3:S3Store",
    "file": "refmount.stores.file:FileStore",
    "gs": "refmount.stores.gcs:GCSStore",
    "http": "refmount.stores.http:HTTPStore",
    "https": "refmount.stores.http:HTTPStore",
    "az": "refmount.stores.azure:AzureStore",
}
SCHEMES = frozenset(_STORES)

_instances: dict[str, Store] = {}
_lock = threading.Lock()
_inherited: list[Store] = []


def _forget_after_fork() -> None:
    """A forked child (a DataLoader worker) makes stores of its own: its parent's share their connections'
    sockets with it, and obstore's requests run on a runtime whose threads the fork did not copy (a GET
    waits forever). They are kept, not dropped: tearing down such a client in the child can hang too."""
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it
    _inherited.extend(_instances.values())
    _instances.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def parse(uri: str) -> RefURI:
    """Vet ``uri`` and check that some store serves its scheme."""
    return parse_ref(uri, known_schemes=SCHEMES)


def check(uri: str) -> RefURI:
    """Vet ``uri`` as :func:`parse` does, then as its store would before serving it (no request is made)."""
    ref = parse(uri)
    store_for(ref).check_ref(ref)
    return ref


def store_for(ref: RefURI | str) -> Store:
    """The (shared, thread-safe) store for a reference's scheme."""
    scheme = store_scheme(ref.raw if isinstance(ref, RefURI) else ref)
    if scheme not in _STORES:
        raise InvalidInput(f"unknown scheme {scheme!r} (supported: {', '.join(sorted(SCHEMES))})")
    target = _STORES[scheme]  # http and https share one store (one connection pool)
    with _lock:
        if target not in _instances:
            module, cls = target.split(":")
            _instances[target] = getattr(importlib.import_module(module), cls)()
        return _instances[target]


def prepare(scheme: str) -> None:
    """Build the store for ``scheme`` and whatever its first read would wait for (its client)."""
    store_for(f"{scheme}://").prepare()


def reset() -> None:
    """Forget store instances, so the next use reads credentials and endpoints from the environment again."""
    with _lock:
        _instances.clear()


__all__ = ["DEFAULT_MAX_OBJECTS", "SCHEMES", "Store", "check", "parse", "prepare", "store_for", "unpinned"]
