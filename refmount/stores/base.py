"""The interface every URI scheme implements, and helpers they share."""

from __future__ import annotations

import abc
import logging
import re
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..errors import ChangedObject, NotFound, RefmountError, StoreError, TooManyObjects, Unpinned
from ..manifest import QUOTED_REF, UNPINNED_REASON, Entry, join_path
from ..uri import RefURI, object_ref, parse_ref

# One line per attempt that failed: the CLI's terminal leaves them out (the last failure says it all), a mount's
# log keeps them.
retry_log = logging.getLogger("refmount.stores.retries")

DEFAULT_MAX_OBJECTS = 10_000_000

# Every remote call is bounded: connect/read timeouts per attempt and a few attempts with backoff, all
# within a total deadline (an endpoint that accepts connections and never answers would otherwise hold a
# reader for every attempt's read timeout in turn: over two minutes).
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 4
BASE_DELAY_S = 0.2
DEADLINE_S = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """The one retry policy of every store: the SDKs' own retries are turned off, so an attempt is one request."""

    connect_timeout: float = CONNECT_TIMEOUT_S  # per attempt
    read_timeout: float = READ_TIMEOUT_S  # per attempt: the longest silence while waiting for bytes
    attempts: int = MAX_ATTEMPTS
    base_delay: float = BASE_DELAY_S  # doubled after each attempt
    deadline: float = DEADLINE_S  # no attempt starts this long after the first

    def run(self, call: Callable[[], T], *, what: str, retryable: Callable[[BaseException], bool]) -> T:
        return with_retries(call, what=what, retryable=retryable, attempts=self.attempts,
                            base_delay=self.base_delay, deadline=self.deadline)  # fmt: skip


