"""``http://`` and ``https://`` references: one file per URL (there is no listing in HTTP).

The version of a file is its ``ETag``: the digest is the ETag stripped of its quotes, as W&B
records it, and ``extra.etag`` keeps the header verbatim so it can be sent back. Reads are ``Range``
requests guarded by ``If-Match``: a changed file answers 412, and a server that ignores the
guard is caught by comparing the ETag it returns. A server that ignores ``Range`` answers 200
with the whole body, which is sliced.

Weak ETags (``W/"..."``) cannot be sent in ``If-Match`` (the comparison is strong, RFC 9110), so
such reads are checked only by the ETag and total size that the response reports.

For a file served without an ETag, W&B's digest is the URL itself, which pins nothing. refmount
records the same digest (so artifact digests agree) and pins the file by the MD5 of its content,
hashed at log time (streamed) into ``extra.content_md5``. It can only be verified whole, so a read
downloads the whole body, checks that MD5 and only then returns bytes; an entry with neither an
ETag nor a content MD5 (as W&B writes them) is never read. The verified body is kept in an
unlinked temporary file (in the daemon, under the cache directory; gone with the process) so that
block-wise readers download it once, not once per block; concurrent readers share one download.
Bodies larger than the spool budget are streamed again for each read, keeping only the requested
bytes in memory.
"""

from __future__ import annotations

import collections
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import requests
import requests.adapters

from ..errors import InvalidInput, NotFound, RefmountError, StoreError
from ..manifest import CONTENT_MD5, Entry, b64_md5
from ..uri import RefURI
from .base import DEFAULT_MAX_OBJECTS, RetryPolicy, Store, changed, location_entry, unpinned

_CHUNK = 1 << 20
_SPOOL_BYTES = 1 << 30  # temporary disk kept for verified bodies of files without an ETag
# Compression would change what Content-Length and byte ranges refer to.
_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "refmount"}
_TEMPORARY_STATUS = (429, 502, 503, 504)  # answers that say "try again"
T = TypeVar("T")
Sink = TypeVar("Sink", "_Window", "_Body")  # where a streamed body goes: the requested bytes, or all of them


class _Transient(StoreError):
    """A body that broke off mid-transfer, or an answer that says "try again" (429, 502, 503, 504)."""


