"""Which job a process belongs to: the identity lineage records for whoever reads or logs a version.

First of, as the process started (``/proc/<pid>/environ`` is the environment it was started with):

    run      REFMOUNT_RUN, else WANDB_RUN_ID                 (a run id the user or W&B chose)
    slurm    SLURM_JOB_ID, with SLURM_STEP_ID as ``.step``   (as sacct names steps: 1234.0)
    k8s      the pod uid in /proc/<pid>/cgroup               (kubepods...pod<uid>...)
    process  the leader of the process group, by pid and start time, with its command line

A child inherits its parent's environment, cgroup and (unless it makes its own) process group, so
DataLoader workers and shell pipelines count as the job that started them. Whatever ``/proc`` does not
let the caller read (another user's environment, for a daemon that is not root) is left out: the identity
falls to the next rule and ``detail`` says what could not be read.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_VARIABLES = ("REFMOUNT_RUN", "WANDB_RUN_ID")
KINDS = ("run", "slurm", "k8s", "process")
# cgroup v1 (/kubepods/burstable/pod<uid>/...) and v2 under systemd (kubepods-burstable-pod<uid_with_underscores>.slice)
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_COMMAND_CHARS = 200


@dataclass(frozen=True, slots=True)
class Job:
    """One job on one host. Equal jobs (kind, id, host) are one consumer or producer in lineage."""

    kind: str  # one of KINDS
    id: str
    host: str
    uid: int | None = field(default=None, compare=False)
    detail: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.id}"


def host_name() -> str:
    return socket.gethostname()


def run_job(run: str, *, source: str = "--run") -> Job:
    """The producer named by ``log --run`` (or the API's ``run=``)."""
    return Job("run", run, host_name(), os.getuid(), {"from": source, **_user(os.getuid())})


def _user(uid: int | None) -> dict[str, str]:
    """``{"user": name}`` where this host knows the uid's name (names are per host: lineage keeps both)."""
    try:
        return {} if uid is None else {"user": pwd.getpwuid(uid).pw_name}
    except KeyError:
        return {}


def current_run() -> Job | None:
    """This process's run, from REFMOUNT_RUN or WANDB_RUN_ID as set now (the API and CLI default); None if neither."""
    for variable in RUN_VARIABLES:
        if os.environ.get(variable):
            return run_job(os.environ[variable], source=variable)
    return None


def identify(pid: int, uid: int | None = None, *, proc: Path = Path("/proc"), host: str | None = None) -> Job:
    """The job of process ``pid`` (``uid``: its user, as the kernel told it), by the rules above."""
    host = host or host_name()
    here = proc / str(pid)
    detail: dict[str, Any] = {"pid": pid, **_user(uid)}
    environment = _environment(here, detail)
    for variable in RUN_VARIABLES:
        if environment.get(variable):
            return Job("run", environment[variable], host, uid, {**detail, "from": variable})
    if environment.get("SLURM_JOB_ID"):
        step = environment.get("SLURM_STEP_ID")
        job_id = environment["SLURM_JOB_ID"] + (f".{step}" if step else "")
        return Job("slurm", job_id, host, uid, {**detail, "from": "SLURM_JOB_ID"})
    pod = _pod(here)
    if pod is not None:
        if environment.get("HOSTNAME"):
            detail["pod"] = environment["HOSTNAME"]  # a pod's host name is its name
        return Job("k8s", pod, host, uid, detail)
    return _process_job(proc, pid, host, uid, detail)


def _environment(here: Path, detail: dict[str, Any]) -> dict[str, str]:
    try:
        raw = (here / "environ").read_bytes()
    except OSError as exc:
        detail["environment"] = f"unreadable ({exc.strerror or exc})"
        return {}
    variables = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            variables[key.decode(errors="replace")] = value.decode(errors="replace")
    return variables


def _pod(here: Path) -> str | None:
    try:
        found = _POD.search((here / "cgroup").read_text())
    except OSError:
        return None
    return found[1].replace("_", "-") if found else None


def _process_job(proc: Path, pid: int, host: str, uid: int | None, detail: dict[str, Any]) -> Job:
    """The process group's leader (pid and start time: a pid alone is reused), else the process itself."""
    stat = _stat(proc / str(pid))
    if stat is None:
        return Job("process", str(pid), host, uid, {**detail, "note": "exited before it could be identified"})
    leader = int(stat[2])  # pgrp
    leader_stat = _stat(proc / str(leader)) if leader != pid else stat
    if leader_stat is None:  # the leader is gone: the process stands for itself
        leader, leader_stat = pid, stat
    started = _boot_time(proc) + int(leader_stat[19]) / os.sysconf("SC_CLK_TCK")
    command = _command(proc / str(leader))
    info = {**detail, "leader": leader, "started": round(started, 2)}
    if command:
        info["command"] = command
    return Job("process", f"{leader}@{leader_stat[19]}", host, uid, info)


def _stat(here: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first): pgrp is [2], starttime [19]."""
    try:
        text = (here / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _command(here: Path) -> str:
    try:
        raw = (here / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")[:_COMMAND_CHARS]


_boot: dict[Path, float] = {}


def _boot_time(proc: Path) -> float:
    if proc not in _boot:
        try:
            line = next(x for x in (proc / "stat").read_text().splitlines() if x.startswith("btime "))
            _boot[proc] = float(line.split()[1])
        except (OSError, StopIteration):
            return time.time() - time.monotonic()  # close enough where /proc/stat is not readable
    return _boot[proc]
