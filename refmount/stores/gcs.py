"""``gs://`` references through gcsfs, on Google Cloud Storage or an emulator.

Scanning lists the prefix through the JSON API (one request per 1,000 objects, never a request
per object) and records each object's etag as the digest and its generation as
``extra.versionID``. Reads are ranged media GETs that name that generation, so they return the
logged bytes or fail: an overwritten object in an unversioned bucket no longer has the logged
generation and raises ChangedObject. The generation is sent as a request parameter, not in
gcsfs's ``bucket/key#<generation>`` path syntax, which misreads object names containing ``#``
or ``?`` (``a?b#1`` would become object ``a``).

gcsfs 2026.x exports a subclass that asks each bucket for its storage layout over gRPC
(``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT``, on by default); against an emulator or a restricted
network every such probe waits a minute and is retried on every operation. refmount uses
``gcsfs.core.GCSFileSystem`` itself, which only speaks the JSON API over HTTP.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

import aiohttp
import google.auth
import google.auth.exceptions
import requests.exceptions
from gcsfs.core import GCSFileSystem
from gcsfs.retry import HttpError, is_retriable

from ..compat import checked
from ..errors import BucketNotFound, InvalidInput, NotFound, RefmountError, StoreError, StoreUnavailable
from ..manifest import Entry
from ..uri import RefURI, parse_ref
from .base import (
    Found,
    ListingStore,
    RetryPolicy,
    changed,
    netloc_and_path,
    object_entry,
)  # fmt: skip

_PAGE_SIZE = 1000  # the JSON API maximum per listing request
_LIST_FIELDS = "items(name,size,etag,generation),nextPageToken"
T = TypeVar("T")


class _GCSFileSystem(GCSFileSystem):
    """The plain JSON-API filesystem, with gcsfs's own retries taken out.

    gcsfs retries each request six times with up to 32 s sleeps (about a minute against an
    unreachable endpoint); refmount's one retry policy applies instead, as for every store. The undecorated
    request function is not a public interface: with a gcsfs outside the checked versions, gcsfs's own
    retries stay (a dead endpoint then takes that minute to be reported).
    """

    _request = getattr(GCSFileSystem._request, "__wrapped__", GCSFileSystem._request)


class GCSStore(ListingStore):
    schemes = ("gs",)
    environment = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG")
    gone = "the logged generation no longer exists (overwritten or deleted)"
    overwritten = "the object was overwritten (etag differs)"

    def __init__(self, *, policy: RetryPolicy | None = None) -> None:
        super().__init__(policy=policy)
        self._fs: GCSFileSystem | None = None
        self._lock = threading.Lock()

    @property
    def fs(self) -> GCSFileSystem:
        """One filesystem for all threads (gcsfs runs its requests on fsspec's own event loop thread)."""
        with self._lock:
            if self._fs is None:
                self._fs = (_GCSFileSystem if checked("gcsfs") else GCSFileSystem)(
                    token=_token(),
                    requests_timeout=aiohttp.ClientTimeout(
                        sock_connect=self.policy.connect_timeout, sock_read=self.policy.read_timeout
                    ),
                    skip_instance_cache=True,  # a new store must see a changed environment
                )
            return self._fs

    def is_temporary_failure(self, exc: BaseException) -> bool:
        if isinstance(exc, HttpError):
            return is_retriable(exc)  # 5xx, 408, 429
        # no connection or no answer in time; requests' ProxyError: gcsfs's way of reporting a 502
        return isinstance(exc, (aiohttp.ClientError, TimeoutError, requests.exceptions.ProxyError))

    def error(self, exc: Exception, uri: str) -> RefmountError:
        return _error(exc, uri)

    # -- scanning -------------------------------------------------------------------------------------
    def check_ref(self, ref: RefURI) -> None:
        _bucket_key(ref)
        unknown = [k for k, _ in ref.query if k != "generation"]
        if unknown:
            raise InvalidInput(f"{ref.raw}: unsupported query parameter {unknown[0]!r} (only generation)")

    def place(self, ref: RefURI) -> tuple[str, str, str]:
        bucket, key = _bucket_key(ref)
        return f"gs://{bucket}", bucket, key

    def single(self, ref: RefURI, key: str, path: str) -> Entry | None:
        generation = ref.query_value("generation")
        try:
            meta = self._call(ref.raw, "GET", "b/{}/o/{}", ref.netloc, key, generation=generation)
        except NotFound:
            if generation is not None:
                raise NotFound(f"{ref.raw}: no such object generation") from None
            return None
        return _entry(ref.netloc, meta, path)

    def listed(self, ref: RefURI, prefix: str, path_of: Callable[[str], str]) -> Iterator[Entry]:
        for items in self._pages(ref.netloc, prefix, versions=False, uri=ref.raw):
            for item in items:
                if item["name"].endswith("/") and int(item["size"]) == 0:
                    continue  # a "folder" marker made by consoles, not data
                yield _entry(ref.netloc, item, path_of(item["name"]))

    # -- reading --------------------------------------------------------------------------------------
    def read(self, entry: Entry, offset: int, length: int) -> bytes:
        if length <= 0 or (entry.size is not None and offset >= entry.size):
            return b""
        bucket, key, generation = self._pin(entry)
        end = offset + length if entry.size is None else min(offset + length, entry.size)

        def get() -> bytes:
            headers, body = self.fs.call("GET", "b/{}/o/{}", bucket, key, alt="media", generation=generation,
                                         headers={"Range": f"bytes={offset}-{end - 1}"})  # fmt: skip
            return body if "Content-Range" in headers else body[offset:end]  # 200: the whole object

        return self._pinned(entry, get)

    # -- checking (see refmount.verify) -----------------------------------------------------------------
    def locate(self, entry: Entry) -> tuple[Hashable, str]:
        return netloc_and_path(entry)

    def pinned_version(self, entry: Entry) -> str | None:
        return entry.version_id

    def found(self, entry: Entry) -> Found | None:
        bucket, key = _bucket_key(parse_ref(entry.ref))
        try:
            meta = self._call(entry.ref, "GET", "b/{}/o/{}", bucket, key, generation=entry.version_id)
        except NotFound:
            return None
        return _found(meta)

    def list_pages(self, where: Hashable, prefix: str, *, versions: bool, uri: str) -> Iterator[list[Found]]:
        for items in self._pages(str(where), prefix, versions=versions, uri=uri):
            yield [_found(item) for item in items]

    def _pages(self, bucket: str, prefix: str, *, versions: bool, uri: str) -> Iterator[list[dict[str, Any]]]:
        """The objects under ``prefix``, a listing page at a time (every version of each, with ``versions``)."""
        page_token: str | None = None
        while True:
            try:
                page = self._call(uri, "GET", "b/{}/o", bucket, prefix=prefix or None, pageToken=page_token,
                                  versions="true" if versions else None, maxResults=_PAGE_SIZE,
                                  fields=_LIST_FIELDS)  # fmt: skip
            except NotFound:  # a listing is only "not found" without its bucket
                raise BucketNotFound(f"{uri}: bucket {bucket!r} does not exist at {_endpoint()}") from None
            yield page.get("items", [])
            page_token = page.get("nextPageToken")
            if not page_token:
                return

    def etag_pins(self, entry: Entry) -> bool:
        return entry.version_id is None and entry.is_snapshot  # a generation alone fixes the bytes

    def _pin(self, entry: Entry) -> tuple[str, str, str | None]:
        """Bucket, key and the generation to read. An entry logged without a generation (an imported
        manifest) is pinned to the current one only if the object still has the logged etag."""
        bucket, key = _bucket_key(parse_ref(entry.ref, quoted=entry.ref_quoted))
        generation = entry.version_id
        if generation is None and entry.is_snapshot:
            meta = self._pinned(entry, lambda: self.fs.call("GET", "b/{}/o/{}", bucket, key, json_out=True))
            if meta.get("etag") != (entry.etag or entry.digest):
                raise changed(entry, "the object was overwritten (etag differs)")
            generation = meta.get("generation")
        return bucket, key, generation

    def _pinned(self, entry: Entry, call: Callable[[], T]) -> T:
        try:
            return self.retrying(call, entry.ref)
        except NotFound:
            raise changed(entry, "the logged generation no longer exists (overwritten or deleted)") from None

    def _call(self, uri: str, method: str, path: str, *args: Any, **params: Any) -> Any:
        """One JSON-API request (None parameters are left out); failures name ``uri``."""
        return self.retrying(lambda: self.fs.call(method, path, *args, json_out=True, **params), uri)


def _endpoint() -> str:
    """Where requests go, for messages: an emulator named by STORAGE_EMULATOR_HOST, or Google's (as gcsfs)."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if emulator not in ("", "default"):
        return emulator if "://" in emulator else f"http://{emulator}"
    return "https://storage.googleapis.com"


def _token() -> str:
    """How gcsfs authenticates: google-auth's default chain, or anonymous when there is nothing to use.

    gcsfs's own chain (``token=None``) ends with a GCE metadata probe that waits about 15 s off
    Google Cloud; google-auth's default chain already covers GCE, so it is used on its own. With
    no credentials at all, public buckets still work anonymously.
    """
    if os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default"):
        return "anon"
    if not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):  # a configured file must work, or fail loudly
        try:
            google.auth.default()
        except google.auth.exceptions.DefaultCredentialsError:
            return "anon"
    return "google_default"


def _error(exc: Exception, uri: str) -> RefmountError:
    """The one-line error a gcsfs/aiohttp/google-auth failure becomes."""
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"{uri}: no such object")
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):
        return StoreUnavailable(f"{uri}: Google credentials failed ({exc}); set GOOGLE_APPLICATION_CREDENTIALS or "
                                "run `gcloud auth application-default login`")  # fmt: skip
    if isinstance(exc, HttpError):
        if exc.code in (401, 403):
            hint = "check GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`"
            return StoreUnavailable(f"{uri}: access denied ({exc.code}: {exc.message}); {hint}")
        return StoreError(f"{uri}: GCS error {exc.code}: {exc.message}")
    if isinstance(exc, aiohttp.ClientConnectorError):  # then no object there can be reached
        return StoreUnavailable(f"{uri}: cannot reach the GCS endpoint ({exc})")
    if isinstance(exc, TimeoutError):
        return StoreError(f"{uri}: no answer from the GCS endpoint {_endpoint()} in time")
    if isinstance(exc, aiohttp.ClientError):
        return StoreError(f"{uri}: GCS request failed ({type(exc).__name__}: {exc})")
    if isinstance(exc, requests.exceptions.ProxyError):  # gcsfs's way of reporting a 502
        return StoreError(f"{uri}: GCS error 502 (bad gateway)")
    if isinstance(exc, OSError):  # gcsfs reports 403 as OSError("Forbidden: <path>\n<the server's message>")
        reason, _, message = str(exc).partition("\n")
        if reason.startswith("Forbidden"):
            why = f" ({message.splitlines()[0]})" if message.strip() and not message.startswith("<") else ""
            return StoreUnavailable(f"{uri}: access denied{why}; check GOOGLE_APPLICATION_CREDENTIALS or the "
                                    "bucket's permissions")  # fmt: skip
    return StoreError(f"{uri}: {_first_line(exc)}")  # gcsfs's ValueError: "Bad Request", requester-pays buckets


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _bucket_key(ref: RefURI) -> tuple[str, str]:
    if not ref.netloc:
        raise InvalidInput(f"{ref.raw}: no bucket name (expected gs://BUCKET/KEY)")
    return ref.netloc, ref.path


def _found(item: dict[str, Any]) -> Found:
    return Found(item["name"], str(item["generation"]), item.get("etag"), int(item["size"]))


def _entry(bucket: str, item: dict[str, Any], path: str) -> Entry:
    key = item["name"]
    etag = item["etag"]
    # W&B records the generation as a number; it is an int64 in the JSON API (sent as a string).
    extra: dict[str, Any] = {"versionID": int(item["generation"])}  # as W&B: the etag is the digest
    return object_entry(path, f"gs://{bucket}", key, etag, int(item["size"]), extra)
