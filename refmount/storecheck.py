"""Are the stores a mount will read from usable? Checked once, cheaply, when mounting.

A mount with no AWS credentials (or a broken profile, or an endpoint nobody listens on) still comes up,
and its first read fails with EIO; this says why beforehand, on the terminal and in the log, one line
per store. Nothing here reads an object: credentials are resolved locally (boto3's chain, the Azure
environment, Google's credentials file) and a configured endpoint gets one TCP connection attempt.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 3.0


def unusable_stores(schemes: Iterable[str]) -> list[str]:
    """One line per store among ``schemes`` that reads would fail on, saying why (none: all look usable)."""
    problems = []
    for scheme in sorted(set(schemes)):
        check = _CHECKS.get(scheme)
        reason = check() if check else None
        if reason:
            problems.append(f"the {scheme}:// store is not usable, reads of its files will fail (EIO): {reason}")
    return problems


def _s3() -> str | None:
    import boto3
    import botocore.exceptions

    try:
        session = boto3.session.Session(profile_name=os.environ.get("AWS_PROFILE") or None)
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:  # an unknown profile, a broken credentials file ...
        return str(exc)
    if credentials is None:
        return ("no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "~/.aws/credentials or an instance role)")  # fmt: skip
    endpoint = next((os.environ[v] for v in ("AWS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
                     if os.environ.get(v)), None)  # fmt: skip
    return _unreachable(endpoint) if endpoint else None


def _gs() -> str | None:
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if emulator not in ("", "default"):
        return _unreachable(emulator if "://" in emulator else f"http://{emulator}")
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if path and not os.access(path, os.R_OK):  # without the variable, public buckets are read anonymously
        return f"GOOGLE_APPLICATION_CREDENTIALS names {path}, which cannot be read"
    return None


def _az() -> str | None:
    connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
        endpoint = fields.get("BlobEndpoint")
        return _unreachable(endpoint) if endpoint else None
    if not os.environ.get("AZURE_STORAGE_ACCOUNT"):
        return "az:// names no account: set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT"
    return None


def _unreachable(endpoint: str) -> str | None:
    """Why nothing answers at ``endpoint`` (one TCP connection attempt), None if something does."""
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        return f"malformed endpoint {endpoint!r} ({exc})"
    if not host:
        return f"malformed endpoint {endpoint!r}"
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        return f"cannot reach the endpoint {endpoint} ({exc.strerror or exc})"
    return None


# http(s) and file:// have nothing to check before a read: each URL or path is its own endpoint.
_CHECKS: dict[str, Callable[[], str | None]] = {"s3": _s3, "gs": _gs, "az": _az}
