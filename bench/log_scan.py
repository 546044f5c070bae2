"""Logging a large S3 prefix: refmount's listing-only scan against a HEAD-per-object scan.

    python bench/log_scan.py [--objects 20000] [--server seaweedfs|moto]

Starts its own server on 127.0.0.1, uploads the objects, then times both scans in the same run and
counts the S3 requests each one makes (a botocore hook on the client).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from common import use_s3  # also puts the repo on sys.path

import refmount.stores
from refmount.manifest import Entry, Manifest
from refmount.stores.s3 import S3Store
from tests.servers import SeaweedFS, moto, s3_client


@contextmanager
def server(kind: str) -> Iterator[str]:
    if kind == "moto":
        with moto() as m:
            yield m.endpoint
    else:
        with SeaweedFS() as endpoint:
            yield endpoint


def counting(client: Any) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    client.meta.events.register("before-call.s3", lambda model, **_: counts.update([model.name]))
    return counts


def refmount_scan(store: S3Store, bucket: str) -> int:
    return len(Manifest(store.scan(refmount.stores.parse(f"s3://{bucket}/data/"))))


def head_per_object_scan(client: Any, bucket: str) -> int:
    """The naive peer: list the keys, then HEAD each one (16 threads) for its ETag and size."""
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="data/")
            for o in page.get("Contents", [])]  # fmt: skip

    def head(key: str) -> Entry:
        h = client.head_object(Bucket=bucket, Key=key)
        return Entry(key[5:], f"s3://{bucket}/{key}", h["ETag"].strip('"'), h["ContentLength"])

    with ThreadPoolExecutor(16) as pool:
        return len(Manifest(pool.map(head, keys)))


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    count = fn()
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000, help="objects under the prefix (default 20000)")
    parser.add_argument("--server", choices=["seaweedfs", "moto"], default="seaweedfs", help="S3 server to start")
    args = parser.parse_args()
    with server(args.server) as endpoint:
        use_s3(endpoint)
        client = s3_client(endpoint)
        bucket = "bench-log-scan"
        client.create_bucket(Bucket=bucket)
        print(f"uploading {args.objects:,} objects to {args.server} at {endpoint} ...", file=sys.stderr)
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda i: client.put_object(Bucket=bucket, Key=f"data/{i % 100:02}/{i:06}.bin",
                                                      Body=b"%d" % i), range(args.objects)))  # fmt: skip
        store = refmount.stores.store_for("s3")
        assert isinstance(store, S3Store)
        ours_requests = counting(store.client)
        peer_client = s3_client(endpoint)
        peer_requests = counting(peer_client)
        ours, ours_s = timed(lambda: refmount_scan(store, bucket))
        peer, peer_s = timed(lambda: head_per_object_scan(peer_client, bucket))
    assert ours == peer == args.objects, (ours, peer)
    print(f"\nlog scan of {args.objects:,} objects on {args.server} (2 cores, loopback)\n")
    print(f"{'scanner':<26}{'seconds':>9}{'objects/s':>12}  requests")
    for label, seconds, requests in (("refmount (listing only)", ours_s, ours_requests),
                                     ("HEAD per object (16 thr)", peer_s, peer_requests)):  # fmt: skip
        detail = ", ".join(f"{op} {n:,}" for op, n in sorted(requests.items()))
        print(f"{label:<26}{seconds:>9.2f}{args.objects / seconds:>12,.0f}  {detail}")
    lists = sum(n for op, n in ours_requests.items() if op.startswith("List"))
    print(f"\nspeed-up: {peer_s / ours_s:.1f}x; list requests per 1,000 objects: {1000 * lists / args.objects:.2f}")


if __name__ == "__main__":
    main()
