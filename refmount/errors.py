"""Exceptions that carry a one-line message a person can act on.

The CLI prints ``str(error)`` for any :class:`RefmountError` and exits non-zero;
anything else is a bug and gets a traceback.
"""

from __future__ import annotations


def about(path: str, exc: BaseException) -> str:
    """``exc``'s message about the entry at ``path``, led by that path (store errors already start with it)."""
    message = str(exc)
    return message if message.startswith(f"{path}: ") else f"{path}: {message}"


class RefmountError(Exception):
    """Base class: the message is shown to the user as-is, on one line."""

    exit_code = 1


class InvalidInput(RefmountError):
    """A name, path, URI or manifest that refmount refuses (nothing was changed)."""

    exit_code = 2


class InvalidKey(InvalidInput):
    """A listed object key that cannot be an artifact path (a control character, a '..' component, ...),
    refused because ``on_invalid="error"`` was asked for; nothing was added."""


class NotFound(RefmountError):
    """A project, artifact, version, alias or remote object that does not exist."""

    exit_code = 3


class StoreError(RefmountError):
    """A remote store failed: unreachable, denied, missing bucket, timeouts after retries."""

    exit_code = 4


class StoreUnavailable(StoreError):
    """A failure that is not about one object (credentials, an unreachable endpoint, access to a bucket):
    every other object of that store would fail the same way, so download and verify stop at the first."""


class BucketNotFound(NotFound, StoreUnavailable):
    """A bucket or container that does not exist (a NotFound, exit code 3, that ends download and verify)."""


class ChangedObject(StoreError):
    """The referenced object no longer matches the logged version (overwritten or deleted)."""


class Unpinned(StoreError):
    """An entry with nothing to pin its bytes by (no ETag, object version or content hash): never read."""


class TooManyObjects(InvalidInput):
    """A reference expanded to more objects than ``max_objects`` allows."""


def sole_exception(group: BaseExceptionGroup) -> BaseException | None:
    """The one exception inside ``group`` (trio wraps whatever a nursery raises), None if there are several."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending and len(leaves) < 2:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 and not pending else None
