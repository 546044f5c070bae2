"""Metadata at scale: an artifact of 1,000,000 entries in 1,000 directories, walked through the mount.

    python bench/metadata.py [--entries 1000000] [--dirs 1000] [--peers rclone,s3fs] [--peer-entries 100000]

Prints the time until the mount answers, the first and second `find -type f | wc -l` (entries/s)
and the daemon's RSS after the walks. The large artifact lives in the registry only: no object is
read, so no object store is needed. With --peers, a second part puts --peer-entries real objects in
SeaweedFS and walks them through refmount (logged from the bucket) and through each peer mounting
the same bucket, in the same run: the peers list the bucket, so they need the objects to exist.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from common import PEERS, peer_mount, rss_mib, serving_pid, use_s3

import refmount
from refmount.manifest import Entry, Manifest
from refmount.registry import open_registry
from tests.mounts import MountedFS
from tests.servers import SeaweedFS, s3_client


@dataclass
class Walks:
    label: str
    entries: int
    ready_s: float
    first_s: float
    second_s: float
    rss_mib: float


def walk(root: Path) -> tuple[int, float]:
    start = time.perf_counter()
    out = subprocess.run(f"find {root} -type f | wc -l", shell=True, capture_output=True, text=True, check=True)
    return int(out.stdout), time.perf_counter() - start


def measure(label: str, mount: Callable[[], AbstractContextManager[tuple[Path, int]]], entries: int) -> Walks:
    """Mount (timed until it answers), walk the tree twice, read the serving process's RSS."""
    start = time.perf_counter()
    with mount() as (root, pid):
        ready_s = time.perf_counter() - start
        first_n, first_s = walk(root)
        second_n, second_s = walk(root)
        rss = rss_mib(pid)
    assert first_n == second_n == entries, (label, first_n, second_n, entries)
    return Walks(label, entries, ready_s, first_s, second_s, rss)


@contextmanager
def refmount_mount(work: Path, registry: str, version_path: str) -> Iterator[tuple[Path, int]]:
    shutil.rmtree(work / "mnt", ignore_errors=True)
    (work / "mnt").mkdir()
    mount = MountedFS(work / "mnt", registry, work / "cache", work / "mount.log", alias_ttl=5).start()
    try:
        yield work / "mnt" / version_path, mount.proc.pid  # type: ignore[union-attr]
    finally:
        mount.stop()


def registry_only(work: Path, entries: int, dirs: int) -> tuple[float, Walks]:
    """The large artifact, logged straight into a registry (entries point at objects nobody reads)."""
    registry = f"sqlite:///{work / 'registry.db'}"
    start = time.perf_counter()
    manifest = Manifest(
        Entry(f"d{i % dirs:04}/f{i:07}.bin", f"s3://bucket/data/{i}", f"{i:032x}", 4096,
              {"etag": f"{i:032x}", "versionID": f"v{i}"})
        for i in range(entries)
    )  # fmt: skip
    open_registry(registry, create=True).log_version("bench", "huge", manifest, type="dataset")
    del manifest
    log_s = time.perf_counter() - start
    return log_s, measure("refmount", lambda: refmount_mount(work, registry, "bench/huge/v0"), entries)


def with_peers(work: Path, entries: int, dirs: int, peers: list[str]) -> list[Walks]:
    """``entries`` real objects in SeaweedFS, walked through refmount and each peer on the same bucket."""
    rows = []
    with SeaweedFS() as endpoint:
        use_s3(endpoint)
        client = s3_client(endpoint)
        client.create_bucket(Bucket="bench")
        print(f"uploading {entries:,} objects ...", file=sys.stderr)
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda i: client.put_object(Bucket="bench", Key=f"meta/d{i % dirs:04}/f{i:07}.bin",
                                                      Body=b"x"), range(entries)))  # fmt: skip
        registry = f"sqlite:///{work / 'peers.db'}"
        art = refmount.Artifact("meta", type="dataset")
        art.add_reference("s3://bench/meta/", max_objects=entries)
        refmount.log_artifact(art, project="bench", registry=registry)
        shutil.rmtree(work / "cache", ignore_errors=True)
        rows.append(measure("refmount", lambda: refmount_mount(work, registry, "bench/meta/v0"), entries))
        for kind in peers:

            @contextmanager
            def mounted(kind: str = kind) -> Iterator[tuple[Path, int]]:
                with peer_mount(kind, endpoint, "bench", work / f"mnt-{kind}") as mnt:
                    yield mnt / "meta", serving_pid(mnt)

            rows.append(measure(kind, mounted, entries))
    return rows


def print_walks(rows: list[Walks]) -> None:
    print(f"{'mount':<12}{'ready s':>9}{'first walk':>14}{'second walk':>14}{'second/first':>14}{'RSS MiB':>9}")
    for w in rows:
        print(f"{w.label:<12}{w.ready_s:>9.2f}{w.entries / w.first_s:>10,.0f} e/s{w.entries / w.second_s:>10,.0f} e/s"
              f"{w.first_s / w.second_s:>13.1f}x{w.rss_mib:>9.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="files in the version (default 1000000)")
    parser.add_argument("--dirs", type=int, default=1_000, help="directories they are spread over (default 1000)")
    parser.add_argument("--peers", default="", help=f"comma-separated peer mounts to compare: {', '.join(PEERS)}")
    parser.add_argument("--peer-entries", type=int, default=100_000,
                        help="real objects for the peer comparison (default 100000)")  # fmt: skip
    parser.add_argument("--peer-dirs", type=int, default=100, help="directories they are spread over (default 100)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="refmount-meta-", dir="/var/tmp"))
    try:
        log_s, big = registry_only(work, args.entries, args.dirs)
        peers = [kind for kind in args.peers.split(",") if kind]
        compared = with_peers(work, args.peer_entries, args.peer_dirs, peers) if peers else []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.entries:,} entries in {args.dirs:,} directories, registry only (2 cores)\n")
    print(f"registry logging            {log_s:8.1f} s   (building and storing the manifest)")
    print(f"mount ready                 {big.ready_s:8.2f} s   (target < 2 s)")
    print(f"first  find -type f | wc -l {big.first_s:8.2f} s   {big.entries / big.first_s:>10,.0f} entries/s "
          "(target >= 50,000)")  # fmt: skip
    print(f"second find -type f | wc -l {big.second_s:8.2f} s   {big.entries / big.second_s:>10,.0f} entries/s "
          f"({big.first_s / big.second_s:.1f}x the first; target >= 5x)")  # fmt: skip
    print(f"daemon RSS after the walks  {big.rss_mib:8.0f} MiB (target < 300 MB)")
    if compared:
        print(f"\n{args.peer_entries:,} objects in {args.peer_dirs:,} directories of one SeaweedFS bucket\n")
        print_walks(compared)


if __name__ == "__main__":
    main()
