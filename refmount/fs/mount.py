"""Mount lifecycle: checks, daemonizing, serving until unmounted or signalled, unmounting.

By default the command returns once the mount answers (the daemon runs on, logging to a file);
``foreground`` keeps it attached (what systemd's ``Type=notify`` unit uses). Either way the
daemon reports readiness only after a real request through the kernel succeeded.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyfuse3
import trio

from .. import __version__, sdnotify, stores
from ..cache import BlockCache
from ..errors import InvalidInput, RefmountError, sole_exception
from ..mountopts import not_for_fuse
from ..reader import open_reader
from ..registry import Registry, open_registry
from ..registry.url import redact
from ..storecheck import unusable_stores
from ..stores.file import FileStore
from ..stores.http import HTTPStore
from .adapter import FuseAdapter
from .core import Filesystem
from .features import Features
from .lineage import LineageRecorder
from .namespace import Namespace
from .sweep import AHEAD_PER_LOOKUP, Sweeper

if TYPE_CHECKING:
    from ..metrics import MetricsServer

log = logging.getLogger(__name__)

# What refmount's mounts show as their type in /proc/self/mountinfo (FUSE's ``subtype`` option):
# ``refmount umount`` removes those and nothing else.
SUBTYPE = "refmount"
FSTYPE = f"fuse.{SUBTYPE}"
LAST_FLUSH_S = 10.0  # how long an unmounted daemon waits for the registry to take the last lineage records


@dataclass
class MountOptions:
    """Everything ``refmount mount`` needs (the CLI fills it from flags, environment and config files).

    - ``cache_dir``: block cache, manifest indexes and the default log (created 0700); shareable by mounts.
    - ``cache_size_bytes``: the block cache's size limit (the blocks stored longest ago are evicted past it).
    - ``alias_ttl_s``: how long the kernel and the daemon may keep answers above versions (projects,
      artifacts, version lists, alias symlinks); version contents are immutable and cached for a day.
    - ``stop_timeout_s``: after SIGTERM, how long files already open are still served (see ``_Stopping``).
    - ``allow_other``, ``uid``, ``gid``: who may read, and the owner every file shows.
    - ``fuse_options``: extra ``-o`` options for FUSE (``ro``, ``default_permissions``, ``fsname`` are always set).
    - ``foreground``: stay attached and log to ``log_file`` or stderr; otherwise fork a daemon that logs to
      ``log_file`` or :attr:`default_log_file`.
    - ``metrics``: ``HOST:PORT`` to serve Prometheus metrics at (see :mod:`refmount.metrics`); None: none.
    - ``lineage``: record which jobs open files of which versions (see :mod:`refmount.fs.lineage`).
    - ``dir_readahead``: files fetched ahead per small file looked up in a directory being read file by file
      (see :mod:`refmount.fs.sweep`); 0: none.
    """

    mountpoint: Path
    registry_url: str
    cache_dir: Path
    cache_size_bytes: int
    alias_ttl_s: float = 5.0
    stop_timeout_s: float = 30.0
    allow_other: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    fuse_options: tuple[str, ...] = ()
    foreground: bool = False
    log_file: Path | None = None
    metrics: str | None = None
    lineage: bool = True
    dir_readahead: int = AHEAD_PER_LOOKUP

    @property
    def default_log_file(self) -> Path:
        escaped = str(self.mountpoint.resolve()).strip("/").replace("/", "-") or "root"
        return self.cache_dir / f"mount-{escaped}.log"


def run(options: MountOptions) -> int:
    """Mount and serve until unmounted or signalled; returns the exit status.

    Unusable mountpoints, registries and cache directories raise a RefmountError (one line) before
    anything is mounted. In daemon mode this returns 0 as soon as the mount answers (the daemon runs
    on), or the daemon's exit status after printing its error; in the foreground it returns when
    unmounted (``refmount umount``, ``fusermount3 -u``, SIGTERM/SIGINT); SIGHUP reloads (see :func:`_reload`).
    """
    # The real path: the one /proc/self/mountinfo will show, whatever symlink led here.
    options = dataclasses.replace(options, mountpoint=options.mountpoint.resolve())
    if any(option.startswith("subtype=") for option in options.fuse_options):
        raise InvalidInput(f"-o subtype cannot be set: refmount umount knows refmount's mounts by {FSTYPE}")
    prepare_mountpoint(options.mountpoint)
    open_registry(options.registry_url).close()  # fail here, on the user's terminal, if it is unusable
    BlockCache(options.cache_dir, options.cache_size_bytes).close()
    stores.store_for("s3://")  # import botocore (0.2 s) now, so the daemon has only the client to build
    if options.foreground:
        _log_to(_log_handler(options.log_file))
        return _serve_until_done(options, on_ready=None)
    return _daemonize(options)


def warn_of_unusable_stores(registry_url: str, *also_to: logging.Handler) -> None:
    """One warning per store the registry references that reads would fail on (see :mod:`refmount.storecheck`),
    to the log's handlers and ``also_to``. It reads every entry's ref (a second or two for a million entries),
    so it runs once the mount is up, never before it."""
    try:
        with closing(open_registry(registry_url)) as registry:
            problems = unusable_stores(registry.schemes())
    except Exception as exc:  # the mount is still worth having: say so and carry on
        problems = [f"could not check the stores: {exc}"]
    for problem in problems:
        record = log.makeRecord(log.name, logging.WARNING, __file__, 0, "%s", (problem,), None)
        log.handle(record)
        for handler in also_to:
            handler.handle(record)


def prepare_mountpoint(mountpoint: Path) -> None:
    """Refuse unusable mountpoints with one line; recover a stale refmount mount left by a crashed daemon."""
    fstype = mount_type(mountpoint)
    if fstype == FSTYPE and _is_stale(mountpoint):
        log.warning("recovering stale mount at %s (its daemon is gone)", mountpoint)
        _fusermount(mountpoint, lazy=True)
    elif fstype == FSTYPE:
        raise InvalidInput(f"{mountpoint} is already a mount point (refmount umount {mountpoint} first)")
    elif fstype is not None:
        raise InvalidInput(f"{mountpoint} is already a mount point (a {fstype} mount)")
    if not mountpoint.exists():
        raise InvalidInput(f"mountpoint {mountpoint} does not exist (mkdir -p {mountpoint})")
    if not mountpoint.is_dir():
        raise InvalidInput(f"mountpoint {mountpoint} is not a directory")
    if any(mountpoint.iterdir()):
        raise InvalidInput(f"mountpoint {mountpoint} is not empty")


def mount_type(path: Path) -> str | None:
    """The type of the file system mounted at ``path`` (the topmost, if several), None if none is.

    Read from /proc/self/mountinfo rather than stat'ed: a stale FUSE mount fails every stat (ENOTCONN),
    so os.path.ismount calls it no mount. ``path`` must be resolved, as mountinfo's paths are.
    """
    fstype = None
    for fields in _mountinfo():
        if _unescape(fields[4]) == str(path):
            separator = fields.index("-")
            fstype, source = fields[separator + 1], fields[separator + 2]
            if fstype == "fuse" and source == "refmount":  # mounted by an earlier release, without a subtype
                fstype = FSTYPE
    return fstype


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)


def _is_stale(mountpoint: Path) -> bool:
    """A FUSE mount whose daemon died answers ENOTCONN (stat may still hit the kernel's cache: list it)."""
    try:
        os.listdir(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def unmount(mountpoint: Path, *, lazy: bool = False) -> None:
    """``fusermount3 -u`` (``-z`` with ``lazy``: detach now, finish when the last open file closes).

    Only refmount's own mounts, stale ones (daemon gone) included: as root fusermount3 would unmount
    anything. Raises InvalidInput if nothing or something else is mounted there and RefmountError with
    the reason (and a hint to use ``lazy`` when busy) if the unmount fails.
    """
    mountpoint = mountpoint.resolve()
    fstype = mount_type(mountpoint)
    if fstype is None:
        raise InvalidInput(f"{mountpoint} is not mounted")
    if fstype != FSTYPE:
        raise InvalidInput(f"{mountpoint} is a {fstype} mount, not a refmount mount")
    _fusermount(mountpoint, lazy=lazy)


def _fusermount(mountpoint: Path, *, lazy: bool) -> None:
    argv = ["fusermount3", "-u", *(["-z"] if lazy else []), str(mountpoint)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        reason = result.stderr.strip().rpartition(": ")[2] or f"exit {result.returncode}"
        hint = " (files are open on it; use --lazy to detach now)" if "busy" in reason.lower() else ""
        raise RefmountError(f"cannot unmount {mountpoint}: {reason}{hint}")


def _log_handler(log_file: Path | None) -> logging.Handler:
    """A handler for ``log_file`` (stderr if None); one line if the file cannot be written."""
    try:
        handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    except OSError as exc:
        raise InvalidInput(f"cannot write the log file {log_file}: {exc.strerror or exc}") from exc
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


# Libraries whose INFO lines ("Found credentials in environment variables.", one per HTTP request) are noise
# in a mount's log; their warnings (urllib3's retries) and errors stay. -vv (debug) shows everything.
_CHATTY_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "azure", "google", "gcsfs", "fsspec")


def _log_to(handler: logging.Handler) -> None:
    root = logging.getLogger()
    replaced, root.handlers[:] = root.handlers[:], [handler]
    for old in replaced:
        old.close()  # a file handler lets go of its file (a stream handler leaves its stream open)
    root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
    if root.level > logging.DEBUG:
        for name in _CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)


def mount_device(mountpoint: Path) -> str | None:
    """The ``major:minor`` device number of the file system mounted at ``mountpoint`` (resolved; None if none
    is), from mountinfo (a stat of a FUSE mountpoint is a request to its daemon)."""
    device = None
    for fields in _mountinfo():
        if _unescape(fields[4]) == str(mountpoint):
            device = fields[2]
    return device


def _mountinfo() -> Iterator[list[str]]:
    # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
    for line in Path("/proc/self/mountinfo").read_text(errors="surrogateescape").splitlines():
        yield line.split(" ")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError


def _daemonize(options: MountOptions) -> int:
    """Fork; the child mounts and serves, the parent waits for its first word (ok or an error line)."""
    log_file = options.log_file or options.default_log_file
    handler = _log_handler(log_file)  # opened before forking, so that the user sees why it cannot be
    read_end, write_end = os.pipe()
    child = os.fork()
    if child > 0:
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            word = pipe.read().strip()
        if word == "ok":  # mounted, its header logged: the stores' check follows it, on the terminal and in the log
            warn_of_unusable_stores(options.registry_url, handler)
        handler.close()  # the daemon has its own copy
        if word == "ok":
            return 0
        print(f"refmount: error: {word or f'the daemon exited before mounting (log: {log_file})'}", file=sys.stderr)
        code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])  # the daemon exits once it has written
        return code if code > 0 else 1  # negative: killed by a signal
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _log_to(handler)
    reply = os.fdopen(write_end, "w")

    def tell_parent(word: str) -> None:
        if not reply.closed:
            with suppress(OSError):  # the parent is gone (interrupted): nobody to tell
                reply.write(" ".join(word.split()) + "\n")  # one line, whatever the exception said
                reply.close()

    try:
        options = dataclasses.replace(options, log_file=log_file)
        code = _serve_until_done(options, on_ready=lambda: tell_parent("ok"))
    except RefmountError as exc:
        log.error("%s", exc)
        tell_parent(str(exc))
        code = exc.exit_code
    except BaseException as exc:
        log.exception("daemon failed")
        tell_parent(f"{type(exc).__name__}: {exc} (log: {log_file})")
        code = 1
    os._exit(code)  # reply is closed by now: os._exit would not flush it