class HTTPStore(Store):
    schemes = ("http", "https")

    def __init__(self, *, policy: RetryPolicy | None = None, spool_bytes: int = _SPOOL_BYTES) -> None:
        super().__init__(policy=policy)
        self._timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        self._local = threading.local()
        self._spool = _Spool(spool_bytes)
        self.scratch_dir: str | None = None  # where verified bodies are kept (None: the system's temp dir)

    def keep_bodies_in(self, directory: str) -> None:
        """Keep verified bodies in ``directory`` (the daemon's cache dir: bulk data, unlike /tmp, often memory)."""
        self.scratch_dir = directory

    @property
    def session(self) -> requests.Session:
        """One session per thread (requests does not promise a shared Session is thread-safe)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            # One request per call (urllib3's Retry(0, read=False)): refmount's policy retries, as for every
            # store. TLS is verified (REQUESTS_CA_BUNDLE is honoured).
            adapter = requests.adapters.HTTPAdapter(max_retries=0, pool_maxsize=32)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update(_HEADERS)
        return session

    def is_temporary_failure(self, exc: BaseException) -> bool:
        # no connection or no answer in time (SSLError is a ConnectionError that another attempt will not mend)
        return isinstance(exc, (_Transient, requests.exceptions.ConnectionError, requests.exceptions.Timeout)) and (
            not isinstance(exc, requests.exceptions.SSLError)
        )

    def error(self, exc: Exception, uri: str) -> RefmountError:
        return _error(exc, uri)

    # -- scanning -------------------------------------------------------------------------------------
    def check_ref(self, ref: RefURI) -> None:
        if not ref.netloc:
            raise InvalidInput(f"{ref.raw}: no host in the URL")

    def scan(self, ref: RefURI, *, name: str | None = None, checksum: bool = True,
             max_objects: int = DEFAULT_MAX_OBJECTS) -> Iterator[Entry]:  # fmt: skip
        self.check_ref(ref)
        if not checksum:
            return iter([location_entry(name or os.path.basename(ref.raw) or ref.netloc, ref.raw)])
        digest, size, extra = self._identify(ref.raw)
        path = name or ref.path.rstrip("/").rpartition("/")[2] or ref.netloc
        return iter([Entry(path=path, ref=ref.raw, digest=digest, size=size, extra=extra)])

    def _identify(self, url: str) -> tuple[str, int | None, dict[str, str]]:
        """Digest, size and extra of the file: from HEAD when it gives an ETag and a length, else
        from a streamed GET (which hashes the body when there is no ETag)."""
        response = self._request(url, "HEAD", {})
        if response.ok and response.headers.get("ETag") and _length(response) is not None:
            return _digest(response.headers["ETag"]), _length(response), {"etag": response.headers["ETag"]}
        if not response.ok and response.status_code not in (405, 501):
            raise _status_error(response, url)

        def get() -> tuple[str, int | None, dict[str, str]]:
            with self._stream(url, {}) as body:
                _raise_for(body, url)
                etag, size = body.headers.get("ETag"), _length(body)
                if etag and size is not None:
                    return _digest(etag), size, {"etag": etag}
                md5, size = hashlib.md5(), 0
                for chunk in _chunks(body, url):
                    md5.update(chunk)
                    size += len(chunk)
            if etag:
                return _digest(etag), size, {"etag": etag}
            # W&B's digest: the URL the body came from (after redirects, as requests spells it)
            return body.url, size, {CONTENT_MD5: b64_md5(md5.digest())}

        return self.retrying(get, url)

    # -- reading --------------------------------------------------------------------------------------
    def read(self, entry: Entry, offset: int, length: int) -> bytes:
        if length <= 0 or (entry.size is not None and offset >= entry.size):
            return b""
        if not entry.etag:
            return self._read_verified(entry, offset, length)
        end = offset + length - 1 if entry.size is None else min(offset + length, entry.size) - 1
        headers = {"Range": f"bytes={offset}-{end}", **self._guard(entry)}

        def get() -> bytes:
            with self._stream(entry.ref, headers) as response:
                if response.status_code == 416 and entry.size is None:
                    return b""  # past the end of a file of unknown size
                self._check_response(entry, response)
                if response.status_code == 200:  # the server ignored Range: it sends everything
                    return _slice(_chunks(response, entry.ref), offset, length)
                if _range_start(response) != offset:
                    raise StoreError(f"{entry.ref}: asked for bytes from {offset}, the server sent "
                                     f"{response.headers.get('Content-Range')!r}")  # fmt: skip
                return b"".join(_chunks(response, entry.ref))

        return self.retrying(get, entry.ref)

    def check(self, entry: Entry) -> None:
        if not entry.etag:
            self._read_verified(entry, 0, 0)
            return
        response = self._request(entry.ref, "HEAD", self._guard(entry))
        if response.status_code in (405, 501):  # no HEAD: a one-byte guarded GET says the same
            self.read(entry, 0, 1)
            return
        self._check_response(entry, response)

    def _guard(self, entry: Entry) -> dict[str, str]:
        etag = entry.etag
        if not etag or etag.startswith("W/"):
            return {}
        return {"If-Match": etag}

    def _check_response(self, entry: Entry, response: requests.Response) -> None:
        """Raise unless ``response`` is about the logged version of the file."""
        if response.status_code == 412:
            raise changed(entry, "the file changed (If-Match failed)")
        if response.status_code in (404, 410, 416):  # 416: the logged range is no longer inside the file
            raise changed(entry, f"the server answers {response.status_code} {response.reason}")
        _raise_for(response, entry.ref)
        etag = response.headers.get("ETag")
        if entry.etag and etag is not None and _opaque(etag) != _opaque(entry.etag):
            raise changed(entry, f"the file changed (ETag is now {etag})")
        total = _total_size(response)
        if entry.size is not None and total is not None and total != entry.size:
            raise changed(entry, f"the file changed (size is now {total}, logged {entry.size})")

    def _read_verified(self, entry: Entry, offset: int, length: int) -> bytes:
        """Bytes of an ETag-less file, returned only once the whole body has the logged MD5."""
        md5 = entry.content_md5
        if md5 is None:  # a digest that is the URL pins nothing: whatever the server has now is not the logged file
            raise unpinned(entry)
        if entry.size is not None and entry.size > self._spool.budget:
            wanted = min(length, entry.size - offset)
            return bytes(self._fetch_verified(entry, md5, lambda: _Window(offset, wanted)).data)
        new_body = lambda: _Body(self.scratch_dir)  # noqa: E731
        body = self._spool.get((entry.ref, md5), lambda: self._fetch_verified(entry, md5, new_body))
        return body.pread(offset, length)

    def _fetch_verified(self, entry: Entry, md5_b64: str, new_sink: Callable[[], Sink]) -> Sink:
        """Stream the whole body into a new sink (one per attempt); return it only if the body has the
        MD5 ``md5_b64``, else raise ChangedObject."""

        def get() -> Sink:
            sink, md5, position = new_sink(), hashlib.md5(), 0
            with self._stream(entry.ref, {}) as response:
                self._check_response(entry, response)
                for chunk in _chunks(response, entry.ref):
                    md5.update(chunk)
                    sink.pwrite(position, chunk)
                    position += len(chunk)
            if b64_md5(md5.digest()) != md5_b64:
                raise changed(entry, "its content changed (MD5 differs)")
            return sink

        return self.retrying(get, entry.ref)

    # -- requests -------------------------------------------------------------------------------------
    def _request(self, url: str, method: str, headers: dict[str, str]) -> requests.Response:
        """A request without a body to stream (HEAD), under the retry policy; a 'try again' status is retried."""

        def request() -> requests.Response:
            response = self.session.request(method, url, headers=headers, timeout=self._timeout)
            if response.status_code in _TEMPORARY_STATUS:
                raise _status_error(response, url)
            return response

        return self.retrying(request, url)

    def _stream(self, url: str, headers: dict[str, str]) -> requests.Response:
        """One GET whose body is read as it comes (the caller runs it under the retry policy)."""
        return self.session.get(url, headers=headers, timeout=self._timeout, stream=True)


class _Window:
    """Keeps only bytes [offset, offset + length) of a body written through it (one too big to spool)."""

    def __init__(self, offset: int, length: int) -> None:
        self.offset, self.data = offset, bytearray(max(length, 0))

    def pwrite(self, position: int, chunk: bytes) -> None:
        part = _overlap(chunk, position, self.offset, len(self.data))
        at = max(position - self.offset, 0)
        self.data[at : at + len(part)] = part


class _Body:
    """A body in an unlinked temporary file; its descriptor closes with the last reference, so a
    reader holding one never reads a descriptor number that was closed and reused."""

    fd = -1

    def __init__(self, directory: str | None) -> None:
        fd, path = tempfile.mkstemp(prefix="refmount-http-", dir=directory)
        os.unlink(path)
        self.fd, self.size = fd, 0

    def pwrite(self, position: int, chunk: bytes) -> None:
        os.pwrite(self.fd, chunk, position)
        self.size = max(self.size, position + len(chunk))

    def pread(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, max(0, min(length, self.size - offset)), offset)

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:  # bound now: module globals go at exit
        if self.fd >= 0:
            _close(self.fd)


class _Spool:
    """Verified bodies by key, least recently used dropped first beyond ``budget`` bytes; one load per key
    at a time (concurrent readers of a block of the same file wait for the first download)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._bodies: collections.OrderedDict[tuple[str, str], _Body] = collections.OrderedDict()
        self._bytes = 0
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str], load: Callable[[], _Body]) -> _Body:
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._bodies:
                    self._bodies.move_to_end(key)
                    return self._bodies[key]
            try:
                body = load()
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:  # published and ungated at once: a newcomer either waits or finds the body
                self._loading.pop(key, None)
                self._bodies[key] = body
                self._bytes += body.size
                while self._bytes > self.budget and len(self._bodies) > 1:
                    _, dropped = self._bodies.popitem(last=False)
                    self._bytes -= dropped.size
            return body


