"""S3 listing pages for ``verify``, read with ElementTree instead of botocore's response parser.

botocore walks its model for every field of every listed object: about 130 us per object, five
times what the request itself costs on a local SeaweedFS, so a verify by listing would spend most
of its time there. Here each page is a URL presigned by the boto3 client (its credentials, endpoint,
region and addressing style), fetched with urllib3 and parsed for the four fields a check needs.
Keys are asked for URL-encoded (``encoding-type=url``, as botocore asks) and decoded as botocore
decodes them. Whatever this cannot answer (an error status, a proxy, an unexpected document) gives
None, and the caller asks botocore, which retries and names errors; after one such failure this path
is not tried again.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_plus
from xml.etree import ElementTree

import urllib3

from .base import Found, RetryPolicy

log = logging.getLogger(__name__)

Page = tuple[list[Found], dict[str, Any] | None]  # the objects, and the parameters of the next page (None: last)


class ListingPages:
    def __init__(self, client: Any, policy: RetryPolicy) -> None:
        self._client = client
        timeout = urllib3.Timeout(connect=policy.connect_timeout, read=policy.read_timeout)
        self._http = urllib3.PoolManager(maxsize=16, retries=False, timeout=timeout)
        self.usable = True

    def page(self, operation: str, params: dict[str, Any]) -> Page | None:
        """One page of ``list_objects_v2`` or ``list_object_versions`` called with ``params``; None when this
        path cannot answer (the caller then asks botocore)."""
        if not self.usable:
            return None
        try:
            url = self._client.generate_presigned_url(operation, Params={**params, "EncodingType": "url"},
                                                      ExpiresIn=900)  # fmt: skip
            response = self._http.request("GET", url, preload_content=True)
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            return parse_page(response.data, params)
        except Exception as exc:  # any failure: botocore's path decides what it is
            log.debug("listing through botocore from now on (%s: %s)", type(exc).__name__, exc)
            self.usable = False
            return None


def parse_page(body: bytes, params: dict[str, Any]) -> Page:
    """A ListBucketResult (ListObjectsV2) or ListVersionsResult document, as :class:`Found` objects."""
    root = ElementTree.fromstring(body)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    encoded = root.findtext(f"{ns}EncodingType") == "url"

    def key(element: ElementTree.Element, name: str = "Key") -> str:
        value = element.findtext(f"{ns}{name}") or ""
        return unquote_plus(value) if encoded else value

    def found(element: ElementTree.Element, version_id: str | None) -> Found:
        etag, size = element.findtext(f"{ns}ETag"), element.findtext(f"{ns}Size")
        return Found(key(element), version_id, etag.strip('"') if etag else None, None if size is None else int(size))

    truncated = root.findtext(f"{ns}IsTruncated") == "true"
    if root.tag == f"{ns}ListVersionsResult":
        kinds = (f"{ns}Version", f"{ns}DeleteMarker")  # delete markers move the listing on, never match
        objects = [found(e, e.findtext(f"{ns}VersionId")) for e in root if e.tag in kinds]
        after = {"KeyMarker": key(root, "NextKeyMarker"), "VersionIdMarker": root.findtext(f"{ns}NextVersionIdMarker")}
    elif root.tag == f"{ns}ListBucketResult":
        objects = [found(e, None) for e in root.iter(f"{ns}Contents")]
        after = {"ContinuationToken": root.findtext(f"{ns}NextContinuationToken")}
    else:
        raise ValueError(f"unexpected document {root.tag}")
    if truncated and not all(after.values()):
        raise ValueError("a truncated listing without its next marker")
    return objects, {**params, **after} if truncated else None
