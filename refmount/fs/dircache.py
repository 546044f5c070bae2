"""Let the kernel cache the listings of version directories (FOPEN_CACHE_DIR), which pyfuse3 cannot ask for.

A version directory never changes, so after one ``readdir`` the kernel could answer every later
listing from its own cache, as it already does for lookups, attributes and file pages. libfuse passes
that wish to the kernel as the ``cache_readdir`` (and ``keep_cache``) bits of the ``fuse_file_info``
given to ``fuse_reply_open`` after ``opendir``, but pyfuse3 3.5 only lets ``opendir`` return a file
handle. So we wrap ``fuse_reply_open`` in pyfuse3's own symbol table (its GOT slot): when the
directory just opened was marked cacheable, the wrapper sets the two bits and calls libfuse.

The bits sit at fixed positions since libfuse 3.5 (later versions only appended fields). If anything
here does not look as expected the wrapper is not installed and listings simply keep reaching the
daemon: slower, never wrong.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import struct
from pathlib import Path

import pyfuse3

log = logging.getLogger(__name__)

KEEP_CACHE_BIT = 1 << 2  # struct fuse_file_info: writepage, direct_io, keep_cache, flush, nonseekable,
CACHE_READDIR_BIT = 1 << 6  # flock_release, cache_readdir (one 32-bit word of bitfields after `int flags`)
_SYMBOL = b"fuse_reply_open"
_GOT_RELOCATIONS = {62: (6, 7), 183: (1025, 1026)}  # e_machine -> GLOB_DAT, JUMP_SLOT: x86-64, aarch64
_SHT_RELA, _SHT_DYNSYM = 4, 11

_ReplyOpen = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class _State:
    installed = False
    next_is_cacheable = False
    real: _ReplyOpen | None = None
    wrapper: _ReplyOpen | None = None  # referenced here so the callback is never garbage-collected


def mark_next_reply_cacheable() -> None:
    """Call at the very end of ``opendir`` (pyfuse3 replies right after it returns, with no await between)."""
    _State.next_is_cacheable = _State.installed


def install() -> bool:
    """Install the wrapper once per process; False (with a debug log) where it cannot be done safely."""
    if _State.installed:
        return True
    try:
        libfuse = ctypes.CDLL(ctypes.util.find_library("fuse3") or "libfuse3.so.3")
        if _libfuse_version(libfuse) < (3, 5):
            raise RuntimeError("libfuse older than 3.5 has no cache_readdir")
        real = ctypes.cast(getattr(libfuse, _SYMBOL.decode()), ctypes.c_void_p).value
        slots = _got_slots(Path(pyfuse3.__file__), _SYMBOL, real or 0)
        _State.real = _ReplyOpen(real)
        _State.wrapper = _ReplyOpen(_reply_open)
        for slot in slots:
            _write_pointer(slot, ctypes.cast(_State.wrapper, ctypes.c_void_p).value or 0)
    except Exception as exc:
        log.info("directory listings will not be cached by the kernel: %s", exc)
        return False
    _State.installed = True
    return True


def _reply_open(req: int, fi: int) -> int:
    """Called by pyfuse3 instead of libfuse's fuse_reply_open (on the trio thread, holding the GIL)."""
    if _State.next_is_cacheable and fi:
        _State.next_is_cacheable = False
        bits = ctypes.c_uint32.from_address(fi + 4)
        bits.value |= KEEP_CACHE_BIT | CACHE_READDIR_BIT
    assert _State.real is not None
    return _State.real(req, fi)


def _libfuse_version(libfuse: ctypes.CDLL) -> tuple[int, int]:
    libfuse.fuse_version.restype = ctypes.c_int
    return divmod(libfuse.fuse_version(), 100)  # FUSE_MAKE_VERSION(3, 14) == 314