def _serve_until_done(options: MountOptions, on_ready: Callable[[], None] | None) -> int:
    threading.Thread(target=_prepare_s3, name="prepare-s3", daemon=True).start()
    # HTTP bodies without an ETag, kept once verified, go beside the cache, on the disk chosen for bulk data.
    scratch = options.cache_dir / "tmp"
    scratch.mkdir(mode=0o700, exist_ok=True)
    http_store = stores.store_for("http://")
    assert isinstance(http_store, HTTPStore)
    http_store.keep_bodies_in(str(scratch))
    registry = open_registry(options.registry_url, index_dir=options.cache_dir / "manifests")
    cache = BlockCache(options.cache_dir, options.cache_size_bytes)
    given = [option for option in options.fuse_options if not not_for_fuse(option)]  # -o _netdev typed by hand too
    fuse_options = {"fsname=refmount", f"subtype={SUBTYPE}", "ro", "default_permissions", *given}
    if options.allow_other:
        fuse_options.add("allow_other")
    if "allow_other" in fuse_options:  # also when given with -o
        file_store = stores.store_for("file://")
        assert isinstance(file_store, FileStore)
        file_store.serve_other_users()
    exporter = None
    try:
        exporter = _serve_metrics(options, cache)  # before mounting: an address that cannot be bound stops here
        trio.run(_serve, options, registry, cache, fuse_options, on_ready, exporter)
    except BaseExceptionGroup as group:  # a failure inside a nursery: shown as itself (a one-line error, say)
        raise sole_exception(group) or group from None
    finally:
        if exporter is not None:
            exporter.close()
        cache.close()
        registry.close()
    return 0


