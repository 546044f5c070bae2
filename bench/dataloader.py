"""A PyTorch training input pipeline over small files: epochs 1 (cold) and 2 through the mount and its peers.

    pip install torch==2.13.0                                                  # the CPU build on this disk
    pip install --no-deps s3torchconnector s3torchconnectorclient             # not a CUDA torch
    python bench/dataloader.py [--files 4000] [--min-kib 2] [--max-kib 20] [--epochs 2] [--rounds 1]

Starts SeaweedFS on 127.0.0.1 with --files objects of random sizes and reads every one, per epoch, through
``DataLoader(dataset, batch_size=32, shuffle=True, num_workers=2)`` with six map-style datasets:
refmount (plain ``open()`` of paths in a mounted version, a fresh mount and an empty cache for epoch 1),
the same through a mount with ``--no-lineage`` (opens stay in the kernel) and one with ``--dir-readahead 0``
(no readahead across files),
refmount's fsspec protocol (``fs.cat`` of the version's paths, no FUSE, an empty cache for epoch 1),
boto3 (``get_object`` in ``__getitem__``, one client per worker) and s3torchconnector's ``S3MapDataset``
(the AWS connector on Mountpoint's client). The page cache is dropped before every epoch 1. Prints
samples/s per epoch and refmount's ratio to each peer. Needs root (drop_caches, mounting).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import drop_caches, use_s3

import refmount
from refmount.filesystem import RefmountFileSystem
from tests.mounts import MountedFS
from tests.servers import SeaweedFS, s3_client

try:
    import torch.utils.data
except ImportError:
    sys.exit("bench/dataloader.py needs PyTorch: pip install torch==2.13.0 (the CPU build on this machine)")

BUCKET, PREFIX = "bench", "dl/"


class MountedFiles(torch.utils.data.Dataset):
    """What a training script does with a mounted version: open plain paths."""

    def __init__(self, root: Path):
        self.paths = sorted(str(p) for p in root.rglob("*") if p.is_file())

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        with open(self.paths[i], "rb") as f:
            return len(f.read())


class Boto3Objects(torch.utils.data.Dataset):
    """``get_object`` inside the dataset, a client per worker process (boto3 clients do not survive a fork)."""

    def __init__(self, endpoint: str, keys: list[str]):
        self.endpoint, self.keys = endpoint, keys
        self._client: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> int:
        if self._pid != os.getpid():
            self._client, self._pid = s3_client(self.endpoint), os.getpid()
        return len(self._client.get_object(Bucket=BUCKET, Key=self.keys[i])["Body"].read())


class FsspecFiles(torch.utils.data.Dataset):
    """refmount without FUSE: ``fs.cat`` of a version's paths through the ``refmount`` fsspec protocol (each
    worker process opens its own reader on the same disk cache)."""

    def __init__(self, fs: RefmountFileSystem, version: str):
        self.fs, self.paths = fs, sorted(fs.find(version))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        return len(self.fs.cat(self.paths[i]))


def _read_all(reader: Any) -> int:
    return len(reader.read())


def s3torchconnector_dataset(endpoint: str) -> torch.utils.data.Dataset:
    from s3torchconnector import S3ClientConfig, S3MapDataset

    config = S3ClientConfig(force_path_style=True)  # a local endpoint: no virtual-hosted buckets
    return S3MapDataset.from_prefix(f"s3://{BUCKET}/{PREFIX}", region="us-east-1", endpoint=endpoint,
                                    transform=_read_all, s3client_config=config)  # fmt: skip


def epoch(dataset: torch.utils.data.Dataset, seed: int) -> tuple[float, int]:
    """(samples/s, bytes) of one pass of the DataLoader every benchmark of this kind uses."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(seed))  # fmt: skip
    start = time.perf_counter()
    total = samples = 0
    for batch in loader:
        total += int(batch.sum())
        samples += len(batch)
    assert samples == len(dataset)  # type: ignore[arg-type]
    return samples / (time.perf_counter() - start), total


@contextmanager
def fsspec_files(work: Path, registry: str, n: int) -> Iterator[FsspecFiles]:
    """The fsspec filesystem on an empty cache (its own directory per round)."""
    cache = work / f"fsspec-cache{n}"
    fs = RefmountFileSystem(registry, cache_dir=str(cache), skip_instance_cache=True)
    try:
        yield FsspecFiles(fs, "bench/dl/v0")
    finally:
        fs.close()
        shutil.rmtree(cache, ignore_errors=True)


