"""Shared fixtures: real servers live in tests/servers.py; here the CLI and a private registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = [
    "tests.servers",
    "tests.server_postgres",
    "tests.server_gcs",
    "tests.server_http",
    "tests.server_azure",
    "tests.mounts",
    "tests.wandb_sdk",
]


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    """Runs the installed ``refmount`` command for real, against a private registry."""

    registry_url: str

    def __call__(self, *args: str, ok: bool = True) -> CliResult:
        # The environment is read per call so that fixtures set up later (store endpoints) apply.
        env = {**os.environ, "REFMOUNT_REGISTRY": self.registry_url}
        proc = subprocess.run([sys.executable, "-m", "refmount", *args], capture_output=True, text=True,
                              env=env, timeout=120)  # fmt: skip
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if ok and proc.returncode != 0:
            raise AssertionError(f"refmount {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        if not ok:
            assert proc.returncode != 0, f"refmount {' '.join(args)} unexpectedly succeeded: {proc.stdout}"
        return result


@pytest.fixture
def registry_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'registry' / 'registry.db'}"
    monkeypatch.setenv("REFMOUNT_REGISTRY", url)
    return url


@pytest.fixture
def cli(registry_url: str) -> Cli:
    return Cli(registry_url)
