"""Stores: one per URI scheme, each registered by itself, found through a :class:`Stores` set.

Adding a scheme takes one store module (a :class:`~refmount.stores.base.Store` subclass naming its ``schemes``)
and one line in pyproject.toml's ``[project.entry-points."refmount.stores"]`` (like fsspec's registry)::

    s3 = "refmount.stores.s3:S3Store"
    "*.blob.core.windows.net" = "refmount.stores.azure:AzureStore"   # a host claimed among http(s) URLs

The entry points are package metadata: listing them imports no store, so ``refmount ls`` never pays for boto3;
a store's module is imported when a reference first needs it. There is no table to edit here.

A :class:`Stores` set holds one instance per store class, built on first use from the environment that class
names in ``environment`` (endpoints, credentials): when those variables change, the next use builds a new store,
so nothing has to be reset. :func:`store_for` and friends use the process's default set (the daemon's and the
CLI's); a test or a program that wants other timeouts or attempts builds its own ``Stores(policy=...)``.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from importlib import import_module

from ..errors import InvalidInput
from ..uri import RefURI, parse_ref, registered_stores, store_scheme
from .base import DEFAULT_MAX_OBJECTS, RetryPolicy, Store, unpinned


@functools.cache
def store_class(target: str) -> type[Store]:
    """The class an entry point names (``module:Class``), imported now."""
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


def schemes() -> frozenset[str]:
    """The schemes some registered store serves by name."""
    return frozenset(name for name in registered_stores() if not name.startswith("*."))


class Stores:
    """One instance of each store class (http and https share one: one connection pool), thread-safe.

    Fork-aware: a forked child (a DataLoader worker) makes stores of its own, since its parent's share their
    connections' sockets with it and obstore's requests run on a runtime whose threads the fork did not copy
    (a GET waits forever). The inherited ones are kept referenced, not dropped: tearing down such a client in
    the child can hang too.
    """

    def __init__(self, *, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self._instances: dict[str, tuple[tuple[str | None, ...], Store]] = {}
        self._inherited: list[Store] = []
        self._lock = threading.Lock()
        _live.add(self)

    def store_for(self, ref: RefURI | str) -> Store:
        """The store for a reference's scheme (or the host a store claims)."""
        scheme = store_scheme(ref.raw if isinstance(ref, RefURI) else ref)
        target = registered_stores().get(scheme) if scheme and not scheme.startswith("*.") else None
        if target is None:
            known = ", ".join(sorted(schemes())) or "none: is refmount installed (pip install -e .)?"
            raise InvalidInput(f"unknown scheme {scheme!r} (supported: {known})")
        cls = store_class(target)
        environment = tuple(map(os.environ.get, cls.environment))
        with self._lock:
            built = self._instances.get(target)
            if built is None or built[0] != environment:
                built = self._instances[target] = (environment, cls(policy=self.policy))
            return built[1]

    def parse(self, uri: str) -> RefURI:
        """Vet ``uri`` and check that some store serves its scheme."""
        return parse_ref(uri, known_schemes=schemes())

    def check(self, uri: str) -> RefURI:
        """Vet ``uri`` as :meth:`parse` does, then as its store would before serving it (no request is made)."""
        ref = self.parse(uri)
        self.store_for(ref).check_ref(ref)
        return ref

    def prepare(self, scheme: str) -> None:
        """Build the store for ``scheme`` and whatever its first read would wait for (its client)."""
        self.store_for(f"{scheme}://").prepare()

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread of the parent may have held it
        self._inherited.extend(store for _, store in self._instances.values())
        self._instances.clear()


_live: weakref.WeakSet[Stores] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for stores in list(_live):
        stores._forget_after_fork()


os.register_at_fork(after_in_child=_forget_after_fork)

default = Stores()  # the process's stores (the daemon's, the CLI's, the Python API's)
store_for = default.store_for
parse = default.parse
check = default.check
prepare = default.prepare

__all__ = ["DEFAULT_MAX_OBJECTS", "RetryPolicy", "Store", "Stores", "check", "parse", "prepare", "schemes",
           "store_for", "unpinned"]  # fmt: skip
