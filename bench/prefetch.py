"""Warming a node: `refmount cache prefetch` against a cold read of every file through the mount.

    python bench/prefetch.py [--files 10000] [--size-kib 64] [--readers 16] [--jobs 32] [--rounds 1]

Starts SeaweedFS on 127.0.0.1 with --files objects of --size-kib and logs the prefix. Then, each on an
empty cache: `refmount cache prefetch` of the version (the whole command, -j --jobs), and a cold `cat` of
every file through a fresh mount, one process per file, --readers at a time (the peer), then the same
cold epoch read with Python's open() from --readers threads. After the prefetch, a mount on its cache
reads every file and the benchmark checks that it fetched nothing. Prints files/s of each. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import drop_caches, small_files_version, use_s3

from tests.mounts import MountedFS
from tests.servers import SeaweedFS

STATS_XATTR = "user.refmount.stats"


def prefetch(work: Path, registry: str, cache: Path, jobs: int) -> float:
    env = {**os.environ, "REFMOUNT_REGISTRY": registry, "REFMOUNT_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "refmount", "cache", "prefetch", "bench/small", "-q", "-j", str(jobs)],
                   check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def through_mount(work: Path, registry: str, cache: Path, n: int, read: str, readers: int) -> tuple[float, int]:
    """(seconds to read every file, the daemon's store fetches) with a fresh mount on ``cache``."""
    mnt = work / f"mnt{n}"
    mnt.mkdir()
    mount = MountedFS(mnt, registry, cache, work / f"mount{n}.log", alias_ttl=60).start()
    try:
        files = sorted(str(p) for p in (mnt / "bench/small/v0").rglob("*.bin"))
        drop_caches()
        start = time.perf_counter()
        with ThreadPoolExecutor(readers) as pool:
            if read == "cat":
                list(pool.map(lambda f: subprocess.run(["cat", f], check=True, stdout=subprocess.DEVNULL), files))
            else:
                list(pool.map(lambda f: len(open(f, "rb").read()), files))  # noqa: SIM115
        seconds = time.perf_counter() - start
        fetches = json.loads(os.getxattr(mnt, STATS_XATTR))["fetches"]
    finally:
        mount.stop()
    return seconds, fetches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="number of files (default 10000)")
    parser.add_argument("--size-kib", type=int, default=64, help="size of each file in KiB (default 64)")
    parser.add_argument("--readers", type=int, default=16, help="parallel readers through the mount (default 16)")
    parser.add_argument("--jobs", type=int, default=32, help="refmount cache prefetch -j (default 32)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat, interleaved; medians printed (default 1)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="refmount-prefetch-", dir="/var/tmp"))
    rates: dict[str, list[float]] = {}
    try:
        with SeaweedFS() as endpoint:
            use_s3(endpoint)
            body = os.urandom(args.size_kib << 10)
            registry = small_files_version(endpoint, work, args.files, body, lambda i: f"{i % 100:02}/{i:06}.bin")
            n = 0
            for r in range(args.rounds):
                cache = work / f"cache-prefetch{r}"
                drop_caches()
                rates.setdefault("refmount cache prefetch", []).append(args.files / prefetch(work, registry, cache,
                                                                                             args.jobs))  # fmt: skip
                _, fetches = through_mount(work, registry, cache, n := n + 1, "open", args.readers)
                assert fetches == 0, f"the mount fetched {fetches} blocks after the prefetch"
                shutil.rmtree(cache)
                for read in ("cat", "open"):
                    cache = work / f"cache-{read}{r}"
                    seconds, _ = through_mount(work, registry, cache, n := n + 1, read, args.readers)
                    rates.setdefault(f"cold {read} through the mount", []).append(args.files / seconds)
                    shutil.rmtree(cache)
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\n{args.files:,} files of {args.size_kib} KiB, SeaweedFS, prefetch -j {args.jobs}, {args.readers} readers "
          f"through the mount, {os.cpu_count()} cores, medians of {args.rounds} round(s)\n")  # fmt: skip
    print(f"{'reader':<34}{'files/s':>9}")
    for name, rate in medians.items():
        print(f"{name:<34}{rate:>9,.0f}")
    prefetched = medians["refmount cache prefetch"]
    for peer in ("cold cat through the mount", "cold open through the mount"):
        print(f"prefetch / {peer}: {prefetched / medians[peer]:.2f}x")


if __name__ == "__main__":
    main()