def _serve_metrics(options: MountOptions, cache: BlockCache) -> MetricsServer | None:
    if options.metrics is None:
        return None
    from ..metrics import MetricsServer, MountCollector  # prometheus_client: only for a mount that serves metrics

    return MetricsServer(options.metrics, MountCollector(cache, str(options.mountpoint)))


async def _serve(options: MountOptions, registry: Registry, cache: BlockCache, fuse_options: set[str],
                 on_ready: Callable[[], None] | None, exporter: MetricsServer | None) -> None:  # fmt: skip
    features = Features.detect()
    # Signals are caught from before the mount exists: one that comes as it comes up still detaches it.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        await _serve_mounted(options, registry, cache, fuse_options, on_ready, features, signals, exporter)


async def _serve_mounted(options: MountOptions, registry: Registry, cache: BlockCache, fuse_options: set[str],
                         on_ready: Callable[[], None] | None, features: Features,
                         signals: AsyncIterator[int], exporter: MetricsServer | None) -> None:  # fmt: skip
    async with open_reader(cache) as reader:
        namespace = Namespace(registry, options.alias_ttl_s)
        lineage = LineageRecorder(registry) if options.lineage else None
        sweeper = Sweeper(namespace, reader, ahead=options.dir_readahead) if options.dir_readahead else None
        fs = Filesystem(namespace, reader, lineage, sweeper)
        if exporter is not None:
            exporter.collector.watch(fs)
        _fuse_init(FuseAdapter(fs, features, uid=options.uid, gid=options.gid), options.mountpoint, fuse_options)
        log.info("%s", _header(options, features, exporter))
        if options.foreground:  # else the parent checks the stores once mounted (see _daemonize)
            threading.Thread(target=warn_of_unusable_stores, args=(options.registry_url,), daemon=True).start()
        for cost in features.lost():
            log.warning("pyfuse3 lacks refmount's patch (run scripts/setup.sh): %s", cost)
        stopping = _Stopping(options.mountpoint, options.stop_timeout_s)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve_requests, nursery.cancel_scope)
                if lineage is not None:
                    nursery.start_soon(lineage.run)
                if sweeper is not None:
                    nursery.start_soon(sweeper.run)
                reload = functools.partial(_reload, namespace, options.log_file)
                nursery.start_soon(_on_signals, signals, stopping, nursery, reload)
                await nursery.start(_until_answering, options.mountpoint)
                sdnotify.notify("READY=1")
                if on_ready is not None:
                    on_ready()
        finally:
            # A detached mount is no longer ours to unmount: a new daemon may already be mounted there.
            pyfuse3.close(unmount=not stopping.detached)
            log.info("unmounted %s", options.mountpoint)
            if lineage is not None:
                await _last_lineage(lineage)


