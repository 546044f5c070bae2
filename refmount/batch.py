"""Per-entry jobs run side by side that stop together at a failure that is not about one entry.

A failure about one object (changed, deleted, a file in the way) is that entry's result and the others
go on. A :class:`~refmount.errors.StoreUnavailable` (credentials, an unreachable endpoint, a missing
bucket) would fail every other entry the same way: the first one cancels the rest and is raised alone,
so that the command prints one line instead of one per entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from .errors import StoreUnavailable


class Batch:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.failure: StoreUnavailable | None = None

    def start_soon(self, job: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._nursery.start_soon(self._run, job, args)

    async def _run(self, job: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await job(*args)
        except StoreUnavailable as exc:
            if self.failure is None:
                self.failure = exc
            self._nursery.cancel_scope.cancel()

    def raise_failure(self) -> None:
        """Raise the failure that ended the batch, if one did. Called once out of every enclosing nursery
        (a nursery would wrap it in an ExceptionGroup, and the CLI prints a RefmountError as one line)."""
        if self.failure is not None:
            raise self.failure


@asynccontextmanager
async def batch() -> AsyncIterator[Batch]:
    """Jobs started on the yielded batch run until all end (or one fails the store: see raise_failure)."""
    async with trio.open_nursery() as nursery:
        yield Batch(nursery)
