"""Sequential read of one large S3 object through the mount, cold and warm, against its peers.

    python bench/read_throughput.py [--size-mib 1024] [--rounds 3] [--peers rclone,s3fs]
        [--store-on memory,disk]

Starts SeaweedFS (`weed mini`) on 127.0.0.1, uploads the object (and a copy under another key),
logs both, mounts refmount, and reads the file with 1 MiB reads: cold (empty caches) twice, right
after mounting and then the copy through the same mount, from the disk cache (page cache dropped)
and from the page cache (counting the read requests that still reach the daemon). A new daemon's
first large read also pays for its first touch of its block buffers (about 200 MiB, costly in a VM);
a mount that has read before no longer does, like the boto3 client that is reused across rounds.
Peers in the same run: boto3's `download_file` of the object (also timed until its file is on disk,
as refmount's cache blocks are), a plain read of the same bytes from a local file with a cold page
cache, and optionally `rclone mount` / `s3fs` on the same bucket. Needs root (it writes
/proc/sys/vm/drop_caches).
All of it twice: with SeaweedFS's objects in memory, as on a remote server (whose disks are not the
reader's), and on the disk that also holds the readers' caches (where a reader that fills its cache
while it reads competes with the server for the disk, and boto3's file is written back only after
its clock stops).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import drop_caches, peer_mount, use_s3

import refmount
import refmount.stores
from tests.mounts import MountedFS
from tests.servers import SeaweedFS, s3_client

MIB = 1 << 20


def read_all(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    total = 0
    try:
        while chunk := os.read(fd, MIB):
            total += len(chunk)
    finally:
        os.close(fd)
    return total


def rate(size: int, fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return size / MIB / (time.perf_counter() - start)


class Results:
    """Rates per reader over several rounds: this machine's figures swing by about 30% between runs."""

    def __init__(self) -> None:
        self.rates: dict[str, list[float]] = {}
        self.notes: dict[str, str] = {}

    def add(self, label: str, mbs: float, note: str = "") -> None:
        self.rates.setdefault(label, []).append(mbs)
        self.notes[label] = note

    def median(self, label: str) -> float:
        return statistics.median(self.rates[label])

    def print(self) -> None:
        print(f"{'reader':<30}{'MB/s':>8}{'min-max':>14}  note")
        for label, rates in self.rates.items():
            spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
            print(f"{label:<30}{self.median(label):>8,.0f}{spread:>14}  {self.notes[label]}")


def boto3_download(client: Any, target: Path, size: int, *, synced: bool) -> tuple[str, float, str]:
    """boto3's ``download_file`` of the object, optionally until its bytes are on disk: without the fsync
    the kernel writes them back after the clock stops, while refmount's cache writes count."""

    def download() -> None:
        client.download_file("bench", "data/object.bin", str(target))
        if synced:
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    if synced:
        return "boto3 download_file + fsync", rate(size, download), "the same, until on disk"
    return "boto3 download_file", rate(size, download), "to a local file"


def refmount_round(results: Results, work: Path, registry: str, size: int) -> None:
    """Cold reads (fresh cache dir) through a new mount and through the same mount again, then disk-cache
    warm and page-cache warm reads."""
    shutil.rmtree(work / "cache", ignore_errors=True)
    mount = MountedFS(work / "mnt", registry, work / "cache", work / "mount.log").start()
    try:
        path = work / "mnt" / "bench" / "big" / "v0" / "object.bin"
        drop_caches()
        results.add("refmount cold, new mount", rate(size, lambda: read_all(path)), "empty disk cache")
        drop_caches()
        results.add("refmount cold, running mount", rate(size, lambda: read_all(path.with_name("copy.bin"))),
                    "the same bytes under another key")  # fmt: skip
        drop_caches()
        before = mount.stats()["reads"]
        results.add("refmount warm (disk cache)", rate(size, lambda: read_all(path)),
                    f"{mount.stats()['reads'] - before:,} daemon reads")  # fmt: skip
        before = mount.stats()["reads"]
        results.add("refmount warm (page cache)", rate(size, lambda: read_all(path)),
                    f"{mount.stats()['reads'] - before:,} daemon reads")  # fmt: skip
    finally:
        mount.stop()


def peer_round(results: Results, kind: str, endpoint: str, work: Path, size: int) -> None:
    with peer_mount(kind, endpoint, "bench", work / f"mnt-{kind}") as mnt:
        path = mnt / "data/object.bin"
        drop_caches()
        results.add(f"{kind} cold", rate(size, lambda: read_all(path)))
        drop_caches()
        results.add(f"{kind} warm (its disk cache)", rate(size, lambda: read_all(path)), "page cache dropped")
        results.add(f"{kind} warm (page cache)", rate(size, lambda: read_all(path)))