def _got_slots(library: Path, symbol: bytes, target: int) -> list[int]:
    """The run-time addresses of ``library``'s GOT entries through which it reaches ``symbol`` at ``target``.

    Each entry must already hold ``target`` or (lazy binding) point into the library itself: anything
    else means this reading of the ELF file is wrong, and nothing is patched.
    """
    image = library.read_bytes()
    machine = struct.unpack_from("<H", image, 18)[0]
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1 or machine not in _GOT_RELOCATIONS:
        raise RuntimeError("pyfuse3 is not a little-endian x86-64 or aarch64 ELF object")
    shoff, = struct.unpack_from("<Q", image, 0x28)  # fmt: skip
    shentsize, shnum = struct.unpack_from("<HH", image, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", image, shoff + i * shentsize) for i in range(shnum)]
    slots = []
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != _SHT_RELA or sections[link][1] != _SHT_DYNSYM:
            continue
        dynsym, dynstr = sections[link], sections[sections[link][6]]
        for at in range(offset, offset + size, entsize):
            r_offset, r_info, _addend = struct.unpack_from("<QQq", image, at)
            if r_info & 0xFFFFFFFF not in _GOT_RELOCATIONS[machine]:
                continue
            name_at = struct.unpack_from("<I", image, dynsym[4] + (r_info >> 32) * dynsym[9])[0]
            name = image[dynstr[4] + name_at : image.index(b"\0", dynstr[4] + name_at)]
            if name == symbol:
                slots.append(r_offset)
    if not slots:
        raise RuntimeError(f"no GOT entry for {symbol.decode()} in {library.name}")
    base = _load_base(library, image, sections)
    for offset in slots:
        current = ctypes.c_void_p.from_address(base + offset).value or 0
        if current != target and not base <= current < base + len(image):
            raise RuntimeError(f"the GOT entry for {symbol.decode()} holds an unexpected address")
    return [base + offset for offset in slots]


def _load_base(library: Path, image: bytes, sections: list[tuple[int, ...]]) -> int:
    """Where the library is mapped: an exported function's address minus its link-time value."""
    handle = ctypes.CDLL(str(library))
    dynsym = next(s for s in sections if s[1] == _SHT_DYNSYM)
    dynstr = sections[dynsym[6]]
    for at in range(dynsym[4], dynsym[4] + dynsym[5], dynsym[9]):
        name_at, info, _other, shndx, value, _size = struct.unpack_from("<IBBHQQ", image, at)
        name = image[dynstr[4] + name_at : image.index(b"\0", dynstr[4] + name_at)]
        if info & 0xF == 2 and shndx != 0 and name.startswith(b"PyInit_"):  # a defined function
            return (ctypes.cast(getattr(handle, name.decode()), ctypes.c_void_p).value or 0) - value
    raise RuntimeError(f"no exported function in {library.name} to locate it")


def _write_pointer(address: int, value: int) -> None:
    """Store ``value`` at ``address`` in a GOT, which RELRO keeps read-only: open the page for the write
    and give it back its protection afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page = address & ~(mmap.PAGESIZE - 1)
    protection = _protection(page)
    if libc.mprotect(page, mmap.PAGESIZE, protection | mmap.PROT_WRITE) != 0:
        raise OSError(ctypes.get_errno(), "mprotect of pyfuse3's GOT failed")
    ctypes.c_void_p.from_address(address).value = value
    if libc.mprotect(page, mmap.PAGESIZE, protection) != 0:
        raise OSError(ctypes.get_errno(), "restoring the protection of pyfuse3's GOT failed")


def _protection(address: int) -> int:
    """The PROT_* bits of the mapping that holds ``address`` (from /proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        start, end = (int(x, 16) for x in span.split("-"))
        if start <= address < end:
            bits = {"r": mmap.PROT_READ, "w": mmap.PROT_WRITE, "x": mmap.PROT_EXEC}
            return sum(bit for flag, bit in bits.items() if flag in perms)
    raise RuntimeError(f"address {address:#x} is not mapped")
