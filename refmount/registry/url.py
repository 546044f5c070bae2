"""Registry URLs: which backend, and for SQLite which file.

SQLite URLs follow SQLAlchemy: ``sqlite:///registry.db`` (three slashes) is relative to the working
directory, ``sqlite:////srv/registry.db`` (four) is absolute. A relative path is made absolute when
the URL is parsed, since a mount daemon forks and a registry URL is handed to other processes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

FORMS = "sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH or postgresql://USER@HOST:PORT/DB"
POSTGRES_SCHEMES = ("postgresql", "postgres")
_SQLITE_FORMS = "sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH"


def normalize(url: str) -> str:
    """``url`` with a SQLite path made absolute (``sqlite:////abs/path``); raises ValueError saying what is wrong.

    Until SQLAlchemy's rule was adopted, ``sqlite:///home/me/registry.db`` meant ``/home/me/registry.db``.
    Such a URL still opens that file when it exists and nothing of that name exists under the working
    directory (there is then one reading only), with a warning that asks for the four-slash form.
    """
    scheme, _, _ = url.partition(":")
    if scheme == "sqlite":
        return sqlite_url(_sqlite_file(url))
    if scheme in POSTGRES_SCHEMES:
        _check_postgres(url)
        return url
    raise ValueError(f"unsupported scheme (expected {FORMS})")


def sqlite_url(path: Path) -> str:
    """The URL of the SQLite file at ``path`` (absolute): ``sqlite:////abs/path``."""
    return f"sqlite:///{path}"


def sqlite_path(url: str) -> Path | None:
    """The absolute file a SQLite URL names (None for another backend)."""
    return _sqlite_file(url) if url.startswith("sqlite:") else None


def _sqlite_file(url: str) -> Path:
    rest = url.removeprefix("sqlite:")
    if not rest.startswith("//"):
        raise ValueError(f"no // after sqlite: (expected {_SQLITE_FORMS})")
    host, _, path = rest[2:].partition("/")
    if host:
        raise ValueError(f"a SQLite file has no host, here {host!r} (expected {_SQLITE_FORMS})")
    if not path.strip("/"):
        raise ValueError(f"no file named (expected {_SQLITE_FORMS})")
    if "\0" in path:
        raise ValueError("the path contains a NUL character")
    if path.startswith(("/", "~")):
        return Path(path).expanduser()
    relative, legacy = Path.cwd() / path, Path("/" + path)
    if not relative.exists() and legacy.exists():
        log.warning("registry URL %s is relative to the working directory (SQLAlchemy's rule), where there is no "
                    "%s; using the existing %s: write sqlite:///%s", url, path, legacy, legacy)  # fmt: skip
        return legacy
    return Path(os.path.abspath(relative))


def _check_postgres(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if not parts.hostname and not parts.path.strip("/"):
        raise ValueError(f"no host or database named (expected {FORMS})")


def redact(url: str) -> str:
    """The URL without its password, for messages and logs (as it was given, if it cannot be parsed)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return url.partition("://")[0] + "://***" if "@" in url else url
    return urlunsplit(parts._replace(netloc=netloc))
