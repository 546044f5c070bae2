"""`refmount verify` of a large S3 version: checks by listing against one request per object.

    python bench/verify.py [--objects 100000] [--versioned] [--jobs 16]

Starts SeaweedFS on 127.0.0.1, uploads the objects, logs them with `refmount log`, then times
`refmount verify` (whole commands, start-up and registry included) both ways in the same run: by
listings (the default) and with `--per-object` (a HEAD per entry, the way verify worked before: the peer).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import use_s3  # also puts the repo on sys.path

from tests.servers import SeaweedFS, s3_client

ARTIFACT = "bench/verify"


def refmount(registry: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REFMOUNT_REGISTRY": registry}
    return subprocess.run([sys.executable, "-m", "refmount", *args], env=env, capture_output=True, text=True,
                          check=True)  # fmt: skip


def timed_verify(registry: str, *flags: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    report = json.loads(refmount(registry, "verify", ARTIFACT, "--json", "-q", *flags).stdout)
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000, help="objects under the prefix (default 100000)")
    parser.add_argument("--versioned", action="store_true", help="a versioned bucket (ListObjectVersions)")
    parser.add_argument("--jobs", type=int, default=16, help="verify -j (default 16)")
    args = parser.parse_args()
    with SeaweedFS() as endpoint, tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        use_s3(endpoint)
        client = s3_client(endpoint)
        bucket = "bench-verify"
        client.create_bucket(Bucket=bucket)
        if args.versioned:
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        print(f"uploading {args.objects:,} objects to SeaweedFS at {endpoint} ...", file=sys.stderr)
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda i: client.put_object(Bucket=bucket, Key=f"data/{i % 100:02}/{i:06}.bin",
                                                      Body=b"%d" % i), range(args.objects)))  # fmt: skip
        registry = f"sqlite:///{Path(tmp) / 'registry.db'}"
        os.environ["REFMOUNT_CACHE_DIR"] = str(Path(tmp) / "cache")
        print("logging them ...", file=sys.stderr)
        refmount(registry, "log", ARTIFACT, f"s3://{bucket}/data/", "-q")
        print("verifying ...", file=sys.stderr)
        jobs = ("-j", str(args.jobs))
        runs = {"listings": timed_verify(registry, *jobs), "per object": timed_verify(registry, "--per-object", *jobs)}
    kind = "versioned" if args.versioned else "unversioned"
    print(f"\nrefmount verify of {args.objects:,} S3 refs on SeaweedFS ({kind} bucket, -j {args.jobs}, 2 cores)\n")
    print(f"{'path':<12}{'seconds':>9}{'refs/s':>10}  requests")
    for label, (seconds, report) in runs.items():
        assert report["resolved"] == args.objects, report
        requests = report["requests"]
        print(f"{label:<12}{seconds:>9.2f}{args.objects / seconds:>10,.0f}  "
              f"list {requests['list']:,}, per object {requests['per_object']:,}")  # fmt: skip
    listed, alone = runs["listings"][0], runs["per object"][0]
    print(f"\nspeed-up: {alone / listed:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
