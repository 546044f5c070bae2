"""A PyTorch DataLoader with worker processes over one logged version: through the mount and through fsspec.

The store's objects are overwritten after logging, so a worker that read anything but the pinned
versions would return other bytes; fork and spawn workers are both what DataLoaders use in practice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch.utils.data

from refmount.filesystem import RefmountFileSystem
from tests.servers import S3Env
from tests.test_mount import log

FILES = 48


class FileDataset(torch.utils.data.Dataset):
    """The map-style Dataset a training script writes: sample i is the bytes of file i."""

    def __init__(self, names: list[str], read: Callable[[str], bytes]):
        self.names, self.read = names, read

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[int, bytes]:
        return i, self.read(self.names[i])


class MountedFile:
    def __init__(self, root: Path):
        self.root = root

    def __call__(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


@pytest.fixture
def logged(s3_env: S3Env, registry_url: str) -> dict[str, bytes]:
    """FILES objects of 1 byte to 300 KiB in a versioned bucket, logged as p/ds:v0, then overwritten."""
    bucket = s3_env.bucket(versioned=True)
    files = {f"train/{i:03d}.bin": os.urandom(1 + i * 6400) for i in range(FILES)}
    for name, data in files.items():
        s3_env.put(bucket, f"ds/{name}", data)
    log(registry_url, "p/ds", f"s3://{bucket}/ds/")
    for name in files:
        s3_env.put(bucket, f"ds/{name}", b"not the logged bytes")
    return files


def epoch(dataset: FileDataset, start_method: str) -> dict[int, bytes]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2,
                                         multiprocessing_context=start_method, collate_fn=list)  # fmt: skip
    samples: dict[int, bytes] = {}
    for batch in loader:
        for i, data in batch:
            assert i not in samples
            samples[i] = data
    return samples


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dataloader_workers_read_the_pinned_bytes_through_the_mount(logged: dict[str, bytes], mount_factory: Any,
                                                                    start_method: str) -> None:  # fmt: skip
    names = sorted(logged)
    dataset = FileDataset(names, MountedFile(mount_factory().path / "p/ds/v0"))
    expected = {i: logged[name] for i, name in enumerate(names)}
    assert epoch(dataset, start_method) == expected
    assert epoch(dataset, start_method) == expected  # the second epoch, from the page and disk caches


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dataloader_workers_read_the_pinned_bytes_through_fsspec(
    logged: dict[str, bytes], registry_url: str, tmp_path: Path, start_method: str
) -> None:
    fs = RefmountFileSystem(registry_url, cache_dir=str(tmp_path / "cache"), skip_instance_cache=True)
    try:
        names = sorted(logged)
        first = fs.cat(f"p/ds/v0/{names[0]}")  # the parent reads too before the workers start (fork copies it)
        dataset = FileDataset([f"p/ds/v0/{name}" for name in names], fs.cat)
        expected = {i: logged[name] for i, name in enumerate(names)}
        assert first == logged[names[0]]
        assert epoch(dataset, start_method) == expected
        assert epoch(dataset, start_method) == expected  # from the disk cache the first epoch filled
    finally:
        fs.close()
