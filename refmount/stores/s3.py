"""``s3://`` references through boto3, on AWS or any S3-compatible server.

Scanning lists (``ListObjectVersions`` on versioned buckets, else ``ListObjectsV2``): one request
per 1,000 objects and never a request per object. Reads name the logged ``VersionId`` and send
``If-Match: <ETag>``, so an overwritten object in an unversioned bucket fails instead of
returning other bytes. Reads go through native code (:mod:`refmount.stores.s3_native`) with boto3's
endpoint and credentials, and through boto3 itself for what that cannot express.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from functools import partial
from typing import Any

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config
from botocore.response import StreamingBody

from ..compat import checked
from ..errors import BucketNotFound, InvalidInput, NotFound, RefmountError, StoreError, StoreUnavailable
from ..manifest import Entry
from ..uri import RefURI, parse_ref
from .base import (
    Found,
    ListingStore,
    RetryPolicy,
    changed,
    fill,
    netloc_and_path,
    object_entry,
)  # fmt: skip
from .s3_listing import ListingPages
from .s3_native import BrokenBody, Missing, NativeGets, Precondition, Unexpressible, Unreachable
from .s3_native import usable as native_usable

log = logging.getLogger(__name__)

_PAGE_SIZE = 1000  # the S3 maximum: one listing request per 1,000 objects
_CHUNK = 1 << 20  # body reads of this size reuse the same heap memory
_NO_CREDENTIALS = ("no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                   "or an instance role)")  # fmt: skip
_ENDPOINT_VARS = ("AWS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class _Unreachable(StoreUnavailable):
    """A native GET that could not be sent or got no answer in time."""


# Worth another attempt: no connection, no answer in time, a body that broke off (native or botocore) ...
_TEMPORARY = (
    botocore.exceptions.ConnectionError, botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError, botocore.exceptions.IncompleteReadError, _Unreachable, BrokenBody,
)  # fmt: skip
# ... or a server that says so
_TEMPORARY_STATUS = (429, 500, 502, 503, 504)
_TEMPORARY_CODES = ("Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "InternalError")


def _local_server() -> bool:
    """An S3-compatible server named in the environment: addressed path-style (bucket in the path)."""
    return any(os.environ.get(v) for v in _ENDPOINT_VARS)


class S3Store(ListingStore):
    schemes = ("s3",)
    environment = (*_ENDPOINT_VARS, "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")  # fmt: skip
    gone = "the object was deleted"  # HEAD has no error body: a missing version is a 404 too
    overwritten = "the object was overwritten (ETag differs)"

    def __init__(self, *, policy: RetryPolicy | None = None) -> None:
        super().__init__(policy=policy)
        self._client: Any = None
        self._native: NativeGets | None = None
        self._listing_pages: ListingPages | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """One boto3 client for all threads (boto3 clients are thread-safe). A setup it cannot be built
        from (an unknown AWS_PROFILE, no credentials at all) is a one-line StoreUnavailable."""
        with self._lock:
            if self._client is None:
                try:
                    client, session = self._new_client(self.policy)
                    credentials = session.get_credentials()
                except botocore.exceptions.BotoCoreError as exc:
                    raise StoreUnavailable(f"cannot set up the S3 client: {exc}") from exc
                if credentials is None:  # the native client refuses to start without any (a ValueError)
                    raise StoreUnavailable(_NO_CREDENTIALS)
                if native_usable():
                    self._native = NativeGets(client, session, path_style=_local_server(),
                                              connect_timeout=self.policy.connect_timeout,
                                              timeout=self.policy.read_timeout)  # fmt: skip
                self._client = client
            return self._client

    @property
    def native(self) -> NativeGets | None:
        """The native client of reads (see :mod:`refmount.stores.s3_native`), made with the boto3 client; None in
        a process that cannot use it."""
        self.client  # noqa: B018 (builds both)
        return self._native

    @staticmethod
    def _new_client(policy: RetryPolicy) -> tuple[Any, boto3.session.Session]:
        endpoint = os.environ.get("AWS_S3_ENDPOINT_URL") or None  # boto3 reads the other two itself
        config = Config(
            connect_timeout=policy.connect_timeout, read_timeout=policy.read_timeout,
            # One request per call: refmount's policy retries (botocore's would multiply its attempts).
            retries={"total_max_attempts": 1, "mode": "standard"}, max_pool_connections=64,
            s3={"addressing_style": "path"} if _local_server() else None,
            # Pinning (VersionId + If-Match) and the cache's own checksums already guard the
            # bytes; hashing every response body again costs CPU the read path needs.
            response_checksum_validation="when_required",
            request_checksum_calculation="when_required",
            signature_version="s3v4",  # what S3 requires of buckets made since 2020
        )  # fmt: skip
        core = botocore.session.get_session()
        # Nothing here reads LastModified: keep timestamps as strings. Parsing them with dateutil
        # (one per GET, 1,000 per listing page) was 60% of a page's CPU and 10% of a GET's.
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        session = boto3.session.Session(botocore_session=core, profile_name=os.environ.get("AWS_PROFILE") or None)
        return session.client("s3", endpoint_url=endpoint, config=config), session

    def prepare(self) -> None:
        self.client  # noqa: B018 (builds it)

    def is_temporary_failure(self, exc: BaseException) -> bool:
        if isinstance(exc, botocore.exceptions.ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return status in _TEMPORARY_STATUS or _code(exc) in _TEMPORARY_CODES
        return isinstance(exc, _TEMPORARY)

    def error(self, exc: Exception, uri: str) -> RefmountError:
        return _store_error(exc, uri, self.client)

    # -- scanning -------------------------------------------------------------------------------------
    def check_ref(self, ref: RefURI) -> None:
        _bucket_key(ref)
        unknown = [k for k, _ in ref.query if k != "versionId"]
        if unknown:
            raise InvalidInput(f"{ref.raw}: unsupported query parameter {unknown[0]!r} (only versionId)")

    def place(self, ref: RefURI) -> tuple[str, str, str]:
        bucket, key = _bucket_key(ref)
        return f"s3://{bucket}", bucket, key

    def single(self, ref: RefURI, key: str, path: str) -> Entry | None:
        bucket, version_id = ref.netloc, ref.query_value("versionId")
        if version_id is not None and (not key or key.endswith("/")):
            raise InvalidInput(f"{ref.raw}: versionId needs an object key (s3://BUCKET/KEY?versionId=...)")
        if version_id is None and not self._is_object(ref, bucket, key):
            return None
        return self._single(ref, bucket, key, version_id, path)

    def _is_object(self, ref: RefURI, bucket: str, key: str) -> bool:
        """Is ``key`` itself an object? (Then it wins over a directory of the same name.)"""
        page = self._call(ref, self.client.list_objects_v2, Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(item["Key"] == key for item in page.get("Contents", []))

    def _single(self, ref: RefURI, bucket: str, key: str, version_id: str | None, path: str) -> Entry:
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id is not None:
            args["VersionId"] = version_id

        def head_object() -> dict[str, Any]:
            try:
                return self.client.head_object(**args)
            except botocore.exceptions.ClientError as exc:
                # HEAD has no error body: a bad version id comes back as a bare 400 or 404.
                if version_id is not None and _code(exc) in ("400", "404", "NoSuchVersion", "NotFound"):
                    raise NotFound(f"{ref.raw}: no such object version") from exc
                raise

        head = self.retrying(head_object, ref.raw)
        return _entry(bucket, key, path, head["ETag"], head["ContentLength"], head.get("VersionId"))

    def listed(self, ref: RefURI, prefix: str, path_of: Callable[[str], str]) -> Iterator[Entry]:
        bucket = ref.netloc
        versioned = self._call(ref, self.client.get_bucket_versioning, Bucket=bucket).get("Status") in (
            "Enabled", "Suspended")  # fmt: skip
        operation, items_key = ("list_object_versions", "Versions") if versioned else ("list_objects_v2", "Contents")
        for page in self._pages(ref, operation, {"Bucket": bucket, "Prefix": prefix, "MaxKeys": _PAGE_SIZE}):
            for item in page.get(items_key, []):
                if versioned and not item["IsLatest"]:
                    continue  # older versions; a deleted key has only a delete marker as latest
                key = item["Key"]
                if key.endswith("/") and item["Size"] == 0:
                    continue  # a "folder" marker made by consoles, not data
                yield _entry(bucket, key, path_of(key), item["ETag"], item["Size"], item.get("VersionId"))

    def _pages(self, ref: RefURI, operation: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Listing pages through botocore, each request under the retry policy (a paginator's are not)."""
        more: dict[str, Any] | None = params
        while more is not None:
            page = self._call(ref, getattr(self.client, operation), **more)
            yield page
            more = {**params, **_next_page(operation, page)} if page.get("IsTruncated") else None

    def _call(self, ref: RefURI, method: Any, **args: Any) -> dict[str, Any]:
        return self.retrying(lambda: method(**args), ref.raw)

    # -- reading --------------------------------------------------------------------------------------
    def read(self, entry: Entry, offset: int, length: int) -> bytes:
        if entry.size is not None:
            length = max(0, min(length, entry.size - offset))
        buffer = bytearray(length)
        got = self.read_into(entry, offset, [memoryview(buffer)])
        return bytes(buffer[: min(got, length)])

    def read_into(self, entry: Entry, offset: int, targets: Sequence[memoryview]) -> int:
        """Natively (obstore) when it can express the request, else through botocore (see s3_native)."""
        length = sum(len(t) for t in targets)
        if length <= 0 or (entry.size is not None and offset >= entry.size):
            return 0
        whole = offset == 0 and entry.size is not None and length >= entry.size
        pins = self._pinned(entry)

        def native() -> int:
            gets = self.native
            if gets is None:
                raise Unexpressible("no native client in this process")
            try:
                return gets.get_into(pins["Bucket"], pins["Key"], version=pins.get("VersionId"),
                                            etag=pins.get("IfMatch"), offset=offset, length=None if whole else length,
                                            targets=targets)  # fmt: skip
            except Precondition:
                raise changed(entry, "the object was overwritten (ETag differs)") from None
            except Missing:
                raise changed(entry, "the logged object version no longer exists" if "VersionId" in pins
                              else "the object was deleted") from None  # fmt: skip
            except Unreachable as exc:
                raise _Unreachable(f"{entry.ref}: cannot reach the S3 endpoint {self.client.meta.endpoint_url} "
                                   f"({exc})") from None  # fmt: skip

        try:
            return self.policy.run(native, what=f"reading {entry.ref}", retryable=self.is_temporary_failure)
        except Unexpressible:
            return self._get_object_into(entry, pins, None if whole else f"bytes={offset}-{offset + length - 1}",
                                         targets)  # fmt: skip

    def _get_object_into(self, entry: Entry, pins: dict[str, Any], byte_range: str | None,
                         targets: Sequence[memoryview]) -> int:  # fmt: skip
        """The botocore path: ``get_object``, its body received into ``targets``; a request that fails for the time
        being or a body that breaks is fetched again from the start, under the retry policy."""
        args = {**pins, **({"Range": byte_range} if byte_range else {})}

        def fetch() -> int:
            try:
                body = self.client.get_object(**args)["Body"]
            except botocore.exceptions.ClientError as exc:
                if _code(exc) in ("InvalidRange", "416"):
                    return 0
                raise self._read_error(entry, exc) from exc
            with contextlib.closing(body):
                return _receive_into(body, targets)

        return self.retrying(fetch, entry.ref)

    # -- checking (see refmount.verify) -----------------------------------------------------------------
    def locate(self, entry: Entry) -> tuple[Hashable, str]:
        return netloc_and_path(entry)

    def pinned_version(self, entry: Entry) -> str | None:
        return entry.version_id if entry.version_id != "null" else None  # "null": nothing to pin

    def found(self, entry: Entry) -> Found | None:
        args = {k: v for k, v in self._pinned(entry).items() if k != "IfMatch"}  # mismatch() compares the ETag

        def head_object() -> dict[str, Any] | None:
            try:
                return self.client.head_object(**args)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) in ("NoSuchKey", "404", "NotFound"):  # HEAD has no error body: a missing version too
                    return None
                raise

        head = self.retrying(head_object, entry.ref)
        if head is None:
            return None
        return Found(args["Key"], head.get("VersionId"), head["ETag"].strip('"'), head["ContentLength"])

    def list_pages(self, where: Hashable, prefix: str, *, versions: bool, uri: str) -> Iterator[list[Found]]:
        """Pages read by :mod:`refmount.stores.s3_listing`, or by botocore where that cannot answer."""
        operation = "list_object_versions" if versions else "list_objects_v2"
        params: dict[str, Any] | None = {"Bucket": where, "Prefix": prefix, "MaxKeys": _PAGE_SIZE}
        while params is not None:
            objects, params = self.listing_pages.page(operation, params) or self._page(operation, params, uri)
            yield objects

    @property
    def listing_pages(self) -> ListingPages:
        client = self.client
        with self._lock:
            if self._listing_pages is None:
                self._listing_pages = ListingPages(client, self.policy)
            return self._listing_pages

    def _page(self, operation: str, params: dict[str, Any], uri: str) -> tuple[list[Found], dict[str, Any] | None]:
        """One listing page through botocore (whose errors say what went wrong)."""
        page = self._call(parse_ref(uri), getattr(self.client, operation), **params)
        if operation == "list_object_versions":  # delete markers too: they never match a logged version
            objects = [Found(v["Key"], v["VersionId"], v.get("ETag", "").strip('"') or None, v.get("Size"))
                       for v in (*page.get("Versions", []), *page.get("DeleteMarkers", []))]  # fmt: skip
        else:
            objects = [Found(o["Key"], None, o["ETag"].strip('"'), o["Size"]) for o in page.get("Contents", [])]
        return objects, {**params, **_next_page(operation, page)} if page.get("IsTruncated") else None

    def _pinned(self, entry: Entry) -> dict[str, Any]:
        bucket, key = _bucket_key(parse_ref(entry.ref, quoted=entry.ref_quoted))
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if entry.version_id and entry.version_id != "null":
            args["VersionId"] = entry.version_id
        if entry.is_snapshot:
            args["IfMatch"] = f'"{entry.etag or entry.digest}"'
        return args

    def _read_error(self, entry: Entry, exc: botocore.exceptions.ClientError) -> RefmountError:
        code = _code(exc)
        if code in ("PreconditionFailed", "412"):
            return changed(entry, "the object was overwritten (ETag differs)")
        if code in ("NoSuchKey", "404", "NotFound"):
            return changed(entry, "the object was deleted")
        if code in ("NoSuchVersion", "InvalidArgument") and entry.version_id:
            return changed(entry, "the logged object version no longer exists")
        return _store_error(exc, entry.ref, self.client)