async def _last_lineage(lineage: LineageRecorder) -> None:
    """Write the counts of the last seconds, unless the registry cannot take them soon (then say what is lost)."""
    with trio.CancelScope(shield=True), trio.move_on_after(LAST_FLUSH_S):
        await lineage.flush()
    if lineage.pending:
        log.warning("lineage: %d records of the last reads could not be written to the registry", lineage.pending)


async def _serve_requests(scope: trio.CancelScope) -> None:
    await pyfuse3.main()  # returns when the file system is unmounted (after a lazy unmount: its last file closed)
    scope.cancel()


async def _until_answering(mountpoint: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Ready once a request through the kernel came back; then ask for 1 MiB kernel reads."""
    await trio.to_thread.run_sync(os.stat, mountpoint)  # in a thread: the kernel asks this very loop
    await trio.to_thread.run_sync(_raise_read_ahead, mountpoint)
    task_status.started()


def _raise_read_ahead(mountpoint: Path) -> None:
    """1 MiB kernel read requests instead of 128 KiB (root only; best effort). The device number comes from
    mountinfo: a stat of the mountpoint would be a request to this daemon."""
    device = mount_device(mountpoint)
    if device is None:
        return  # already detached (a signal came as the mount came up): nothing left to tune
    path = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
    try:
        path.write_text("1024")
    except OSError as exc:
        log.info("kernel reads stay at 128 KiB: cannot write %s (%s)", path, exc.strerror or exc)


async def _on_signals(signals: AsyncIterator[int], stopping: _Stopping, nursery: trio.Nursery,
                      reload: Callable[[], Awaitable[None]]) -> None:  # fmt: skip
    async for signum in signals:
        if signum == signal.SIGHUP:
            await reload()
        elif await stopping.on_signal(signal.Signals(signum).name, nursery):
            return


async def _reload(namespace: Namespace, log_file: Path | None) -> None:
    """SIGHUP (``systemctl reload``): registry changes show at once, and a rotated log file is let go.

    The daemon's cached registry answers (projects, artifacts, versions, aliases) are dropped, and so are
    the kernel's entries of the aliases handed out (which may have moved); the log file is reopened.
    """
    aliases = namespace.forget_answers()
    for parent, name in aliases:
        # In a worker thread: the kernel may wait for a request in that directory, which this loop answers.
        await trio.to_thread.run_sync(_invalidate_entry, parent, name)
    reopened = "logging to stderr, no log file to reopen"
    if log_file:
        try:
            _log_to(_log_handler(log_file))
            reopened = f"reopened the log file {log_file}"
        except InvalidInput as exc:  # the old file stays in use
            reopened = str(exc)
    log.info("SIGHUP: reloaded: dropped the cached registry answers and the kernel's entries of %d aliases; %s",
             len(aliases), reopened)  # fmt: skip


def _invalidate_entry(parent: int, name: str) -> None:
    with suppress(OSError):  # ENOENT: the kernel had already let the entry go
        pyfuse3.invalidate_entry(parent, os.fsencode(name))


class _Stopping:
    """SIGTERM or SIGINT: stop like ``umount --lazy``, within a deadline.

    The mount is detached at once (nothing new can be opened; the mountpoint is free for a new daemon, so
    a restart under a running job works), and files already open keep being served until the last one
    closes, when the kernel ends the connection. At ``deadline`` seconds, or at a second signal, whatever
    is still in flight (reads stalled on a store included) is abandoned and the daemon exits; readers of
    files still open then get an error.
    """

    def __init__(self, mountpoint: Path, deadline: float):
        self.mountpoint = mountpoint
        self.deadline = deadline
        self.detached = False

    async def on_signal(self, name: str, nursery: trio.Nursery) -> bool:
        """Detach (first signal) or stop now (second); True when nothing more is to be done."""
        if self.detached:
            log.warning("%s again: stopping now", name)
            nursery.cancel_scope.cancel()
            return True
        log.info("%s: detaching %s; open files are served until they close, for at most %g s", name,
                 self.mountpoint, self.deadline)  # fmt: skip
        sdnotify.notify("STOPPING=1")
        await self._detach()
        nursery.start_soon(self._cancel_at_deadline, nursery.cancel_scope)
        return False

    async def _detach(self) -> None:
        result = await trio.run_process(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_stdout=True,
                                        capture_stderr=True, check=False)  # fmt: skip
        self.detached = result.returncode == 0 or mount_type(self.mountpoint) != FSTYPE
        if not self.detached:
            log.error("could not detach %s (%s): stopping now", self.mountpoint, result.stderr.decode().strip())
            pyfuse3.terminate()

    async def _cancel_at_deadline(self, scope: trio.CancelScope) -> None:
        await trio.sleep(self.deadline)
        if not scope.cancel_called:
            log.warning("stop timeout (%g s) reached with files still open: abandoning what is in flight",
                        self.deadline)  # fmt: skip
            scope.cancel()


def _fuse_init(ops: FuseAdapter, mountpoint: Path, fuse_options: set[str]) -> None:
    """``pyfuse3.init``, whose failure becomes one line with libfuse's reason.

    pyfuse3 only raises "fuse_session_new() failed" or the like; libfuse and fusermount3 print why
    (an unknown option, a refused mount) on stderr, which is /dev/null in the daemon and an extra line
    in the foreground. Their lines go to the log (or the error); anything else printed meanwhile is
    passed on to stderr.
    """
    printed: list[str] = []
    try:
        with _stderr_captured(printed):
            pyfuse3.init(ops, str(mountpoint), fuse_options)
        failure = None
    except RuntimeError as exc:
        failure = exc
    fuse_lines = [line for line in printed if line.startswith("fuse")]  # "fuse: ...", "fusermount3: ..."
    for line in printed:
        if line not in fuse_lines:
            print(line, file=sys.stderr)
    if failure is not None:
        raise RefmountError(f"cannot mount {mountpoint}: {'; '.join(fuse_lines) or failure}") from failure
    for line in fuse_lines:
        log.warning("%s", line)


@contextmanager
def _stderr_captured(lines: list[str]) -> Iterator[None]:
    """Point file descriptor 2 (C code and child processes write there) at a memory file meanwhile;
    ``lines`` gets the lines written to it when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with os.fdopen(os.memfd_create("refmount-stderr"), "w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines += capture.read().decode(errors="replace").splitlines()


def _header(options: MountOptions, features: Features, exporter: MetricsServer | None = None) -> str:
    """The log's first line: what runs, and with which settings (no secret: the registry password is ***)."""
    extra = ",".join(options.fuse_options) or "none"
    return (
        f"refmount {__version__} mounted {options.mountpoint}: registry {redact(options.registry_url)}, "
        f"cache {options.cache_dir} ({_size(options.cache_size_bytes)}), alias_ttl {options.alias_ttl_s:g}s, "
        f"stop_timeout {options.stop_timeout_s:g}s, allow_other {'yes' if options.allow_other else 'no'}, "
        f"owner {options.uid}:{options.gid}, metrics {exporter.url if exporter is not None else 'off'}, "
        f"lineage {'on (every open reaches the daemon)' if options.lineage else 'off'}, "
        f"dir_readahead {options.dir_readahead or 'off'}, "
        f"fuse options {extra}, kernel features: {features.summary()}"
    )


def _prepare_s3() -> None:
    """Build the S3 client (credentials, service model: 0.1-0.2 s once botocore is imported) while the
    mount comes up, not in the first read of an S3 object."""
    try:
        stores.prepare("s3")
    except Exception as exc:  # named by warn_of_unusable_stores if an artifact is on S3
        log.debug("cannot build the S3 client yet: %s", exc)
