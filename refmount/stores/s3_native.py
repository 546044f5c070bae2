"""Pinned S3 GETs in native code: the request behind every read of an S3 object.

Through botocore and urllib3 a GET of a small object cost the daemon about 1.5 ms of CPU under the
GIL (presigning alone 0.4 ms), and about 3 ms of latency; obstore (Rust's object_store) signs, sends
and receives in native code with the GIL released: about 0.4 ms of the process's CPU and half the
latency (a same-run A/B is in the README's Performance section). The pins are the same: the logged
``versionId`` and ``If-Match: <ETag>`` reach the server (a wrong version is "not found", a wrong ETag
a precondition failure: both tested against real servers).

boto3 stays the S3 store's client for listing, HEAD and credentials: obstore signs with boto3's
credentials (its credential chain, refreshed as boto3 refreshes them) and talks to the endpoint and
region boto3 resolved, so both reach the same place as the same identity. What obstore cannot express
(a key with an empty segment or a control character) and any failure it cannot name is left to the
botocore path, which retries, follows region redirects and names the error.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import obstore
import obstore.exceptions
from obstore.auth.boto3 import Boto3CredentialProvider
from obstore.store import S3Store as NativeStore

from .base import fill

log = logging.getLogger(__name__)


# The process whose requests started obstore's runtime (tokio): a process forked from it inherits the runtime
# without its threads, and a request there waits forever (a PyTorch DataLoader's forked workers, when the
# parent read first). Such a child reads through botocore instead.
_runtime_pid: int | None = None


def usable() -> bool:
    """Whether native GETs work in this process (see ``_runtime_pid``)."""
    return _runtime_pid in (None, os.getpid())


class Precondition(Exception):
    """The object's ETag is not the logged one (If-Match failed)."""


class Missing(Exception):
    """No such object, or no such version of it."""


class Unexpressible(Exception):
    """obstore cannot send this request (or failed in a way only botocore can name): use botocore."""


class Unreachable(Exception):
    """The request could not be sent or was not answered in time (the reason is the message)."""


class BrokenBody(Exception):
    """The answer's body broke off (the reason is the message)."""


class NativeGets:
    """obstore stores, one per bucket, configured like the boto3 ``client`` made from ``session``."""

    def __init__(self, client: Any, session: Any, *, path_style: bool, connect_timeout: float,
                 timeout: float) -> None:  # fmt: skip
        self._client = client
        self._timeouts = {"connect_timeout": timedelta(seconds=connect_timeout), "timeout": timedelta(seconds=timeout)}
        self._credentials = Boto3CredentialProvider(session)
        self._path_style = path_style
        self._stores: dict[str, NativeStore] = {}
        self._lock = threading.Lock()

    def get_into(self, bucket: str, key: str, *, version: str | None, etag: str | None, offset: int,
                 length: int | None, targets: Sequence[memoryview]) -> int:  # fmt: skip
        """Fill ``targets`` with the bytes at ``offset`` (``length`` of them, or the whole object if None) of the
        pinned object; returns how many bytes the server sent. Raises Precondition, Missing, Unreachable,
        BrokenBody or Unexpressible."""
        options: dict[str, Any] = {}
        if version is not None:
            options["version"] = version
        if etag is not None:
            options["if_match"] = etag
        if length is not None:
            options["range"] = (offset, offset + length)
        try:
            body = obstore.get(self._store(bucket), key, options=options).bytes()
        except obstore.exceptions.PreconditionError as exc:
            raise Precondition(str(exc)) from exc
        except (obstore.exceptions.NotFoundError, FileNotFoundError) as exc:
            raise Missing(str(exc)) from exc
        except ValueError as exc:  # a key object_store's paths cannot hold (empty segment, control character)
            raise Unexpressible(str(exc)) from exc
        except obstore.exceptions.GenericError as exc:
            reason = str(exc).partition("\n")[0]
            # object_store says "HTTP error: <kind>" for failures of the exchange itself (its Display text)
            if "HTTP error: error sending request" in reason:
                raise Unreachable(reason.rpartition("HTTP error: ")[2]) from exc
            if "HTTP error:" in reason:
                raise BrokenBody(reason.rpartition("HTTP error: ")[2]) from exc
            raise self._unexpressible(bucket, key, exc) from exc
        except Exception as exc:  # permissions, redirects, a server's error: botocore retries and names them
            raise self._unexpressible(bucket, key, exc) from exc
        return fill(targets, [memoryview(body)])

    @staticmethod
    def _unexpressible(bucket: str, key: str, exc: Exception) -> Unexpressible:
        log.debug("native GET of s3://%s/%s failed (%s); asking botocore", bucket, key, str(exc).partition("\n")[0])
        return Unexpressible(str(exc))

    def _store(self, bucket: str) -> NativeStore:
        global _runtime_pid
        with self._lock:
            _runtime_pid = os.getpid()
            store = self._stores.get(bucket)
            if store is None:
                store = self._stores[bucket] = self._new_store(bucket)
            return store

    def _new_store(self, bucket: str) -> NativeStore:
        endpoint = self._client.meta.endpoint_url
        # An S3-compatible server is addressed as boto3 addresses it (its endpoint, path-style); AWS itself
        # by region, which object_store turns into the bucket's virtual-hosted endpoint.
        where: dict[str, Any] = {"endpoint": endpoint} if self._path_style else {}
        return NativeStore(
            bucket,
            region=self._client.meta.region_name or "us-east-1",
            virtual_hosted_style_request=not self._path_style,
            credential_provider=self._credentials,
            client_options={"allow_http": endpoint.startswith("http://"), **self._timeouts},
            retry_config={"max_retries": 0},  # refmount's own bounded retries apply, as for every store
            **where,
        )