class Store(abc.ABC):
    """One URI scheme: expand references into entries at log time; read pinned bytes later.

    A store registers itself (see :mod:`refmount.stores`), names the environment variables its clients are
    built from (a change builds a new store), and sends each request once: :meth:`retrying` runs it under the
    :class:`RetryPolicy`, asking :meth:`is_temporary_failure` what to try again and :meth:`error` for the
    one-line error a failure becomes.
    """

    schemes: ClassVar[tuple[str, ...]]
    environment: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()

    def is_temporary_failure(self, exc: BaseException) -> bool:
        """Whether a request that failed with ``exc`` (an SDK's exception) is worth another attempt."""
        return False

    def error(self, exc: Exception, uri: str) -> RefmountError:
        """The one-line error, naming ``uri``, that an SDK's exception ``exc`` becomes."""
        lines = str(exc).strip().splitlines()
        return StoreError(f"{uri}: {lines[0] if lines else type(exc).__name__}")

    def retrying(self, call: Callable[[], T], uri: str) -> T:
        """``call`` (one request) under the retry policy; every failure becomes a one-line error naming ``uri``."""

        def attempt() -> T:
            try:
                return call()
            except RefmountError:
                raise
            except Exception as exc:
                raise self.error(exc, uri) from exc

        return self.policy.run(attempt, what=uri, retryable=self._temporary)

    def _temporary(self, exc: BaseException) -> bool:
        """A temporary failure, or the error it was mapped to (its cause)."""
        return self.is_temporary_failure(exc) or (
            isinstance(exc, RefmountError) and exc.__cause__ is not None and self.is_temporary_failure(exc.__cause__)
        )

    @abc.abstractmethod
    def check_ref(self, ref: RefURI) -> None:
        """Raise InvalidInput unless this store could serve ``ref`` (a bucket named, only query parameters
        it understands, ...), without any request. :meth:`scan` starts with it; imported entries get it too."""

    @abc.abstractmethod
    def scan(
        self, ref: RefURI, *, name: str | None = None, checksum: bool = True, max_objects: int = DEFAULT_MAX_OBJECTS
    ) -> Iterator[Entry]:
        """Yield one entry per object under ``ref`` (a prefix or a single object).

        Paths are relative to the prefix, under ``name`` when given; a single object gets
        ``name`` or its base name. Paths are not vetted: a key that cannot be an artifact path is
        yielded as it is, for the caller to skip or refuse (see :mod:`refmount.selection`), so that
        one odd key does not stop a listing. ``checksum=False`` yields one entry whose digest is the URI.
        More than ``max_objects`` objects raises TooManyObjects (never a silent truncation).
        """

    @abc.abstractmethod
    def read(self, entry: Entry, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset`` of exactly the logged object version.

        Raises ChangedObject when the object no longer matches what was logged.
        """

    def read_into(self, entry: Entry, offset: int, targets: Sequence[memoryview]) -> int:
        """Fill ``targets`` in order with the logged bytes from ``offset`` on, as :meth:`read` would
        return them; returns how many bytes the store sent (the caller checks it: it may be short).

        Stores that can stream a response straight into the targets override this.
        """
        return fill(targets, [self.read(entry, offset, sum(len(t) for t in targets))])

    def prepare(self) -> None:  # noqa: B027 (optional: most stores have nothing to build)
        """Build now what the first read would otherwise wait for (a client, say); optional."""

    @abc.abstractmethod
    def check(self, entry: Entry) -> None:
        """Raise ChangedObject unless the logged object version still resolves (cheap: no data)."""


@dataclass(frozen=True)
class Found:
    """One object version as the store shows it now, in a listing or to a request about that object alone."""

    key: str
    version_id: str | None
    etag: str | None  # without quotes
    size: int | None


class ListingStore(Store):
    """A store of buckets that list their objects by key prefix (S3, GCS, Azure).

    It owns scanning: a reference names one object (which wins over a "directory" of the same name) or a prefix
    whose objects are listed a page at a time, ``max_objects`` enforced as they come. The store supplies
    :meth:`place`, :meth:`single` and :meth:`listed`. It checks many entries with one listing page (see
    :mod:`refmount.verify`), and one entry alone by asking for its pinned version: both go through
    :meth:`mismatch`, the one comparison.
    """

    gone: ClassVar[str]  # why, when nothing is there (the pinned version, else the current object)
    overwritten: ClassVar[str]  # why, when the ETag differs
    objects: ClassVar[str] = "objects"  # what the store calls them, for messages

    def scan(
        self, ref: RefURI, *, name: str | None = None, checksum: bool = True, max_objects: int = DEFAULT_MAX_OBJECTS
    ) -> Iterator[Entry]:
        self.check_ref(ref)
        base, bucket, key = self.place(ref)
        if not checksum:
            return iter([location_entry(name or key or bucket, f"{base}/{key}")])
        if ref.query or (key and not key.endswith("/")):
            single = self.single(ref, key, name or key.rpartition("/")[2])
            if single is not None:
                return iter([single])
        prefix = key if not key or key.endswith("/") else key + "/"
        return limit(self._listed(ref, base, prefix, name), max_objects, ref)

    def _listed(self, ref: RefURI, base: str, prefix: str, name: str | None) -> Iterator[Entry]:
        found = False
        for entry in self.listed(ref, prefix, lambda key: join_path(name, key[len(prefix) :])):
            found = True
            yield entry
        if not found:
            raise NotFound(f"no {self.objects} under {base}/{prefix}")

    @abc.abstractmethod
    def place(self, ref: RefURI) -> tuple[str, str, str]:
        """Where ``ref`` points: the base its entries' refs start with (``s3://BUCKET``), the bucket's name and
        the key (or prefix) in it."""

    @abc.abstractmethod
    def single(self, ref: RefURI, key: str, path: str) -> Entry | None:
        """The entry, at ``path``, of the object ``ref`` names (its version, if the query names one); None when
        ``key`` is not an object (a prefix, then)."""

    @abc.abstractmethod
    def listed(self, ref: RefURI, prefix: str, path_of: Callable[[str], str]) -> Iterator[Entry]:
        """The current objects under ``prefix`` (folder markers left out), each at ``path_of(key)``."""

    @abc.abstractmethod
    def locate(self, entry: Entry) -> tuple[Hashable, str]:
        """The bucket (container, ...) that holds ``entry``'s object, as a value, and its key there."""

    @abc.abstractmethod
    def list_pages(self, where: Hashable, prefix: str, *, versions: bool, uri: str) -> Iterator[list[Found]]:
        """The objects in ``where`` whose keys start with ``prefix`` (every version of each, with ``versions``),
        a page at a time in key order (UTF-8 byte order: Python's order of str); failures name ``uri``."""

    @abc.abstractmethod
    def pinned_version(self, entry: Entry) -> str | None:
        """The object version ``entry`` is pinned to, as listings name it; None: the current object."""

    @abc.abstractmethod
    def found(self, entry: Entry) -> Found | None:
        """What the store holds for ``entry`` now (its pinned version, else the current object): None if
        nothing. One request, no data."""

    def etag_pins(self, entry: Entry) -> bool:
        """Whether ``entry``'s ETag must agree (reads send it as If-Match)."""
        return entry.is_snapshot

    def mismatch(self, entry: Entry, found: Found | None) -> str | None:
        """Why ``found`` (None: nothing there) is not the logged object of ``entry``; None when it is."""
        if found is None:
            return self.gone
        if self.etag_pins(entry) and found.etag != (entry.etag or entry.digest).strip('"'):
            return self.overwritten
        if entry.size is not None and found.size is not None and found.size != entry.size:
            return f"size is now {found.size}, logged {entry.size}"
        return None

    def check(self, entry: Entry) -> None:
        why = self.mismatch(entry, self.found(entry))
        if why is not None:
            raise changed(entry, why)


# A ref whose netloc and key parse_ref would return as they are written: nothing quoted, no query, no
# fragment, no user, no control character, no leading slash in the key.
_PLAIN_REF = re.compile(r"[a-z0-9]+://([^/?#%@:\x00-\x20\x7f]+)/((?:[^/?#%\x00-\x1f\x7f][^?#%\x00-\x1f\x7f]*)?)")


def netloc_and_path(entry: Entry) -> tuple[str, str]:
    """``parse_ref``'s netloc and path of the entry's ref (an S3 bucket and key, say), without parsing the plain
    refs that almost every entry has: a verify of a million entries would spend more on parsing than on listing."""
    plain = None if entry.ref_quoted else _PLAIN_REF.fullmatch(entry.ref)
    if plain:
        return plain[1], plain[2]
    parsed = parse_ref(entry.ref, quoted=entry.ref_quoted)
    return parsed.netloc, parsed.path


def fill(targets: Sequence[memoryview], chunks: Iterable[bytes | memoryview]) -> int:
    """Copy ``chunks`` into ``targets`` one after the other; returns the bytes the chunks held
    (more than fit, when they overflow: the excess is counted, not copied)."""
    slots = iter(targets)
    target, used, total = next(slots, None), 0, 0
    for chunk in chunks:
        total += len(chunk)
        view = memoryview(chunk)
        while view and target is not None:
            n = min(len(view), len(target) - used)
            target[used : used + n] = view[:n]
            view, used = view[n:], used + n
            if used == len(target):
                target, used = next(slots, None), 0
    return total


def object_entry(path: str, base: str, key: str, digest: str, size: int, extra: dict[str, Any]) -> Entry:
    """The entry of object ``key`` under ``base`` (``s3://bucket``), its ref written as W&B writes it, or
    percent-encoded and marked so where the key holds what a W&B ref cannot carry (see uri.object_ref)."""
    ref, quoted = object_ref(base, key)
    return Entry(path=path, ref=ref, digest=digest, size=size, extra={**extra, QUOTED_REF: True} if quoted else extra)


def location_entry(path: str, location: str) -> Entry:
    """The single entry of a ``checksum=False`` reference: a location, not a snapshot. As W&B makes it:
    ``path`` is the name given or, by store, the key; ``location`` (ref and digest) has no query."""
    return Entry(path=path.strip("/"), ref=location, digest=location)


def limit(entries: Iterable[T], max_objects: int, ref: RefURI) -> Iterator[T]:
    """Pass objects through, failing as soon as there are more than ``max_objects``."""
    for count, entry in enumerate(entries, 1):
        if count > max_objects:
            raise TooManyObjects(
                f"{ref.raw} has more than max_objects={max_objects:,} objects; "
                "raise --max-objects or reference a narrower prefix"
            )
        yield entry


def changed(entry: Entry, why: str) -> ChangedObject:
    return ChangedObject(
        f"{entry.path}: reference {entry.ref} no longer matches the logged version "
        f"(digest {entry.digest}{', version ' + entry.version_id if entry.version_id else ''}): {why}"
    )


def unpinned(entry: Entry) -> Unpinned:
    return Unpinned(f"{entry.path}: reference {entry.ref} has nothing to pin its bytes by ({UNPINNED_REASON}); "
                    "refusing to read whatever it holds now")  # fmt: skip


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    retryable: Callable[[BaseException], bool],
    attempts: int = MAX_ATTEMPTS,
    base_delay: float = BASE_DELAY_S,
    deadline: float = DEADLINE_S,
) -> T:
    """Run ``call`` with bounded exponential backoff on transient failures, then give up clearly: after
    ``attempts`` attempts, or when the next one would start ``deadline`` seconds or more after the first.
    A refmount error given up on keeps its type (an unreachable endpoint stays StoreUnavailable)."""
    start = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            delay = base_delay * 2 ** (attempt - 1)
            elapsed = time.monotonic() - start
            if not retryable(exc) or attempt == attempts or elapsed + delay >= deadline:
                if not retryable(exc):
                    raise
                gave_up = f"giving up after {attempt} attempts in {elapsed:.1f} s"
                if isinstance(exc, RefmountError):
                    raise type(exc)(f"{exc} ({gave_up})") from exc
                raise StoreError(f"{what}: {gave_up}: {exc}") from exc
            retry_log.warning("Retrying %s in %.1f s: attempt %d of %d failed (%s)", what, delay, attempt, attempts,
                              exc)  # fmt: skip
            time.sleep(delay)
    raise AssertionError("unreachable")
