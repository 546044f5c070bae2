"""Many small files: 10,000 objects of 64 KiB read through the mount by 16 parallel readers.

    python bench/small_files.py [--files 10000] [--size-kib 64] [--readers 16] [--peers rclone,s3fs]
                                [--metrics 127.0.0.1:9464] [--lineage on|off|both] [--dir-readahead 16,0]

Starts SeaweedFS on 127.0.0.1, logs the prefix, and reads every file through the mount in a shuffled
order (as a training epoch does) with Python's ``open(path, "rb").read()``: cold (empty cache), warm from
the disk cache (page cache dropped) and warm from the page cache; then the page-cache pass again with
``os.open``/``os.read``. Python's buffered ``open()`` (before 3.14) probes ``isatty`` on every file it
opens: an ioctl that FUSE always sends to the daemon (libfuse answers it, in C); ``os.open`` does not.
For each pass it prints files/s, the serving daemon's CPU time and context switches per file (with a GIL,
mostly the lock changing hands between threads) and, for refmount, the requests that reached its Python
code (opens included) and all requests the kernel sent it (read() calls on /dev/fuse, from /proc).
Peers in the same run: boto3 GetObject of every object with the same number of threads, and optionally
`rclone mount` / `s3fs` on the same bucket, read the same ways. Needs root (it writes
/proc/sys/vm/drop_caches). With ``--metrics``, refmount serves Prometheus metrics there and the
benchmark scrapes them every second while it reads (a Prometheus server scrapes every 15 s or so): the
cost of instrumenting and of being scraped. refmount runs twice by default, with lineage (its default: every
open reaches the daemon) and with ``--no-lineage`` (opens stay in the kernel), each on a fresh mount and cache;
``--dir-readahead 16,0`` runs each of those once per ``--dir-readahead`` setting given (default: the mount's).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import (
    PEERS,
    context_switches,
    cpu_seconds,
    drop_caches,
    peer_mount,
    serving_pid,
    small_files_version,
    switches_since,
    use_s3,
)

from tests.mounts import MountedFS
from tests.servers import SeaweedFS, s3_client

STATS_XATTR = "user.refmount.stats"


@dataclass
class Pass:
    label: str
    files_per_s: float
    cpu_ms_per_file: float | None = None  # the serving process's CPU time per file
    switches_per_file: float | None = None  # the serving process's context switches per file
    requests: int | None = None  # requests that reached refmount's Python handlers during the pass
    kernel_requests: int | None = None  # all read() calls of refmount's daemon (one per request from the kernel)


def read_buffered(path: Path) -> int:
    with open(path, "rb") as f:  # what datasets do (PIL, torch.load, ...)
        return len(f.read())


def read_unbuffered(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return sum(iter(lambda: len(os.read(fd, 1 << 20)), 0))
    finally:
        os.close(fd)


def read_calls(pid: int) -> int:
    """The process's read() and similar calls so far (/proc/PID/io syscr)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise RuntimeError(f"no syscr for {pid}")


