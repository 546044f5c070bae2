"""Many small files: 10,000 objects of 64 KiB read through the mount by 16 parallel readers.

    python bench/small_files.py [--files 10000] [--size-kib 64] [--readers 16] [--peers rclone,s3fs]

Starts SeaweedFS on 127.0.0.1, logs the prefix, and reads every file through the mount: cold
(empty cache), warm from the disk cache (page cache dropped) and warm from the page cache. Peers
in the same run: boto3 GetObject of every object with the same number of threads, and optionally
`rclone mount` / `s3fs` on the same bucket, read the same three ways. Needs root (it writes
/proc/sys/vm/drop_caches).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import PEERS, drop_caches, peer_mount, use_s3

import refmount
import refmount.stores
from tests.mounts import MountedFS
from tests.servers import SeaweedFS, s3_client


def files_per_second(count: int, readers: int, read_one: Callable[[int], int]) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(readers) as pool:
        total = sum(pool.map(read_one, range(count)))
    assert total > 0
    return count / (time.perf_counter() - start)


def three_ways(label: str, root: Path, args: argparse.Namespace, key: Callable[[int], str]) -> list[tuple[str, float]]:
    """Files/s reading every file under ``root``: cold, from the reader's own disk cache, from the page cache."""

    def read_file(i: int) -> int:
        return len((root / key(i)).read_bytes())

    drop_caches()
    cold = files_per_second(args.files, args.readers, read_file)
    drop_caches()
    disk = files_per_second(args.files, args.readers, read_file)
    page = files_per_second(args.files, args.readers, read_file)
    return [(f"{label} cold", cold), (f"{label} warm (its disk cache)", disk), (f"{label} warm (page cache)", page)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="number of files (default 10000)")
    parser.add_argument("--size-kib", type=int, default=64, help="size of each file in KiB (default 64)")
    parser.add_argument("--readers", type=int, default=16, help="parallel readers (default 16)")
    parser.add_argument("--peers", default="", help=f"comma-separated peer mounts to run too: {', '.join(PEERS)}")
    args = parser.parse_args()
    key = lambda i: f"{i % 100:02}/{i:06}.bin"  # noqa: E731  (under the prefix small/)
    work = Path(tempfile.mkdtemp(prefix="refmount-small-", dir="/var/tmp"))
    rows: list[tuple[str, float]] = []
    try:
        with SeaweedFS() as endpoint:
            use_s3(endpoint)
            client = s3_client(endpoint)
            client.create_bucket(Bucket="bench")
            body = os.urandom(args.size_kib << 10)
            print(f"uploading {args.files:,} objects ...", file=sys.stderr)
            with ThreadPoolExecutor(32) as pool:
                list(pool.map(lambda i: client.put_object(Bucket="bench", Key=f"small/{key(i)}", Body=body),
                              range(args.files)))  # fmt: skip
            registry = f"sqlite:///{work / 'registry.db'}"
            art = refmount.Artifact("small", type="dataset")
            art.add_reference("s3://bench/small/")
            refmount.log_artifact(art, project="bench", registry=registry)

            def get_object(i: int) -> int:
                return len(client.get_object(Bucket="bench", Key=f"small/{key(i)}")["Body"].read())

            rows.append(("boto3 GetObject", files_per_second(args.files, args.readers, get_object)))
            (work / "mnt").mkdir()
            mount = MountedFS(work / "mnt", registry, work / "cache", work / "mount.log", alias_ttl=60).start()
            try:
                rows += three_ways("refmount", work / "mnt" / "bench" / "small" / "v0", args, key)
            finally:
                mount.stop()
            for kind in filter(None, args.peers.split(",")):
                with peer_mount(kind, endpoint, "bench", work / f"mnt-{kind}") as mnt:
                    rows += three_ways(kind, mnt / "small", args, key)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.files:,} files of {args.size_kib} KiB, {args.readers} parallel readers, SeaweedFS, 2 cores\n")
    print(f"{'reader':<32}{'files/s':>10}{'MB/s':>8}")
    for label, rate in rows:
        print(f"{label:<32}{rate:>10,.0f}{rate * args.size_kib / 1024:>8,.0f}")


if __name__ == "__main__":
    main()
