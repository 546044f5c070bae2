"""Which listed objects of a reference become entries: ``exclude`` globs, and keys that cannot be paths.

Stores list every object under a reference as it is and do not judge its key. This one filter, the
same for every scheme, then leaves out the entries whose artifact path an ``exclude`` glob matches,
and deals with keys that cannot be artifact paths (the rule of :func:`manifest.path_problem`: a
control character, a '.' or '..' component, a component over 255 bytes, ...): each is skipped and
reported, or the first one is refused, as ``on_invalid`` says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Literal, get_args

from .errors import InvalidInput, InvalidKey
from .manifest import Entry, path_problem

OnInvalid = Literal["skip", "error"]
ON_INVALID: tuple[str, ...] = get_args(OnInvalid)
NAMED = 5  # skipped keys named in a warning; the rest are counted


@dataclass(frozen=True, slots=True)
class Skipped:
    """A listed object left out because its path cannot be an artifact path."""

    path: str
    problem: str  # a phrase of manifest.path_problem: "contains a control or NUL character"

    def __str__(self) -> str:
        return f"{shown(self.path)} ({self.problem})"


@dataclass
class Report:
    """What a filter left out: the excluded entries counted, the skipped ones named."""

    excluded: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def add(self, other: Report) -> None:
        self.excluded += other.excluded
        self.skipped.extend(other.skipped)

    def skipped_warning(self, hint: str = "") -> str | None:
        """One line naming the first skipped keys (None if none were), ending with ``hint`` if given."""
        count = len(self.skipped)
        if not count:
            return None
        named = ", ".join(map(str, self.skipped[:NAMED])) + (f", ... ({count - NAMED:,} more)" if count > NAMED else "")
        keys = "1 key that cannot be a file path" if count == 1 else f"{count:,} keys that cannot be file paths"
        return f"skipped {keys}: {named}" + (f"; {hint}" if hint else "")


class KeyFilter:
    """``exclude``: fnmatch globs (``*``, ``?``, ``[...]``, case-sensitive) matched against the whole artifact
    path of each entry (as ``refmount show`` lists it: relative to the reference, under its name if one
    is given). ``*`` also matches '/', so ``*.tmp`` leaves out .tmp files at any depth and ``cache/*``
    everything under the top-level ``cache/``. Excluded entries are not checked further.

    ``on_invalid``: what to do with an entry whose path cannot be an artifact path: ``"skip"`` it (and
    report it) or ``"error"`` (raise :class:`InvalidKey` naming the first one).
    """

    def __init__(self, exclude: Iterable[str] | str = (), on_invalid: OnInvalid = "skip"):
        patterns = [exclude] if isinstance(exclude, str) else list(exclude)
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern:
                raise InvalidInput(f"an exclude pattern must be a non-empty glob, got {pattern!r}")
        if on_invalid not in ON_INVALID:
            raise InvalidInput(f"on_invalid must be one of {', '.join(map(repr, ON_INVALID))}, got {on_invalid!r}")
        self.on_invalid = on_invalid
        # every glob in one regex: one match per entry, however many patterns were given
        self._excluded = re.compile("|".join(map(translate, patterns))).match if patterns else None

    def apply(self, entries: Iterable[Entry], uri: str, report: Report) -> Iterator[Entry]:
        """The entries to keep, counting (or, for ``on_invalid="error"``, refusing) the others in ``report``."""
        excluded, refuse = self._excluded, self.on_invalid == "error"
        for entry in entries:
            if excluded is not None and excluded(entry.path):
                report.excluded += 1
                continue
            problem = path_problem(entry.path)
            if problem is None:
                yield entry
            elif refuse:
                raise InvalidKey(f"object {shown(entry.path)} under {uri} cannot be a file path: it {problem}")
            else:
                report.skipped.append(Skipped(entry.path, problem))


def shown(path: str) -> str:
    """``path`` quoted for one line of text: control characters escaped, a long one cut short."""
    return repr(path) if len(path) <= 80 else f"{path[:60]!r}...({len(path.encode('utf-8', 'surrogateescape'))} bytes)"