def timed(count: int, readers: int, read_one: Callable[[int], int], order: list[int]) -> float:
    """Files/s reading ``order`` with ``readers`` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(readers) as pool:
        total = sum(pool.map(read_one, order))
    assert total > 0
    return count / (time.perf_counter() - start)


def refmount_requests(mnt: Path) -> int:
    """All requests the daemon has answered so far (asking is a request too: an xattr is never cached)."""
    counts = json.loads(os.getxattr(mnt, STATS_XATTR))["requests"]
    return sum(counts.values())


def asking_costs(mnt: Path) -> int:
    """How many requests one :func:`refmount_requests` makes (the value's size, then the value)."""
    return -refmount_requests(mnt) + refmount_requests(mnt)


def epoch_passes(label: str, root: Path, args: argparse.Namespace, key: Callable[[int], str], pid: int,
                 counted: Path | None = None) -> list[Pass]:  # fmt: skip
    """Every file under ``root`` in a shuffled order: cold, from the reader's own disk cache, from the page
    cache (buffered ``open``), and from the page cache again with ``os.open``."""
    order = list(range(args.files))
    passes = []
    asking = asking_costs(counted) if counted else 0
    for name, drop, read in (("cold", True, read_buffered), ("warm (its disk cache)", True, read_buffered),
                             ("warm (page cache)", False, read_buffered),
                             ("warm (page cache, os.open)", False, read_unbuffered)):  # fmt: skip
        random.Random(name).shuffle(order)
        if drop:
            drop_caches()
        requests_before = refmount_requests(counted) if counted else 0
        cpu_before, calls_before, switches_before = cpu_seconds(pid), read_calls(pid), context_switches(pid)
        rate = timed(args.files, args.readers, functools.partial(_read_under, root, key, read), order)
        cpu, calls = cpu_seconds(pid) - cpu_before, read_calls(pid) - calls_before
        switches = switches_since(pid, switches_before)
        requests = refmount_requests(counted) - requests_before - asking if counted else None
        passes.append(Pass(f"{label} {name}", rate, cpu * 1000 / args.files, switches / args.files, requests,
                           calls if counted and not drop else None))  # fmt: skip
    return passes


def _read_under(root: Path, key: Callable[[int], str], read: Callable[[Path], int], i: int) -> int:
    return read(root / key(i))


def local_ceiling(root: Path, body: bytes, args: argparse.Namespace, key: Callable[[int], str]) -> list[Pass]:
    """The same files in a local directory, read from the page cache the same two ways: what the readers
    themselves can do, whatever serves the files."""
    for i in range(args.files):
        (root / key(i)).parent.mkdir(parents=True, exist_ok=True)
        (root / key(i)).write_bytes(body)
    order = random.Random("local").sample(range(args.files), args.files)
    passes = []
    for how, read in (("", read_buffered), (", os.open", read_unbuffered)):
        one = functools.partial(_read_under, root, key, read)
        timed(args.files, args.readers, one, order)  # brings every page into memory
        passes.append(Pass(f"local directory (page cache{how})", timed(args.files, args.readers, one, order)))
    return passes


class Scraper(threading.Thread):
    """GET ``url`` every ``interval`` seconds until stopped; counts the scrapes."""

    def __init__(self, url: str, interval: float = 1.0):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.scrapes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            with urllib.request.urlopen(self.url, timeout=10) as response:
                response.read()
            self.scrapes += 1

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.scrapes


def refmount_passes(work: Path, registry: str, args: argparse.Namespace, key: Callable[[int], str], *,
                    lineage: bool, dir_readahead: str | None) -> list[Pass]:  # fmt: skip
    """The epochs through a fresh mount on an empty cache."""
    shutil.rmtree(work / "cache", ignore_errors=True)
    (work / "mnt").mkdir(exist_ok=True)
    extra = (("--metrics", args.metrics) if args.metrics else ()) + (() if lineage else ("--no-lineage",))
    extra += ("--dir-readahead", dir_readahead) if dir_readahead is not None else ()
    mount = MountedFS(work / "mnt", registry, work / "cache", work / "mount.log", alias_ttl=60,
                      extra_args=extra).start()  # fmt: skip
    scraper = Scraper(f"http://{args.metrics}/metrics") if args.metrics else None
    try:
        assert mount.proc is not None
        version = work / "mnt" / "bench" / "small" / "v0"
        if scraper is not None:
            scraper.start()
        label = "refmount" + (" --metrics" if args.metrics else "") + ("" if lineage else " --no-lineage")
        label += f" --dir-readahead {dir_readahead}" if dir_readahead is not None else ""
        return epoch_passes(label, version, args, key, mount.proc.pid, counted=work / "mnt")
    finally:
        if scraper is not None:
            print(f"scraped {args.metrics} {scraper.stop()} times")
        mount.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="number of files (default 10000)")
    parser.add_argument("--size-kib", type=int, default=64, help="size of each file in KiB (default 64)")
    parser.add_argument("--readers", type=int, default=16, help="parallel readers (default 16)")
    parser.add_argument("--peers", default="", help=f"comma-separated peer mounts to run too: {', '.join(PEERS)}")
    parser.add_argument("--metrics", metavar="HOST:PORT", help="refmount serves metrics there, scraped every second")
    parser.add_argument(
        "--lineage",
        choices=("on", "off", "both"),
        default="both",
        help="refmount with lineage (the default: opens reach the daemon), without, or both in turn",
    )
    parser.add_argument(
        "--dir-readahead",
        metavar="FILES[,FILES...]",
        help="run refmount with each of these --dir-readahead settings (default: the mount's own)",
    )
    args = parser.parse_args()
    key = lambda i: f"{i % 100:02}/{i:06}.bin"  # noqa: E731  (under the prefix small/)
    work = Path(tempfile.mkdtemp(prefix="refmount-small-", dir="/var/tmp"))
    rows: list[Pass] = []
    try:
        with SeaweedFS() as endpoint:
            use_s3(endpoint)
            body = os.urandom(args.size_kib << 10)
            registry = small_files_version(endpoint, work, args.files, body, key)
            client = s3_client(endpoint)

            def get_object(i: int) -> int:
                return len(client.get_object(Bucket="bench", Key=f"small/{key(i)}")["Body"].read())

            order = random.Random(0).sample(range(args.files), args.files)
            rows.append(Pass("boto3 GetObject", timed(args.files, args.readers, get_object, order)))
            settings = args.dir_readahead.split(",") if args.dir_readahead else [None]
            for lineage in ("on", "off") if args.lineage == "both" else (args.lineage,):
                for dir_readahead in settings:
                    rows += refmount_passes(work, registry, args, key, lineage=lineage == "on",
                                            dir_readahead=dir_readahead)  # fmt: skip
            rows += local_ceiling(work / "local", body, args, key)
            for kind in filter(None, args.peers.split(",")):
                with peer_mount(kind, endpoint, "bench", work / f"mnt-{kind}") as mnt:
                    rows += epoch_passes(kind, mnt / "small", args, key, serving_pid(mnt))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.files:,} files of {args.size_kib} KiB, {args.readers} parallel readers, shuffled, SeaweedFS, "
          f"{os.cpu_count()} cores\n")  # fmt: skip
    print(f"{'reader':<48}{'files/s':>9}{'MB/s':>7}{'daemon CPU/file':>17}{'switches/file':>15}{'to Python':>11}"
          f"{'all requests':>14}")  # fmt: skip
    for row in rows:
        cpu = "" if row.cpu_ms_per_file is None else f"{row.cpu_ms_per_file:.2f} ms"
        switches = "" if row.switches_per_file is None else f"{row.switches_per_file:.1f}"
        requests = "" if row.requests is None else f"{row.requests:,}"
        kernel = "" if row.kernel_requests is None else f"<= {row.kernel_requests:,}"
        print(f"{row.label:<48}{row.files_per_s:>9,.0f}{row.files_per_s * args.size_kib / 1024:>7,.0f}{cpu:>17}"
              f"{switches:>15}{requests:>11}{kernel:>14}")  # fmt: skip


if __name__ == "__main__":
    main()
