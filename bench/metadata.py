"""Metadata at scale: an artifact of 1,000,000 entries in 1,000 directories, walked through the mount.

    python bench/metadata.py [--entries 1000000] [--dirs 1000]

Prints the time until the mount answers, the first and second `find -type f | wc -l` (entries/s)
and the daemon's RSS after the walks. Only the registry is needed: no object is read.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from refmount.manifest import Entry, Manifest
from refmount.registry import open_registry
from tests.mounts import MountedFS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def walk(root: Path) -> tuple[int, float]:
    start = time.perf_counter()
    out = subprocess.run(f"find {root} -type f | wc -l", shell=True, capture_output=True, text=True, check=True)
    return int(out.stdout), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="files in the version (default 1000000)")
    parser.add_argument("--dirs", type=int, default=1_000, help="directories they are spread over (default 1000)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="refmount-meta-", dir="/var/tmp"))
    try:
        registry = f"sqlite:///{work / 'registry.db'}"
        start = time.perf_counter()
        manifest = Manifest(
            Entry(f"d{i % args.dirs:04}/f{i:07}.bin", f"s3://bucket/data/{i}", f"{i:032x}", 4096,
                  {"etag": f"{i:032x}", "versionID": f"v{i}"})
            for i in range(args.entries)
        )  # fmt: skip
        open_registry(registry).log_version("bench", "huge", manifest, type="dataset")
        del manifest
        log_s = time.perf_counter() - start
        (work / "mnt").mkdir()
        start = time.perf_counter()
        mount = MountedFS(work / "mnt", registry, work / "cache", work / "mount.log", alias_ttl=5).start()
        ready_s = time.perf_counter() - start
        try:
            root = work / "mnt" / "bench" / "huge" / "v0"
            first_n, first_s = walk(root)
            second_n, second_s = walk(root)
            rss = rss_mib(mount.proc.pid)  # type: ignore[union-attr]
        finally:
            mount.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert first_n == second_n == args.entries, (first_n, second_n)
    print(f"\n{args.entries:,} entries in {args.dirs:,} directories (2 cores)\n")
    print(f"registry logging            {log_s:8.1f} s   (building and storing the manifest)")
    print(f"mount ready                 {ready_s:8.2f} s   (target < 2 s)")
    print(f"first  find -type f | wc -l {first_s:8.2f} s   {first_n / first_s:>10,.0f} entries/s (target >= 50,000)")
    print(f"second find -type f | wc -l {second_s:8.2f} s   {second_n / second_s:>10,.0f} entries/s "
          f"({first_s / second_s:.1f}x the first; target >= 5x)")  # fmt: skip
    print(f"daemon RSS after the walks  {rss:8.0f} MiB (target < 300 MB)")


if __name__ == "__main__":
    main()
