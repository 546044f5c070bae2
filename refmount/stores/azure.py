"""Azure Blob references: ``az://container/prefix`` and ``https://<account>.blob.core.windows.net/container/prefix``.

``az://`` names no account: it comes from ``AZURE_STORAGE_CONNECTION_STRING`` or
``AZURE_STORAGE_ACCOUNT``. An ``https://`` URL names its account and its cloud in the host (the
national clouds' hosts too; DefaultAzureCredential then needs their ``AZURE_AUTHORITY_HOST``); the
connection string is used for it when it is for that account, so an emulator or a private
endpoint can stand in for the public one.

Credentials: the connection string, else ``AZURE_STORAGE_KEY``, else azure-identity's
DefaultAzureCredential. Scanning lists blobs (one request per 5,000) and records the ETag as the
digest and, when the account keeps versions, the version id as ``extra.versionID``. Reads name
that version and send ``If-Match: <ETag>``, so an overwritten blob fails instead of returning
other bytes.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)  # fmt: skip
from azure.storage.blob import BlobProperties, BlobServiceClient

from ..errors import BucketNotFound, InvalidInput, NotFound, RefmountError, StoreError, StoreUnavailable
from ..manifest import Entry
from ..uri import RefURI, parse_ref, store_scheme
from .base import (
    Found,
    ListingStore,
    RetryPolicy,
    changed,
    object_entry,
)  # fmt: skip

_PAGE_SIZE = 5000  # the List Blobs maximum
_TEMPORARY_STATUS = (408, 429, 500, 502, 503, 504)
T = TypeVar("T")


@dataclass(frozen=True)
class _Location:
    host: str | None  # the blob endpoint's host (ACCOUNT.blob.core.windows.net, ...); None: az://, from the environment
    container: str
    key: str

    def base(self, ref: RefURI) -> str:
        """What entries' refs start with, in the form the user gave (az:// or the https URL)."""
        return f"az://{self.container}" if ref.scheme == "az" else f"{ref.scheme}://{ref.netloc}/{self.container}"


