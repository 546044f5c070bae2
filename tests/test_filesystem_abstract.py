"""fsspec's own abstract tests of ``get`` (the ones a read-only filesystem can take) on the refmount protocol.

fsspec builds each scenario with writes on the filesystem under test; here each is built in a local
directory instead (with fsspec's own scenario builders), logged as a version, and handed to the tests as
that version's path.
"""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.tests.abstract import AbstractFixtures, AbstractGetTests

import refmount
from refmount.filesystem import RefmountFileSystem
from refmount.stores.file import file_uri

_artifacts = itertools.count()


class TestRefmountGet(AbstractFixtures, AbstractGetTests):
    test_get_directory_recursive = None  # builds its source with fs.mkdir and fs.touch: writes, which refmount refuses

    @pytest.fixture
    def fs(self, registry_url: str, tmp_path: Path) -> Iterator[RefmountFileSystem]:
        made = RefmountFileSystem(registry_url, cache_dir=str(tmp_path / "cache"), skip_instance_cache=True)
        yield made
        made.close()

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return posixpath.join

    @pytest.fixture
    def fs_path(self) -> str:
        return "p"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False  # a manifest lists files; a directory exists because something is in it

    @pytest.fixture
    def logged(self, registry_url: str, tmp_path: Path) -> Callable[[Callable[..., str]], str]:
        """Build a scenario locally with ``build(fs, join, path)``, log it, and return its path in the version."""

        def log(build: Callable[..., str]) -> str:
            name = f"scenario{next(_artifacts)}"
            staging = tmp_path / "staging" / name
            source = Path(build(LocalFileSystem(auto_mkdir=True), posixpath.join, str(staging)))
            art = refmount.Artifact(name, type="dataset")
            art.add_reference(file_uri(staging))
            refmount.log_artifact(art, project="p", registry=registry_url)
            return f"p/{name}/v0/{source.relative_to(staging).as_posix()}"

        return log

    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, logged: Any) -> str:
        return logged(self._bulk_operations_scenario_0)

    @pytest.fixture
    def fs_glob_edge_cases_files(self, logged: Any) -> str:
        return logged(self._glob_edge_cases_files)

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, logged: Any) -> str:
        return logged(self._dir_and_file_with_same_name_prefix)

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, logged: Any) -> str:
        return logged(self._10_files_with_hashed_names)
