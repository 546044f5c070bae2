"""Parsing and vetting of reference URIs before any store sees them.

Everything that would put a secret into the registry (``user:password@``, signed query strings)
or that no store can serve is refused here, with one line saying why.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .errors import InvalidInput

# Query parameters that make a URL a bearer credential (AWS SigV2/V4, GCS, Azure SAS, generic tokens).
_SECRET_QUERY_KEYS = {
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "signature",
    "awsaccesskeyid",
    "x-goog-signature",
    "x-goog-credential",
    "googleaccessid",
    "sig",
    "se",
    "sv",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
}


# Where stores register themselves (see refmount.stores): package metadata, read without importing any store.
STORE_GROUP = "refmount.stores"

# W&B writes an object key into a ref as it is (``f"s3://{bucket}/{key}"``) and reads it back with
# ``urlparse(ref).path``, undecoded: a key holding ``%`` or non-ASCII characters round-trips, but ``?`` or ``#``
# would end its path. Those keys alone are percent-encoded, and the entry says so (manifest.QUOTED_REF).
# file:// refs are decoded by W&B (``url2pathname``), so there ``%`` is encoded too.
_CUTS_PATH = frozenset("?#")
_CUTS_FILE_PATH = frozenset("?#%")
_PATH_SAFE = "/!$&'()*+,;=:@ ~"  # what quote leaves as it is besides letters and digits


def quote_path(path: str) -> str:
    """``path`` with ``%``, ``?``, ``#`` and non-ASCII characters percent-encoded (``unquote`` reverses it)."""
    return quote(path, safe=_PATH_SAFE)


def object_ref(base: str, key: str) -> tuple[str, bool]:
    """The ref of object ``key`` under ``base`` (``s3://bucket``), as W&B writes it, and whether it had to be
    percent-encoded instead (a key holding ``?`` or ``#``, which no W&B ref can carry)."""
    if _CUTS_PATH.isdisjoint(key):
        return f"{base}/{key}", False
    return f"{base}/{quote_path(key)}", True


def file_ref(path: str) -> str:
    """The file:// ref of an absolute path: as W&B writes it, with the characters its decoding would change
    or cut (``%``, ``?``, ``#``) encoded."""
    if _CUTS_FILE_PATH.isdisjoint(path):
        return f"file://{path}"
    return "file://" + "".join(quote(c, safe="") if c in _CUTS_FILE_PATH else c for c in path)


@dataclass(frozen=True, slots=True)
class RefURI:
    """A vetted reference: ``scheme://netloc/path?query``; ``path`` without its leading '/', percent-decoded
    where the ref is quoted (file:// refs, and object refs marked so: see :func:`object_ref`)."""

    raw: str
    scheme: str
    netloc: str
    path: str
    query: tuple[tuple[str, str], ...]

    def query_value(self, key: str) -> str | None:
        return next((v for k, v in self.query if k == key), None)


def parse_ref(uri: str, *, known_schemes: frozenset[str] | set[str] | None = None, quoted: bool = False) -> RefURI:
    """Vet ``uri``; ``quoted``: its path is percent-encoded (always so for file://, as W&B reads those)."""
    if not isinstance(uri, str) or not uri:
        raise InvalidInput("empty reference URI")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        raise InvalidInput(f"reference URI {uri!r} contains a control or NUL character")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if not scheme or "://" not in uri:
        raise InvalidInput(f"reference {uri!r} is not a URI (expected e.g. s3://bucket/prefix/ or file:///path)")
    if known_schemes is not None and scheme not in known_schemes:
        raise InvalidInput(f"unknown scheme {scheme!r} in {uri!r} (supported: {', '.join(sorted(known_schemes))})")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(f"reference {_redact(uri)!r} embeds credentials; use the provider's credential chain")
    query = tuple(parse_qsl(parts.query, keep_blank_values=True))
    secret = [k for k, _ in query if k.lower() in _SECRET_QUERY_KEYS]
    if secret:
        raise InvalidInput(
            f"reference {_redact(uri)!r} is a signed URL ({secret[0]}=...); refmount never stores secrets"
        )
    if parts.fragment:
        raise InvalidInput(f"reference {uri!r} has a fragment ('#...'), which no store understands")
    path = unquote(parts.path) if quoted or scheme == "file" else parts.path
    return RefURI(raw=uri, scheme=scheme, netloc=parts.netloc, path=path.lstrip("/"), query=query)


@functools.cache
def registered_stores() -> dict[str, str]:
    """Every store registered in the ``refmount.stores`` entry-point group: name -> ``module:Class``. A name is
    the scheme the store serves (``s3``) or a host pattern it claims among http(s) URLs (``*.blob.core.windows.net``:
    Azure Blob URLs share https:// with plain web servers, and their host says which store serves them)."""
    return {point.name: point.value for point in entry_points(group=STORE_GROUP)}


@functools.cache
def _host_claims() -> tuple[tuple[str, str], ...]:
    """(host suffix, scheme of the claiming store): the scheme is the one the store is registered under by name."""
    stores = registered_stores()
    scheme_of = {target: name for name, target in stores.items() if not name.startswith("*.")}
    return tuple((name[1:], scheme_of[target]) for name, target in stores.items() if name.startswith("*."))


def store_scheme(uri: str) -> str:
    """The scheme of the store that serves ``uri``, lower-case: ``az`` for Azure Blob ``https://`` URLs (a host
    that a store claims, see :func:`registered_stores`).

    No vetting (see :func:`parse_ref`): a malformed URL keeps its own scheme, whose store reports it.
    """
    scheme = uri.partition("://")[0].lower()
    if scheme in ("http", "https"):
        try:
            host = urlsplit(uri).hostname or ""
        except ValueError:
            return scheme
        for suffix, claimed_by in _host_claims():
            if host.endswith(suffix):
                return claimed_by
    return scheme


def _redact(uri: str) -> str:
    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?<redacted>" if parts.query else "")