class AzureStore(ListingStore):
    schemes = ("az",)  # and the blob hosts of https:// URLs, claimed in pyproject.toml
    environment = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_CLIENT_ID",
                   "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST")  # fmt: skip
    objects = "blobs"
    gone = "the blob or its logged version was deleted"
    overwritten = "the blob was overwritten or deleted (If-Match failed)"

    def __init__(self, *, policy: RetryPolicy | None = None) -> None:
        super().__init__(policy=policy)
        self._clients: dict[str | None, BlobServiceClient] = {}
        self._lock = threading.Lock()

    def client(self, host: str | None, uri: str) -> BlobServiceClient:
        """One client per endpoint, shared by all threads (the SDK's clients are thread-safe)."""
        with self._lock:
            if host not in self._clients:
                self._clients[host] = _connect(host, uri, self.policy)
            return self._clients[host]

    def is_temporary_failure(self, exc: BaseException) -> bool:
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):  # no connection, no answer in time
            return True
        return isinstance(exc, HttpResponseError) and exc.status_code in _TEMPORARY_STATUS

    def error(self, exc: Exception, uri: str) -> RefmountError:
        return _error(exc, uri)

    # -- scanning -------------------------------------------------------------------------------------
    def check_ref(self, ref: RefURI) -> None:
        _locate(ref)
        if ref.query:
            raise InvalidInput(f"{ref.raw}: query parameters are not supported (SAS tokens are never stored)")

    def place(self, ref: RefURI) -> tuple[str, str, str]:
        where = _locate(ref)
        return where.base(ref), where.container, where.key

    def single(self, ref: RefURI, key: str, path: str) -> Entry | None:
        where = _locate(ref)
        blob_client = self._container(where, ref.raw).get_blob_client(key)
        try:
            blob = self.retrying(blob_client.get_blob_properties, ref.raw)
        except NotFound:
            return None  # not a blob: a prefix ("directory")
        return None if _is_folder(blob) else _entry(ref, where, blob, path)

    def listed(self, ref: RefURI, prefix: str, path_of: Callable[[str], str]) -> Iterator[Entry]:
        where = _locate(ref)
        try:
            for page in self._pages(self._container(where, ref.raw), prefix, ["metadata"], ref.raw):
                for blob in page:
                    if not _is_folder(blob):
                        yield _entry(ref, where, blob, path_of(blob.name))
        except NotFound:
            account = _account(where.host) or _environment_account() or "the configured account"
            raise BucketNotFound(f"{ref.raw}: container {where.container!r} does not exist in {account!r}") from None

    def _container(self, where: _Location, uri: str) -> Any:
        return self.client(where.host, uri).get_container_client(where.container)

    # -- reading --------------------------------------------------------------------------------------
    def read(self, entry: Entry, offset: int, length: int) -> bytes:
        if length <= 0 or (entry.size is not None and offset >= entry.size):
            return b""
        if entry.size is not None:
            length = min(length, entry.size - offset)
        blob = self._blob(entry)
        # One request per call but for one thing the SDK does not let us turn off: a body that breaks off is
        # asked for again inside download_blob (3 times, 1 s apart).
        return self._pinned(entry, lambda: blob.download_blob(offset=offset, length=length, max_concurrency=1,
                                                              **_guard(entry)).readall())  # fmt: skip

    # -- checking (see refmount.verify) -----------------------------------------------------------------
    def locate(self, entry: Entry) -> tuple[Hashable, str]:
        where = _locate(parse_ref(entry.ref, quoted=entry.ref_quoted))
        return (where.host, where.container), where.key

    def pinned_version(self, entry: Entry) -> str | None:
        return entry.version_id if entry.is_snapshot else None  # as reads pin it (see _blob)

    def found(self, entry: Entry) -> Found | None:
        blob = self._blob(entry)
        try:
            return _found(self.retrying(blob.get_blob_properties, entry.ref))
        except NotFound:
            return None

    def list_pages(self, where: Hashable, prefix: str, *, versions: bool, uri: str) -> Iterator[list[Found]]:
        host, name = where  # type: ignore[misc]
        container = self._container(_Location(host, name, ""), uri)
        try:
            for page in self._pages(container, prefix, ["versions"] if versions else None, uri):
                yield [_found(blob) for blob in page]
        except NotFound:
            raise BucketNotFound(f"{uri}: container {name!r} does not exist") from None

    def _pages(self, container: Any, prefix: str, include: list[str] | None,
               uri: str) -> Iterator[list[BlobProperties]]:  # fmt: skip
        """List Blobs a page at a time, each page's request under the retry policy (resumed by its token)."""

        def page(token: str | None) -> tuple[list[BlobProperties], str | None]:
            pages = container.list_blobs(name_starts_with=prefix or None, include=include,
                                         results_per_page=_PAGE_SIZE).by_page(continuation_token=token)  # fmt: skip
            return list(next(pages)), pages.continuation_token

        token: str | None = None
        while True:
            blobs, token = self.retrying(functools.partial(page, token), uri)
            yield blobs
            if not token:
                return

    def _blob(self, entry: Entry) -> Any:
        where = _locate(parse_ref(entry.ref, quoted=entry.ref_quoted))
        return self._container(where, entry.ref).get_blob_client(
            where.key, version_id=entry.version_id if entry.is_snapshot else None
        )

    def _pinned(self, entry: Entry, call: Callable[[], T]) -> T:
        def guarded() -> T:
            try:
                return call()
            except ResourceModifiedError:
                raise changed(entry, "the blob was overwritten or deleted (If-Match failed)") from None

        try:
            return self.retrying(guarded, entry.ref)
        except NotFound:
            raise changed(entry, "the blob or its logged version was deleted") from None


def _found(blob: BlobProperties) -> Found:
    return Found(blob.name, blob.version_id, blob.etag.strip('"'), blob.size)


def _is_folder(blob: BlobProperties) -> bool:
    """A folder marker (made by consoles, or an ADLS Gen2 directory), not data."""
    return blob.size == 0 and (blob.name.endswith("/") or (blob.metadata or {}).get("hdi_isfolder") == "true")


