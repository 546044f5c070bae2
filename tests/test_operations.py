"""The FUSE handlers' error containment, as a unit (the handlers themselves are tested through real mounts)."""

from __future__ import annotations

import errno
import sqlite3

import pyfuse3
import pytest
import trio

from refmount.fs.operations import _contained


class Handlers:
    @_contained
    async def lookup(self, parent_inode: int, name: bytes) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    @_contained
    async def getattr(self, inode: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOENT)

    @_contained
    async def statfs(self) -> str:
        return "answer"


def test_unexpected_errors_fail_only_their_request_with_eio(caplog: pytest.LogCaptureFixture) -> None:
    handlers = Handlers()
    with pytest.raises(pyfuse3.FUSEError) as info:
        trio.run(handlers.lookup, 1, b"name")
    assert info.value.errno == errno.EIO
    assert "EIO for a lookup request (1, b'name')" in caplog.text and "malformed" in caplog.text
    with pytest.raises(pyfuse3.FUSEError) as info:
        trio.run(handlers.getattr, 7)
    assert info.value.errno == errno.ENOENT  # the handler's own answers pass through
    assert trio.run(handlers.statfs) == "answer"
