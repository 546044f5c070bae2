"""Entries, manifests and their W&B-compatible JSON form and digests.

A manifest maps artifact paths to references: where the bytes live (``ref``), how big they
are and which exact object version was logged (``digest`` and ``extra``). The artifact digest
is W&B's: only paths and entry digests count, so a manifest logged here and one logged by
W&B from the same objects have the same digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import InvalidInput
from .uri import store_scheme

MANIFEST_TYPE = "wandb-artifact-manifest"
MANIFEST_VERSION = 1
STORAGE_POLICY = "wandb-storage-policy-v1"
STORAGE_POLICY_CONFIG: dict[str, Any] = {"storageLayout": "V2"}

_CONTROL = re.compile("[\x00-\x1f\x7f]")
# A component no check can refuse but one against DOTS (at most 4 bytes per character: within 255 bytes)
PLAIN_COMPONENT = re.compile("[^\x00-\x1f\x7f/]{1,63}")
DOTS = frozenset((".", ".."))
MAX_COMPONENT_BYTES = 255  # NAME_MAX on Linux: a longer name cannot be shown by the mount
MAX_PATH_BYTES = 4096  # PATH_MAX
_TOO_LONG = f"is longer than {MAX_PATH_BYTES} bytes"
MAX_SIZE = 2**63 - 1  # a signed 64-bit integer: what SQLite and PostgreSQL (BIGINT) store, and what stat can show

# extra key of refmount's own: the base64 MD5 of the bytes of an http(s) file served without an ETag, whose
# digest is its URL (W&B's digest for such a file, which pins nothing). W&B ignores keys it does not know.
CONTENT_MD5 = "content_md5"
# extra key of refmount's own: true when the ref's path is percent-encoded, for an object key holding ``?`` or
# ``#``, which W&B's refs (the key as it is) cannot carry. W&B cannot load such an entry; refmount reads it right.
QUOTED_REF = "ref_quoted"
# extra key of refmount's own: a file:// entry's mtime when logged; a file whose size and mtime are unchanged is
# served without hashing it again.
MTIME_NS = "mtime_ns"
UNPINNED_REASON = "no ETag, object version or content hash"  # what an entry that is not `pinned` lacks


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of an artifact version, pointing at a pinned object elsewhere."""

    path: str
    ref: str
    digest: str
    size: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def etag(self) -> str | None:
        etag = self.extra.get("etag")
        return etag if isinstance(etag, str) and etag else None

    @property
    def version_id(self) -> str | None:
        version = self.extra.get("versionID")
        return None if version is None else str(version)

    @property
    def ref_quoted(self) -> bool:
        """Whether the ref's path is percent-encoded (see QUOTED_REF); file:// refs always are."""
        return self.extra.get(QUOTED_REF) is True

    @property
    def is_snapshot(self) -> bool:
        """False for ``checksum=False`` entries, which name a location, not fixed bytes (and for W&B's
        entries of http(s) files without an ETag, whose digest is the URL too: see :attr:`pinned`)."""
        return self.digest != self.ref

    @property
    def content_md5(self) -> str | None:
        """The base64 MD5 of the logged bytes, where the entry records one that reads check.

        file://: the digest, unless it is W&B's ``checksum=False`` digest (the MD5 of the file's URI).
        http(s): ``extra.content_md5``; else the digest of an entry without an ETag when it is an MD5
        (refmount's digest for such files before it took W&B's). Other schemes: None.
        """
        scheme = store_scheme(self.ref)
        if scheme == "file":
            md5 = _b64_md5_or_none(self.digest)
            return None if md5 is None or md5 == wandb_location_digest(self.ref) else md5
        if scheme in ("http", "https"):
            md5 = _b64_md5_or_none(self.extra.get(CONTENT_MD5))
            return md5 if md5 is not None or self.etag else _b64_md5_or_none(self.digest)
        return None

    @property
    def pinned(self) -> bool:
        """Whether the entry holds something that fixes its bytes, so that a read can refuse any others.

        s3: the digest (the ETag, sent as If-Match) or an object version; gs: the digest (the etag)
        or a generation; az: the digest (the ETag); http(s): an ETag (``extra.etag``) or a content
        MD5; file: a content MD5 (see :attr:`content_md5`). ``checksum=False`` entries (digest = ref)
        are never pinned; nor are W&B's entries of http(s) files without an ETag (digest = URL, a size,
        no ``extra``): both name a location, whatever bytes are there now, and are not to be served.
        """
        scheme = store_scheme(self.ref)
        if scheme in ("s3", "gs"):
            return self.is_snapshot or self.version_id not in (None, "null")
        if scheme == "az":
            return self.is_snapshot
        if scheme in ("http", "https"):
            return self.etag is not None or self.content_md5 is not None
        if scheme == "file":
            return self.content_md5 is not None
        return False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"digest": self.digest, "ref": self.ref}
        if self.size is not None:
            out["size"] = self.size
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, path: str, data: Any) -> Entry:
        if not isinstance(data, dict):
            raise InvalidInput(f"manifest entry {path!r} is not an object")
        digest, ref, size, extra = data.get("digest"), data.get("ref"), data.get("size"), data.get("extra", {})
        if not isinstance(digest, str) or not digest:
            raise InvalidInput(f"manifest entry {path!r} has no digest")
        if not isinstance(ref, str) or not ref:
            raise InvalidInput(f"manifest entry {path!r} has no ref (only reference artifacts can be imported)")
        if not isinstance(extra, dict):
            raise InvalidInput(f"manifest entry {path!r} has an invalid 'extra'")
        if "etag" in extra and (not isinstance(extra["etag"], str) or not extra["etag"]):
            raise InvalidInput(f"manifest entry {path!r} has an invalid extra.etag {extra['etag']!r} (expected text)")
        if CONTENT_MD5 in extra and _b64_md5_or_none(extra[CONTENT_MD5]) is None:
            raise InvalidInput(f"manifest entry {path!r} has an invalid extra.{CONTENT_MD5} "
                               f"{extra[CONTENT_MD5]!r} (expected the base64 MD5 of the content)")  # fmt: skip
        if QUOTED_REF in extra and extra[QUOTED_REF] is not True:
            raise InvalidInput(f"manifest entry {path!r} has an invalid extra.{QUOTED_REF} "
                               f"{extra[QUOTED_REF]!r} (expected true or no key)")  # fmt: skip
        return cls(path=validate_path(path), ref=ref, digest=digest, size=validate_size(path, size), extra=extra)