def _receive_into(body: StreamingBody, targets: Sequence[memoryview]) -> int:
    """Fill ``targets`` with the body; returns the body's length in bytes (more than fits, if it is longer).

    The socket receives straight into the targets, with the GIL released: reading through urllib3
    and botocore costs two copies of every byte, made holding the GIL, which the daemon's FUSE
    replies then wait for (about 10% of its CPU on a cold sequential read). Where that is not
    possible (another urllib3 or botocore, a chunked body), the body is read and copied in chunks.
    """
    internals = checked("botocore") and checked("urllib3")
    raw = getattr(body, "_raw_stream", None) if internals else None  # urllib3's response (private to botocore)
    fp = getattr(raw, "_fp", None)  # http.client's response under it (private to urllib3)
    plain = type(body) is StreamingBody and isinstance(fp, http.client.HTTPResponse)  # not a checksumming body
    if not plain or fp.chunked or fp.length is None:
        return fill(targets, iter(partial(body.read, _CHUNK), b""))
    received = 0
    try:
        for target in targets:
            while target:
                n = fp.readinto(target)
                if not n:
                    break
                received, target = received + n, target[n:]
    except (OSError, http.client.HTTPException) as exc:  # what urllib3 and botocore would have wrapped
        raise botocore.exceptions.ResponseStreamingError(error=exc) from exc
    if fp.length and fp.isclosed():  # the connection ended early
        raise botocore.exceptions.IncompleteReadError(actual_bytes=received, expected_bytes=received + fp.length)
    if fp.length:
        return received + fp.length  # longer than asked for: the caller says so (the connection is dropped)
    raw.release_conn()  # read to its end: the connection goes back to the pool
    return received