@contextmanager
def mounted(work: Path, registry: str, n: int, *extra: str) -> Iterator[Path]:
    """A fresh mount with an empty cache (its own directory per round); ``extra``: more `refmount mount` options."""
    mnt, cache = work / f"mnt{n}", work / f"cache{n}"
    mnt.mkdir(exist_ok=True)
    mount = MountedFS(mnt, registry, cache, work / f"mount{n}.log", alias_ttl=60, extra_args=extra).start()
    try:
        yield mnt / "bench" / "dl" / "v0"
    finally:
        mount.stop()
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4000, help="number of objects (default 4000)")
    parser.add_argument("--min-kib", type=float, default=2, help="smallest object in KiB (default 2)")
    parser.add_argument("--max-kib", type=float, default=20, help="largest object in KiB (default 20)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per reader (default 2: cold, then warm)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every reader this often, interleaved; "
                        "medians are printed (default 1)")  # fmt: skip
    parser.add_argument("--readers", default="refmount,refmount-no-dir-readahead,refmount-no-lineage,fsspec,boto3,"
                        "s3torchconnector", help="comma-separated readers to run (default: all six; "
                        "refmount-no-lineage is a mount with --no-lineage, refmount-no-dir-readahead one with "
                        "--dir-readahead 0)")  # fmt: skip
    args = parser.parse_args()
    rng = random.Random(0)
    sizes = [int(rng.uniform(args.min_kib, args.max_kib) * 1024) for _ in range(args.files)]
    keys = [f"{PREFIX}{i % 50:02}/{i:06}.bin" for i in range(args.files)]
    work = Path(tempfile.mkdtemp(prefix="refmount-dl-", dir="/var/tmp"))
    results: dict[str, list[list[float]]] = {}
    try:
        with SeaweedFS() as endpoint:
            use_s3(endpoint)
            client = s3_client(endpoint)
            client.create_bucket(Bucket=BUCKET)
            print(f"uploading {args.files:,} objects ...", file=sys.stderr)
            with ThreadPoolExecutor(32) as pool:
                list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=keys[i], Body=os.urandom(sizes[i])),
                              range(args.files)))  # fmt: skip
            registry = f"sqlite:///{work / 'registry.db'}"
            art = refmount.Artifact("dl", type="dataset")
            art.add_reference(f"s3://{BUCKET}/{PREFIX}")
            refmount.log_artifact(art, project="bench", registry=registry)
            readers: dict[str, Callable[[int], Any]] = {
                "refmount": lambda n: mounted(work, registry, n),
                "refmount-no-lineage": lambda n: mounted(work, registry, n, "--no-lineage"),
                "refmount-no-dir-readahead": lambda n: mounted(work, registry, n, "--dir-readahead", "0"),
                "fsspec": lambda n: fsspec_files(work, registry, n),
                "boto3": lambda n: _given(Boto3Objects(endpoint, keys)),
                "s3torchconnector": lambda n: _given(s3torchconnector_dataset(endpoint)),
            }
            chosen = [name for name in args.readers.split(",") if name]
            for n in range(args.rounds):
                for name in chosen:
                    with readers[name](n) as source:
                        dataset = MountedFiles(source) if name.startswith("refmount") else source
                        drop_caches()
                        rates = []
                        for e in range(args.epochs):
                            rate, total = epoch(dataset, seed=e)
                            assert total == sum(sizes), (name, total, sum(sizes))
                            rates.append(rate)
                        results.setdefault(name, []).append(rates)
                        print(f"round {n + 1} {name}: " + ", ".join(f"{r:,.0f}" for r in rates), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {
        name: [statistics.median(r[e] for r in runs) for e in range(args.epochs)] for name, runs in results.items()
    }
    print(f"\n{args.files:,} objects of {args.min_kib:g}-{args.max_kib:g} KiB, DataLoader(batch_size=32, shuffle=True, "
          f"num_workers=2), SeaweedFS, {os.cpu_count()} cores, medians of {args.rounds} round(s)\n")  # fmt: skip
    print(f"{'dataset':<20}" + "".join(f"{f'epoch {e + 1} samples/s':>22}" for e in range(args.epochs)))
    for name, rates in medians.items():
        print(f"{name:<20}" + "".join(f"{rate:>22,.0f}" for rate in rates))
    if "refmount" in medians:
        for name, rates in medians.items():
            if name != "refmount":
                ratios = ", ".join(
                    f"epoch {e + 1} {medians['refmount'][e] / rate:.2f}x" for e, rate in enumerate(rates)
                )
                print(f"refmount / {name}: {ratios}")


@contextmanager
def _given(dataset: Any) -> Iterator[Any]:
    yield dataset


if __name__ == "__main__":
    main()