def _guard(entry: Entry) -> dict[str, Any]:
    if not entry.is_snapshot:
        return {}
    return {"etag": f'"{entry.etag or entry.digest}"', "match_condition": MatchConditions.IfNotModified}


def _locate(ref: RefURI) -> _Location:
    if ref.scheme == "az":
        if not ref.netloc:
            raise InvalidInput(f"{ref.raw}: no container name (expected az://CONTAINER/PREFIX)")
        return _Location(None, ref.netloc, ref.path)
    host = ref.netloc.partition(":")[0].lower()
    if store_scheme(ref.raw) != "az":
        raise InvalidInput(f"{ref.raw}: not an Azure Blob URL (expected https://ACCOUNT.blob.core.windows.net/...)")
    container, _, key = ref.path.partition("/")
    if not container:
        raise InvalidInput(f"{ref.raw}: no container name (expected https://ACCOUNT.blob.core.windows.net/CONTAINER/)")
    return _Location(host, container, key)


def _account(host: str | None) -> str | None:
    return host.partition(".")[0] if host else None


def _connect(host: str | None, uri: str, policy: RetryPolicy) -> BlobServiceClient:
    options: dict[str, Any] = {
        "connection_timeout": policy.connect_timeout, "read_timeout": policy.read_timeout,
        "retry_total": 0,  # one request per call: refmount's policy retries (the SDK's would multiply its attempts)
    }  # fmt: skip
    connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string and (host is None or _connection_account(connection_string) == _account(host)):
        try:
            return BlobServiceClient.from_connection_string(connection_string, **options)
        except ValueError as exc:
            raise StoreUnavailable(f"{uri}: AZURE_STORAGE_CONNECTION_STRING is malformed ({exc})") from None
    if host is None:
        account = _environment_account()
        if not account:
            raise StoreUnavailable(f"{uri}: no Azure storage account: set AZURE_STORAGE_CONNECTION_STRING or "
                             "AZURE_STORAGE_ACCOUNT, or use an https://ACCOUNT.blob.core.windows.net/ URL")  # fmt: skip
        host = f"{account}.blob.core.windows.net"
    credential: Any = os.environ.get("AZURE_STORAGE_KEY")
    if not credential:
        from azure.identity import DefaultAzureCredential  # slow to import; only when needed

        credential = DefaultAzureCredential()
    return BlobServiceClient(f"https://{host}", credential=credential, **options)


def _environment_account() -> str | None:
    """The account that ``az://`` means."""
    connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        return _connection_account(connection_string)
    return os.environ.get("AZURE_STORAGE_ACCOUNT") or None


def _connection_account(connection_string: str) -> str | None:
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return fields.get("AccountName")


def _entry(ref: RefURI, where: _Location, blob: BlobProperties, path: str) -> Entry:
    etag = blob.etag.strip('"')
    extra: dict[str, Any] = {"etag": etag}
    if blob.version_id:
        extra["versionID"] = blob.version_id
    return object_entry(path, where.base(ref), blob.name, etag, blob.size, extra)


def _error(exc: Exception, uri: str) -> RefmountError:
    if isinstance(exc, ResourceNotFoundError):
        return NotFound(f"{uri}: no such blob ({getattr(exc, 'error_code', None) or 'not found'})")
    if isinstance(exc, ClientAuthenticationError):
        return StoreUnavailable(f"{uri}: Azure authentication failed ({_first_line(exc)}); set "
                          "AZURE_STORAGE_CONNECTION_STRING, or sign in for DefaultAzureCredential")  # fmt: skip
    if isinstance(exc, HttpResponseError) and exc.status_code == 403:
        return StoreUnavailable(f"{uri}: access denied ({exc.error_code or 403}); check the credentials and the role")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return StoreUnavailable(f"{uri}: cannot reach the Azure endpoint ({_first_line(exc)})")
    if isinstance(exc, HttpResponseError):
        return StoreError(f"{uri}: Azure error {exc.status_code} {exc.error_code or ''}".rstrip())
    return StoreError(f"{uri}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
