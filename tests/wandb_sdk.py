"""The wandb SDK, offline and with no server, as the oracle of W&B compatibility: a fixture and helpers
that make the same references in both tools."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import refmount
from refmount.manifest import CONTENT_MD5, MTIME_NS, QUOTED_REF

OWN_EXTRA_KEYS = (CONTENT_MD5, MTIME_NS, QUOTED_REF)  # refmount's own extra keys, which W&B ignores


@pytest.fixture
def wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The wandb module, offline, with every directory it writes to under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb" / var.lower()))
    import wandb

    yield wandb


Ref = tuple[str, str | None, bool]  # (url, name, checksum)


def both(wandb: Any, refs: list[Ref]) -> tuple[Any, refmount.Artifact]:
    """The same references added to a W&B artifact and to a refmount one."""
    theirs, ours = wandb.Artifact("same", type="dataset"), refmount.Artifact("same", "dataset")
    for url, name, checksum in refs:
        theirs.add_reference(url, name=name, checksum=checksum)
        ours.add_reference(url, name, checksum=checksum)
    return theirs, ours


def without_own_keys(contents: dict[str, Any]) -> dict[str, Any]:
    """refmount's manifest contents less the extra keys that are refmount's own (W&B ignores them)."""
    out = {}
    for path, entry in contents.items():
        extra = {k: v for k, v in entry.get("extra", {}).items() if k not in OWN_EXTRA_KEYS}
        out[path] = {k: v for k, v in entry.items() if k != "extra"} | ({"extra": extra} if extra else {})
    return out