# Where SeaweedFS keeps the objects. "memory" (tmpfs, which dropping the page cache leaves alone) stands
# for a remote store, whose disks are not the reader's; "disk" puts them on the disk that also holds
# the readers' caches, so a reader that fills a cache while it reads competes with the store for it.
STORE_DIRS = {"memory": "/dev/shm", "disk": "/var/tmp"}


def is_tmpfs(path: str) -> bool:
    with open("/proc/mounts") as mounts:
        return any(line.split()[1:3] == [path, "tmpfs"] for line in mounts)


def measure(store_on: str, args: argparse.Namespace, work: Path, source: Path) -> Results:
    """Every reader over ``args.rounds`` interleaved rounds, the store's objects kept in ``store_on``."""
    size = args.size_mib * MIB
    results = Results()
    with SeaweedFS(STORE_DIRS[store_on]) as endpoint:
        use_s3(endpoint)
        client = s3_client(endpoint)
        client.create_bucket(Bucket="bench")
        client.upload_file(str(source), "bench", "data/object.bin")
        client.upload_file(str(source), "bench", "data/copy.bin")
        registry = f"sqlite:///{work / f'registry-{store_on}.db'}"
        art = refmount.Artifact("big", type="dataset")
        art.add_reference("s3://bench/data/")
        refmount.log_artifact(art, project="bench", registry=registry)
        (work / "mnt").mkdir(exist_ok=True)
        for _ in range(args.rounds):  # interleaved, so that a slow spell of the machine hits every reader
            for synced in (False, True):
                drop_caches()
                results.add(*boto3_download(client, work / "download.bin", size, synced=synced))
                (work / "download.bin").unlink()
            drop_caches()
            results.add("plain local read (cold)", rate(size, lambda: read_all(source)), "page cache dropped")
            refmount_round(results, work, registry, size)
            for kind in filter(None, args.peers.split(",")):
                peer_round(results, kind, endpoint, work, size)
    return results


def report(store_on: str, results: Results) -> None:
    print(f"\nstore's objects in {store_on} ({STORE_DIRS[store_on]})\n")
    results.print()
    boto3 = results.median("boto3 download_file")
    cold = results.median("refmount cold, running mount") / boto3
    first = results.median("refmount cold, new mount") / boto3
    disk = results.median("refmount warm (disk cache)") / results.median("plain local read (cold)")
    page = results.median("refmount warm (page cache)") / results.median("refmount warm (disk cache)")
    synced = results.median("refmount cold, running mount") / results.median("boto3 download_file + fsync")
    print(f"\ncold / boto3: {cold:.2f}x through a running mount (target >= 0.9)")
    print(f"cold / boto3, a new mount's first read: {first:.2f}x")
    print(f"cold / boto3 until its file is on disk: {synced:.2f}x")
    print(f"disk-cache warm / plain local read: {disk:.2f}x (target >= 0.8)")
    print(f"page-cache warm / disk-cache warm: {page:.1f}x (target >= 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="object size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every reader; medians are shown (default 3)")
    parser.add_argument("--peers", default="", help="comma-separated extra peers to run: rclone, s3fs")
    parser.add_argument("--store-on", default="memory,disk",
                        help="where SeaweedFS keeps the objects, one run each: memory (tmpfs at /dev/shm, like a "
                        "remote store), disk (/var/tmp, the disk the caches are on) (default: both)")  # fmt: skip
    args = parser.parse_args()
    placements = args.store_on.split(",")
    if unknown := set(placements) - STORE_DIRS.keys():
        parser.error(f"--store-on: unknown placement {', '.join(sorted(unknown))} (memory, disk)")
    if "memory" in placements and not is_tmpfs(STORE_DIRS["memory"]):
        parser.error(f"--store-on memory needs a tmpfs at {STORE_DIRS['memory']}")
    work = Path(tempfile.mkdtemp(prefix="refmount-bench-", dir="/var/tmp"))
    source = work / "object.bin"
    with open(source, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MIB))
    try:
        measured = {store_on: measure(store_on, args, work, source) for store_on in placements}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nsequential read of a {args.size_mib} MiB object, SeaweedFS on loopback, 2 cores, "
          f"median of {args.rounds} rounds")  # fmt: skip
    for store_on, results in measured.items():
        report(store_on, results)


if __name__ == "__main__":
    main()