def _next_page(operation: str, page: dict[str, Any]) -> dict[str, Any]:
    """The parameters that ask for the page after ``page`` of a listing."""
    if operation == "list_object_versions":
        return {"KeyMarker": page.get("NextKeyMarker"), "VersionIdMarker": page.get("NextVersionIdMarker")}
    return {"ContinuationToken": page.get("NextContinuationToken")}


def _bucket_key(ref: RefURI) -> tuple[str, str]:
    if not ref.netloc:
        raise InvalidInput(f"{ref.raw}: no bucket name (expected s3://BUCKET/KEY)")
    return ref.netloc, ref.path


def _entry(bucket: str, key: str, path: str, etag: str, size: int, version_id: str | None) -> Entry:
    digest = etag.strip('"')
    extra: dict[str, Any] = {"etag": digest}
    if version_id and version_id != "null":  # "null": written while versioning was off; nothing to pin
        extra["versionID"] = version_id
    return object_entry(path, f"s3://{bucket}", key, digest, size, extra)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _store_error(exc: Exception, uri: str, client: Any) -> RefmountError:
    """One line a person can act on, for any boto failure."""
    endpoint = client.meta.endpoint_url
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StoreUnavailable(f"{uri}: {_NO_CREDENTIALS}")
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                        botocore.exceptions.ReadTimeoutError)):  # fmt: skip
        return StoreUnavailable(f"{uri}: cannot reach the S3 endpoint {endpoint} ({exc})")
    if isinstance(exc, botocore.exceptions.ClientError):
        code, message = _code(exc), exc.response.get("Error", {}).get("Message", "")
        bucket = parse_ref(uri).netloc
        if code == "NoSuchBucket":
            return BucketNotFound(f"{uri}: bucket {bucket!r} does not exist at {endpoint}")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"{uri}: no such object")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StoreUnavailable(f"{uri}: access denied ({code}); check the credentials and bucket policy")
        return StoreError(f"{uri}: S3 error {code}: {message}")
    return StoreError(f"{uri}: {exc}")
