"""What the benchmark scripts share: the repo on sys.path, page-cache dropping, S3 settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import refmount.stores


def drop_caches() -> None:
    """Empty the page cache (root only), so the next read comes from disk or the network."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def use_s3(endpoint: str) -> None:
    """Point refmount at a local S3 server with throwaway credentials."""
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_S3_ENDPOINT_URL=endpoint)  # fmt: skip
    refmount.stores.reset()
