"""Damaging cached blocks behind the cache's back, as a failing disk would (for corruption tests)."""

from __future__ import annotations

import sqlite3

from refmount.cache import BlockCache


def overwrite_block(cache: BlockCache, key: str, data: bytes) -> None:
    """Replace the stored bytes of ``key``: its block file, or its row when the block is inline."""
    path = cache.block_file(key)
    if path is not None:
        path.write_bytes(data)
        return
    with sqlite3.connect(cache.directory / "blocks" / "cache.db") as db:  # diskcache's own index
        assert db.execute("UPDATE Cache SET value = ? WHERE key = ?", (data, key)).rowcount == 1
    db.close()


def stored_block(cache: BlockCache, key: str) -> bytes:
    """The bytes stored for ``key``, whether in a file or inline."""
    path = cache.block_file(key)
    if path is not None:
        return path.read_bytes()
    with sqlite3.connect(cache.directory / "blocks" / "cache.db") as db:
        row = db.execute("SELECT value FROM Cache WHERE key = ?", (key,)).fetchone()
    db.close()
    assert row is not None, f"no block {key}"
    return bytes(row[0])