def _error(exc: Exception, url: str) -> RefmountError:
    """The one-line error, naming ``url``, that a failure of requests becomes."""
    if isinstance(exc, requests.exceptions.SSLError):
        return StoreError(f"{url}: TLS verification failed ({_reason(exc)}); set REQUESTS_CA_BUNDLE for a private CA")
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return StoreError(f"{url}: too many redirects")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return StoreError(f"{url}: cannot reach the server ({_reason(exc)})")
    return StoreError(f"{url}: {_reason(exc)}")


def _chunks(response: requests.Response, url: str) -> Iterator[bytes]:
    try:
        yield from response.iter_content(_CHUNK)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
            requests.exceptions.Timeout) as exc:  # fmt: skip
        raise _Transient(f"{url}: the connection broke while reading ({_reason(exc)})") from exc


def _overlap(chunk: bytes, position: int, offset: int, length: int) -> bytes:
    """The part of ``chunk`` (at ``position`` in the body) that falls inside [offset, offset + length)."""
    return chunk[max(offset - position, 0) : max(offset + length - position, 0)]


def _slice(chunks: Iterable[bytes], offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of a streamed body, stopping as soon as they are in."""
    kept, position = [], 0
    for chunk in chunks:
        kept.append(_overlap(chunk, position, offset, length))
        position += len(chunk)
        if position >= offset + length:
            break
    return b"".join(kept)


def _raise_for(response: requests.Response, url: str) -> None:
    if not response.ok:
        raise _status_error(response, url)


def _status_error(response: requests.Response, url: str) -> RefmountError:
    status = f"{response.status_code} {response.reason}".strip()
    if response.status_code in (404, 410):
        return NotFound(f"{url}: no such file (HTTP {status})")
    if response.status_code in (401, 403):
        return StoreError(f"{url}: access denied (HTTP {status}); refmount sends no credentials to HTTP servers")
    error = _Transient if response.status_code in _TEMPORARY_STATUS else StoreError
    return error(f"{url}: the server answered HTTP {status}")


def _digest(etag: str) -> str:
    """W&B's digest for an ETag: every leading and trailing quote stripped (a weak ``W/"x"`` gives
    ``W/"x``, as wandb 0.31 records it)."""
    return etag.strip('"')


def _opaque(etag: str) -> str:
    """The ETag's opaque part, for the weak comparison of a response's ETag with the logged one."""
    return etag.removeprefix("W/").strip('"')


def _length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _total_size(response: requests.Response) -> int | None:
    """The full file size a response reports: ``Content-Range: bytes a-b/TOTAL`` or a 200's length."""
    content_range = response.headers.get("Content-Range", "")
    if content_range:
        total = content_range.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    return _length(response) if response.status_code == 200 else None


def _range_start(response: requests.Response) -> int | None:
    first = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("-")[0]
    return int(first) if first.isdigit() else None


def _reason(exc: BaseException) -> str:
    """The innermost, most specific message of a requests/urllib3 error chain, on one line."""
    while True:
        inner = getattr(exc, "reason", None) or (exc.args[0] if exc.args else None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return " ".join(str(exc).split()) or type(exc).__name__
