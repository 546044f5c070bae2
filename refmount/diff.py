"""What changed between two versions (`refmount diff`): entries added, removed, and changed at the same path.

The old version's entries are held by path while the new one's stream past them: memory for one version's
entries (a registry cannot stream two result sets at once on one PostgreSQL connection, and its path order
may follow a locale, so the two are not merged as sorted streams). Entries are compared by what pins their
bytes (digest, reference, object version, the content MD5 that pins a file whose digest is its URL) and by
size; other ``extra`` fields (such as a file's logged mtime) do not count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .manifest import CONTENT_MD5, Entry

# What makes an entry at the same path another file: a reference to other bytes, or another size.
COMPARED = {"digest": lambda e: e.digest, "ref": lambda e: e.ref, "version": lambda e: e.version_id,
            "content_md5": lambda e: e.extra.get(CONTENT_MD5), "size": lambda e: e.size}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Changed:
    old: Entry
    new: Entry
    fields: tuple[str, ...]  # names from COMPARED that differ

    def to_json(self) -> dict[str, Any]:
        return {"path": self.new.path, "differs": list(self.fields), "from": self.old.to_json(),
                "to": self.new.to_json()}  # fmt: skip


@dataclass
class Diff:
    added: list[Entry] = field(default_factory=list)
    removed: list[Entry] = field(default_factory=list)
    changed: list[Changed] = field(default_factory=list)
    unchanged: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"added": [{"path": e.path, **e.to_json()} for e in self.added],
                "removed": [{"path": e.path, **e.to_json()} for e in self.removed],
                "changed": [c.to_json() for c in self.changed], "unchanged": self.unchanged}  # fmt: skip


def diff(old: Iterable[Entry], new: Iterable[Entry]) -> Diff:
    """The differences from the entries ``old`` to the entries ``new``, each list sorted by path."""
    result = Diff()
    left = {entry.path: entry for entry in old}
    for b in new:
        a = left.pop(b.path, None)
        if a is None:
            result.added.append(b)
            continue
        fields = tuple(name for name, value in COMPARED.items() if value(a) != value(b))
        if fields:
            result.changed.append(Changed(a, b, fields))
        else:
            result.unchanged += 1
    result.removed = list(left.values())
    result.added.sort(key=lambda e: e.path)
    result.removed.sort(key=lambda e: e.path)
    result.changed.sort(key=lambda c: c.new.path)
    return result