def validate_size(path: str, size: Any) -> int | None:
    """Return ``size`` if it is None or a byte count a registry can store, else raise InvalidInput."""
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE):
        raise InvalidInput(f"manifest entry {path!r} has an invalid size {size!r} (expected 0 to {MAX_SIZE})")
    return size


def validate_path(path: str) -> str:
    """Return ``path`` if it is a safe relative artifact path, else raise InvalidInput (see :func:`path_problem`)."""
    problem = path_problem(path)
    if problem is None:
        return path
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"artifact path {problem}")
    shown = f"{path[:60]!r}..." if problem is _TOO_LONG else repr(path)
    raise InvalidInput(f"artifact path {shown} {problem}")


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be an artifact path (None: it can), as a phrase: "is absolute; ...".

    The rules are those of :func:`path_component_problem` for each component, plus: not empty, not
    absolute, at most MAX_PATH_BYTES. The mount applies the same component rule to every name a
    registry hands it, so it never shows a path that logging would refuse.
    """
    if not isinstance(path, str) or not path:
        return "is empty"
    if path.startswith("/"):
        return "is absolute; paths must be relative"
    if len(path) * 4 > MAX_PATH_BYTES and len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        return _TOO_LONG
    for part in path.split("/"):
        problem = path_component_problem(part)
        if problem is not None:
            return problem
    return None


def path_component_problem(name: str) -> str | None:
    """Why ``name`` cannot be one component of an artifact path (None: it can).

    Control characters are refused: a newline in a path would let two different manifests hash to
    the same artifact digest (the digest is a line-based format), and a terminal would show it as
    something else. NAME_MAX bounds what a file system can show.
    """
    if PLAIN_COMPONENT.fullmatch(name) and name not in DOTS:
        return None  # the common case, in one step: the mount checks every name it lists
    if name in ("", ".", ".."):
        return "has an empty, '.' or '..' component"
    if "/" in name:
        return "has a component with a '/'"
    if _CONTROL.search(name):
        return "contains a control or NUL character"
    # at most 4 bytes per character: only a long name needs encoding (the mount checks every name it lists)
    if len(name) * 4 > MAX_COMPONENT_BYTES and len(name.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
        return f"has a component longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def validate_reference_name(name: str, what: str = "name") -> str:
    """``name`` (where a reference's entries go: a directory, or one object's path) if it is a safe
    relative artifact path, without a trailing '/' (allowed, as in ``train/``); else InvalidInput naming ``what``."""
    try:
        return validate_path(name[:-1] if name.endswith("/") else name)
    except InvalidInput as exc:
        raise InvalidInput(f"invalid {what} {name!r}: {exc}") from None


def join_path(prefix: str | None, rel: str) -> str:
    """Place ``rel`` under an optional directory ``prefix`` (W&B's ``name=``)."""
    return f"{prefix.strip('/')}/{rel}" if prefix and prefix.strip("/") else rel


def is_under(path: str, prefix: str | None) -> bool:
    """Whether ``path`` is ``prefix`` or inside the directory ``prefix`` (None or '': every path)."""
    if not prefix or not prefix.strip("/"):
        return True
    prefix = prefix.strip("/")
    return path == prefix or path.startswith(prefix + "/")


def parent_dir(path: str) -> str:
    """``a/b/c`` -> ``a/b``; top-level entries have parent ``''`` (the version root)."""
    head, _, _ = path.rpartition("/")
    return head


def b64_md5(data_md5: bytes) -> str:
    return base64.b64encode(data_md5).decode("ascii")


def _b64_md5_or_none(value: Any) -> str | None:
    """``value`` if it is a base64 MD5 (24 characters for 16 bytes), else None."""
    if not isinstance(value, str) or len(value) != 24 or not value.endswith("=="):
        return None
    try:
        return value if len(base64.b64decode(value, validate=True)) == 16 else None
    except binascii.Error:
        return None


def wandb_location_digest(ref: str) -> str:
    """W&B's digest of a ``checksum=False`` file reference: the base64 MD5 of the file's URI (as
    pathlib writes it), which looks like a content MD5 but pins nothing."""
    uri = PurePosixPath(unquote(urlsplit(ref).path)).as_uri() if ref.startswith("file:///") else ref
    return b64_md5(hashlib.md5(uri.encode("utf-8", "surrogateescape")).digest())


class Manifest:
    """An immutable, validated, path-sorted set of entries."""

    __slots__ = ("_by_path", "_entries")

    def __init__(self, entries: Iterable[Entry]):
        by_path: dict[str, Entry] = {}
        total_size = 0
        for entry in entries:
            validate_path(entry.path)
            total_size += validate_size(entry.path, entry.size) or 0
            if total_size > MAX_SIZE:  # stored with the manifest: it must fit as well
                raise InvalidInput(f"manifest entry {entry.path!r} makes the total size exceed {MAX_SIZE} bytes")
            if entry.path in by_path:
                raise InvalidInput(
                    f"duplicate artifact path {entry.path!r} ({by_path[entry.path].ref} and {entry.ref})"
                )
            by_path[entry.path] = entry
        _check_no_file_dir_clash(by_path)
        self._entries = sorted(by_path.values(), key=lambda e: e.path)
        self._by_path = by_path

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __getitem__(self, path: str) -> Entry:
        return self._by_path[path]

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    @property
    def total_size(self) -> int:
        return sum(e.size or 0 for e in self._entries)

    @property
    def digest(self) -> str:
        return artifact_digest((e.path, e.digest) for e in self._entries)

    @property
    def content_id(self) -> str:
        """Identity of the full manifest (refs, sizes, versions too): the key it is stored under.

        Two manifests can share an artifact digest yet point at different buckets; they must not
        share storage, or one artifact would read from the other's objects.
        """
        h = hashlib.sha256()
        for e in self._entries:
            h.update(json.dumps([e.path, e.to_json()], sort_keys=True, separators=(",", ":")).encode())
            h.update(b"\n")
        return h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "storagePolicy": STORAGE_POLICY,
            "storagePolicyConfig": dict(STORAGE_POLICY_CONFIG),
            "contents": {e.path: e.to_json() for e in self._entries},
        }

    @classmethod
    def loads(cls, text: str | bytes) -> Manifest:
        """Parse manifest JSON text; duplicate keys are an error, not a silent last-one-wins."""
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            raise InvalidInput(f"manifest is not valid JSON: {exc}") from exc
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Parse a W&B manifest (as written by W&B or by :meth:`to_json`), validating everything."""
        if not isinstance(data, dict):
            raise InvalidInput("manifest is not a JSON object")
        if data.get("version") != MANIFEST_VERSION:
            raise InvalidInput(f"unsupported manifest version {data.get('version')!r} (expected {MANIFEST_VERSION})")
        policy = data.get("storagePolicy", STORAGE_POLICY)
        if policy != STORAGE_POLICY:
            raise InvalidInput(f"unsupported storage policy {policy!r} (expected {STORAGE_POLICY})")
        contents = data.get("contents")
        if not isinstance(contents, dict):
            raise InvalidInput("manifest has no 'contents' object")
        return cls(Entry.from_json(path, entry) for path, entry in contents.items())


def artifact_digest(path_digests: Iterable[tuple[str, str]]) -> str:
    """W&B's artifact digest over (path, entry digest) pairs, in path order."""
    h = hashlib.md5(b"wandb-artifact-manifest-v1\n")
    for path, digest in sorted(path_digests):
        h.update(f"{path}:{digest}\n".encode())
    return h.hexdigest()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidInput(f"duplicate key {key!r} in manifest JSON")
        out[key] = value
    return out


def _check_no_file_dir_clash(by_path: Mapping[str, Entry]) -> None:
    """A path cannot be both a file and a directory (``a`` and ``a/b``)."""
    checked: set[str] = set()
    for path in by_path:
        head = parent_dir(path)
        while head and head not in checked:
            if head in by_path:
                raise InvalidInput(f"artifact path {head!r} is both a file and the directory of {path!r}")
            checked.add(head)
            head = parent_dir(head)
