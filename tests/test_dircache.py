"""The wrapper that lets the kernel cache version directory listings: installed, protections kept.

(That listings are then really served by the kernel is tested through a mount in test_mount.py.)
"""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import ctypes, ctypes.util
from pathlib import Path
import pyfuse3
from refmount.fs import dircache

libfuse = ctypes.CDLL(ctypes.util.find_library("fuse3"))
real = ctypes.cast(libfuse.fuse_reply_open, ctypes.c_void_p).value
slots = dircache._got_slots(Path(pyfuse3.__file__), b"fuse_reply_open", real)
before = [dircache._protection(slot) for slot in slots]
assert dircache.install() and dircache.install()  # a second call is a no-op
wrapper = ctypes.cast(dircache._State.wrapper, ctypes.c_void_p).value
assert slots and all(ctypes.c_void_p.from_address(slot).value == wrapper for slot in slots)
assert [dircache._protection(slot) for slot in slots] == before, "the GOT pages changed protection"
print("ok")
"""


def test_install_patches_pyfuse3_and_leaves_its_got_protection_as_it_was() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
