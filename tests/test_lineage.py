"""Lineage: jobs of every kind of identity reading through a real mount, producers from `log --run` and the
API, a registry outage during reads, two mounts on one PostgreSQL registry, `refmount lineage` (table, JSON,
and DOT that Graphviz renders), collections, --no-lineage, and the upgrade of a registry the v4 code made."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

import refmount
from refmount.errors import InvalidInput
from refmount.jobs import identify
from refmount.registry import LineageRecord, open_registry
from refmount.stores.file import file_uri
from tests import test_registry
from tests.conftest import Cli
from tests.mounts import MountedFS, as_user, user_env, wait_for
from tests.server_postgres import Postgres
from tests.test_cli import snapshot
from tests.test_retention import upgraded

any_registry_url = test_registry.any_registry_url

JOB_VARIABLES = ("REFMOUNT_RUN", "WANDB_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID")
FILES = {f"train/{i}.bin": bytes([65 + i]) * (1000 + i) for i in range(4)}
V0 = "vision/mnist:v0"


def write_dataset(root: Path) -> Path:
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def dataset(tmp_path: Path, cli: Cli) -> Path:
    root = write_dataset(tmp_path / "data")
    cli("log", "vision/mnist", file_uri(root), "--run", "prep-1")
    return root


def reader_env(**variables: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in JOB_VARIABLES}, **variables}


def read(paths: list[Path], env: dict[str, str], *, prelude: str = "") -> None:
    """Read ``paths`` in a new process group: the first ones in a child, the last in the child's own child
    (which inherits the job). ``prelude``: Python the child runs first."""
    *own, last = paths
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        {prelude}
        for p in {[str(p) for p in own]!r}:
            assert open(p, "rb").read()
        subprocess.run([sys.executable, "-c", "assert open({str(last)!r}, 'rb').read()"], check=True)
    """)
    subprocess.run([sys.executable, "-c", script], env=env, check=True, start_new_session=True, timeout=60)


def lineage(registry_url: str, version: str = V0, role: str = "used") -> dict[str, LineageRecord]:
    with closing(open_registry(registry_url)) as reg:
        return {r.job.name: r for r in reg.lineage(versions=[version]) if r.role == role}


@contextmanager
def pod_cgroup(pod_uid: str) -> Iterator[Path]:
    """A cgroup named as the kubelet names a pod's: cgroup v1 (pids hierarchy), else v2 under systemd."""
    candidates = [(Path("/sys/fs/cgroup/pids"), f"kubepods/besteffort/pod{pod_uid}")] + [
        (root, f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_uid.replace('-', '_')}.slice")
        for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
    ]
    root, name = next((r, n) for r, n in candidates if (r / "cgroup.procs").exists())
    path = root / name
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        relative = path.relative_to(root)
        for directory in [relative, *relative.parents][:-1]:  # the pod's, then its parents up to the root's
            (root / directory).rmdir()


# -- identities, from /proc ------------------------------------------------------------------------------


def fake_process(proc: Path, pid: int, *, environ: dict[str, str] | None = None, cgroup: str = "0::/\n",
                 pgrp: int | None = None, command: str = "python train.py") -> None:  # fmt: skip
    here = proc / str(pid)
    here.mkdir(parents=True)
    if environ is not None:
        (here / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items()))
    (here / "cgroup").write_text(cgroup)
    fields = ["S", "1", str(pgrp or pid), "1"] + ["0"] * 15 + ["4242"]  # starttime is field 22
    (here / "stat").write_text(f"{pid} (py thon) {' '.join(fields)}\n")
    (here / "cmdline").write_bytes(command.replace(" ", "\0").encode() + b"\0")


def test_identity_of_a_process_from_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc).mkdir()
    (proc / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    pod = "1f2e3d4c-0000-4a4a-8b8b-123456789abc"
    fake_process(proc, 10, environ={"REFMOUNT_RUN": "r1", "WANDB_RUN_ID": "w1", "SLURM_JOB_ID": "7"})
    fake_process(proc, 11, environ={"WANDB_RUN_ID": "w1", "SLURM_JOB_ID": "7"})
    fake_process(proc, 12, environ={"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "3"}, cgroup=f"1:pids:/kubepods/pod{pod}\n")
    fake_process(proc, 13, environ={"HOSTNAME": "trainer-0"}, cgroup=f"1:pids:/kubepods/burstable/pod{pod}/c0ffee\n")
    fake_process(proc, 14, environ={}, cgroup=f"0::/kubepods.slice/kubepods-pod{pod.replace('-', '_')}.slice/x\n")
    fake_process(proc, 20, environ={}, command="bash run.sh")  # a process group's leader
    fake_process(proc, 21, environ={}, pgrp=20)
    fake_process(proc, 22, pgrp=99)  # environment unreadable (no file), leader gone
    jobs = {pid: identify(pid, 1000, proc=proc, host="node1") for pid in (10, 11, 12, 13, 14, 21, 22, 404)}
    assert {pid: (job.kind, job.id) for pid, job in jobs.items()} == {
        10: ("run", "r1"), 11: ("run", "w1"), 12: ("slurm", "7.3"), 13: ("k8s", pod), 14: ("k8s", pod),
        21: ("process", "20@4242"), 22: ("process", "22@4242"), 404: ("process", "404"),
    }  # fmt: skip
    assert jobs[11].detail["from"] == "WANDB_RUN_ID" and jobs[13].detail["pod"] == "trainer-0"
    assert jobs[21].detail["command"] == "bash run.sh" and jobs[21].detail["leader"] == 20
    assert jobs[21].detail["started"] == pytest.approx(1700000000 + 4242 / os.sysconf("SC_CLK_TCK"), abs=0.01)
    assert jobs[22].detail["environment"].startswith("unreadable") and jobs[22].detail["leader"] == 22
    assert "exited" in jobs[404].detail["note"]
    assert {(job.host, job.uid) for job in jobs.values()} == {("node1", 1000)}
    assert identify(10, 0, proc=proc).detail["user"] == "root" and "user" not in identify(10, 4242424, proc=proc).detail


# -- through a real mount ----------------------------------------------------------------------------


def test_jobs_of_every_kind_reading_through_a_mount(dataset: Path, cli: Cli, registry_url: str,
                                                    mount_factory: Any) -> None:  # fmt: skip
    m = mount_factory()
    v0 = m.path / "vision/mnist/v0"
    paths = [v0 / rel for rel in FILES]
    before = time.time()
    read(paths[:2], reader_env(REFMOUNT_RUN="train-7"))  # the first reader: the daemon serves every byte
    read(paths[:3], reader_env(WANDB_RUN_ID="wb42"))
    read(paths[1:3], reader_env(SLURM_JOB_ID="1234", SLURM_STEP_ID="0"))
    pod = str(uuid.uuid4())
    with pod_cgroup(pod) as cgroup:
        move = f"open({str(cgroup / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))"
        read(paths[2:], reader_env(HOSTNAME="trainer-abc"), prelude=move)
    read(paths, reader_env())
    m.stop()  # the daemon writes what it counted as it exits
    jobs = lineage(registry_url)
    process = [name for name in jobs if name.startswith("process:")]
    assert sorted(jobs) == sorted(["run:train-7", "run:wb42", "slurm:1234.0", f"k8s:{pod}", *process])
    assert len(process) == 1, process
    assert {name: r.files for name, r in jobs.items()} == {"run:train-7": 2, "run:wb42": 3, "slurm:1234.0": 2,
                                                           f"k8s:{pod}": 2, process[0]: 4}  # fmt: skip
    assert jobs["run:train-7"].bytes == len(FILES["train/0.bin"]) + len(FILES["train/1.bin"])
    assert jobs["run:wb42"].bytes <= len(FILES["train/2.bin"])  # the others came from the page cache
    assert jobs["run:wb42"].job.detail["from"] == "WANDB_RUN_ID"
    assert jobs[f"k8s:{pod}"].job.detail["pod"] == "trainer-abc"
    assert "-c" in jobs[process[0]].job.detail["command"]
    for record in jobs.values():
        assert (record.job.host, record.job.uid) == (socket.gethostname(), os.getuid())
        assert before <= record.first_seen <= record.last_seen <= time.time()
    table = cli("lineage", "vision/mnist").out  # piped: tab-separated
    rows = [line.split("\t") for line in table.splitlines()]
    assert rows[0] == ["version", "role", "job", "host", "user", "first_seen", "last_seen", "files", "bytes"]
    assert {row[4] for row in rows[1:]} == {"root"}  # the uid's name on this host (the tests run as root)
    assert rows[1][:3] == [V0, "produced", "run:prep-1"]
    assert {(row[2], row[7]) for row in rows[2:]} == {(name, str(r.files)) for name, r in jobs.items()}


def test_no_lineage_keeps_opens_out_of_the_daemon(dataset: Path, registry_url: str, mount_factory: Any) -> None:
    m = mount_factory(extra_args=("--no-lineage",))
    read([m.path / "vision/mnist/v0" / rel for rel in FILES], reader_env(REFMOUNT_RUN="quiet"))
    assert m.stats()["requests"].get("open", 0) == 0 and "lineage" not in m.stats()
    m.stop()
    assert lineage(registry_url) == {} and "lineage off" in m.log()
    with_lineage = mount_factory()
    read([with_lineage.path / "vision/mnist/v0/train/0.bin"] * 2, reader_env(REFMOUNT_RUN="loud"))
    assert with_lineage.stats()["requests"]["open"] == 2 and "lineage on" in with_lineage.log()


NOBODY = 65534


def traverse_for_all(path: Path) -> list[tuple[Path, int]]:
    """Let every user pass through ``path`` and the directories above it (a checkout in a ``mktemp -d``
    directory is root's only); returns the modes changed, to put back."""
    changed = []
    for directory in [path, *path.parents]:
        mode = stat.S_IMODE(directory.stat().st_mode)
        if not mode & stat.S_IXOTH:
            os.chmod(directory, mode | stat.S_IXOTH)
            changed.append((directory, mode))
    return changed


def test_a_daemon_that_is_not_root_mounts_through_fusermount3_and_counts_opens(cli: Cli) -> None:
    """An unprivileged daemon: fusermount3 makes the mount, only its owner may enter it, and lineage counts the
    opens of a short-lived reader (each open waits until the daemon has identified its process)."""
    shared = Path(tempfile.mkdtemp(prefix="refmount-nobody-", dir="/var/tmp"))  # pytest's tmp_path is root's only
    fuse_mode = os.stat("/dev/fuse").st_mode
    opened_up: list[tuple[Path, int]] = []
    try:
        os.chmod("/dev/fuse", 0o666)  # as Debian's udev rule makes it (this machine has 0600): fusermount3 needs it
        opened_up += traverse_for_all(Path(__file__).resolve().parents[1])  # the daemon runs this checkout's code
        data = write_dataset(shared / "data")
        registry = f"sqlite:///{shared / 'registry.db'}"
        cli("log", "vision/mnist", file_uri(data), "--registry", registry)
        (shared / "mnt").mkdir()
        for path in [shared, *shared.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        m = MountedFS(shared / "mnt", registry, shared / "cache", shared / "mount.log", user=NOBODY).start()
        try:
            v0 = m.path / "vision/mnist/v0"
            with pytest.raises(PermissionError):  # root too: the mount was made without allow_other
                (v0 / "train/0.bin").read_bytes()
            env = {**user_env(NOBODY), **reader_env(REFMOUNT_RUN="unprivileged")}
            subprocess.run(as_user(["cat", str(v0 / "train/0.bin"), str(v0 / "train/1.bin")], NOBODY), env=env,
                           check=True, capture_output=True, timeout=60)  # fmt: skip
            assert m.stats()["requests"]["open"] == 2
        finally:
            m.stop()
        record = lineage(registry)["run:unprivileged"]
        served = len(FILES["train/0.bin"]) + len(FILES["train/1.bin"])
        assert (record.files, record.bytes, record.job.uid) == (2, served, NOBODY)
        assert "lineage on (every open reaches the daemon)" in m.log()
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(shared / "mnt")], capture_output=True)
        shutil.rmtree(shared, ignore_errors=True)
        os.chmod("/dev/fuse", stat.S_IMODE(fuse_mode))
        for path, mode in opened_up:
            os.chmod(path, mode)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_lineage_survives_a_registry_outage(cli: Cli, postgres: Postgres, postgres_url: str, tmp_path: Path,
                                            mount_factory: Any) -> None:  # fmt: skip
    cli("log", "vision/mnist", file_uri(write_dataset(tmp_path / "data")), "--registry", postgres_url)
    port = _free_port()
    m = mount_factory(registry_url=postgres_url, extra_args=("--metrics", f"127.0.0.1:{port}"))
    v0 = m.path / "vision/mnist/v0"
    read([v0 / "train/0.bin"] * 2, reader_env(REFMOUNT_RUN="before"))  # the version's index is local from now on
    wait_for(lambda: m.stats()["lineage"]["written"] >= 1, "the first lineage write")
    postgres.stop()
    try:
        read([v0 / rel for rel in FILES], reader_env(REFMOUNT_RUN="during"))  # reads go on
        wait_for(lambda: m.stats()["lineage"]["write_failures"] >= 1, "a lineage write to fail")
        assert m.stats()["lineage"]["pending"] == 1
        assert m.log().count("lineage: cannot write to the registry") == 1
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "refmount_lineage_pending_records 1.0" in metrics
        assert "refmount_lineage_write_failures_total" in metrics
    finally:
        postgres.start()
    wait_for(lambda: m.stats()["lineage"]["pending"] == 0, "the kept records to be written")
    assert "lineage: the registry takes writes again" in m.log()
    jobs = lineage(postgres_url)
    assert (jobs["run:before"].files, jobs["run:during"].files) == (2, 4)
    assert m.stats()["lineage"]["dropped"] == 0


def test_concurrent_jobs_on_two_mounts_share_one_postgres_registry(cli: Cli, postgres_url: str, tmp_path: Path,
                                                                   mount_factory: Any) -> None:  # fmt: skip
    cli("log", "vision/mnist", file_uri(write_dataset(tmp_path / "data")), "--registry", postgres_url)
    nodes = [mount_factory(registry_url=postgres_url, cache_dir=tmp_path / f"node{n}") for n in range(2)]
    readers = [threading.Thread(target=read, args=([node.path / "vision/mnist/latest" / rel for rel in FILES] * 3,
                                                   reader_env(REFMOUNT_RUN=run)))
               for node in nodes for run in ("job-a", "job-b")]  # fmt: skip
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    for node in nodes:
        node.stop()
    jobs = lineage(postgres_url)
    assert {name: r.files for name, r in jobs.items()} == {"run:job-a": 24, "run:job-b": 24}  # both nodes, added
    assert sum(r.bytes for r in jobs.values()) == 2 * sum(len(d) for d in FILES.values())  # each node fetched once


# -- producers, the command and the graph ------------------------------------------------------------


def test_lineage_command_json_dot_and_depth(dataset: Path, cli: Cli, registry_url: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # train-1 uses the dataset (the API) and produces a model (the CLI); eval-1 uses the model.
    refmount.use_artifact("vision/mnist:latest", run="train-1")
    model = write_dataset(tmp_path / "model")
    cli("log", "vision/resnet", file_uri(model), "--type", "model", "--run", "train-1")
    monkeypatch.setenv("WANDB_RUN_ID", "eval-1")
    refmount.use_artifact("vision/resnet")  # the run from the environment
    monkeypatch.delenv("WANDB_RUN_ID")
    refmount.use_artifact("vision/resnet")  # no run: nothing recorded

    direct = cli("lineage", "vision/resnet", "--json").json()
    assert direct["version"] == "vision/resnet:v0" and direct["depth"] == 1
    assert [(r["role"], r["job"], r["detail"].get("from")) for r in direct["records"]] == [
        ("produced", "run:train-1", "--run"), ("used", "run:eval-1", "WANDB_RUN_ID")]  # fmt: skip
    deep = cli("lineage", "vision/resnet:v0", "--json", "--depth", "2").json()
    assert [(r["version"], r["role"], r["job"]) for r in deep["records"]] == [
        (V0, "used", "run:train-1"),  # two hops up: what the producer used (its producer is a third)
        ("vision/resnet:v0", "produced", "run:train-1"), ("vision/resnet:v0", "used", "run:eval-1")]  # fmt: skip
    of_run = cli("lineage", "--run", "train-1", "--json").json()
    assert {(r["version"], r["role"]) for r in of_run["records"]} == {(V0, "used"), ("vision/resnet:v0", "produced")}

    dot = cli("lineage", "vision/resnet", "--dot", "--depth", "3").out
    assert '"j:run:train-1" -> "v:vision/resnet:v0" [label="produced"];' in dot
    assert '"v:vision/mnist:v0" -> "j:run:train-1"' in dot and '"j:run:prep-1"' in dot
    svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True)
    assert "<svg" in svg.stdout and not svg.stderr
    odd = cli("lineage", "--run", 'we"ird\\run', "--dot").out  # nothing recorded: still a valid graph
    subprocess.run(["dot", "-Tsvg"], input=odd, capture_output=True, text=True, check=True)
    assert "no lineage recorded for run nobody" in cli("lineage", "--run", "nobody").err


def test_lineage_and_run_refuse_bad_input_and_change_nothing(dataset: Path, cli: Cli) -> None:
    before = snapshot(cli)
    for args, message in [
        (("lineage",), "name a version or --run ID"),
        (("lineage", "vision/mnist", "--run", "x"), "name a version or --run ID"),
        (("lineage", "vision/mnist", "--dot", "--json"), "--dot and --json: choose one"),
        (("lineage", "vision/mnist:v7"), "vision/mnist has no version v7"),
        (("lineage", "vision/nothing"), "no artifact vision/nothing"),
        (("lineage", "vision/mnist", "--depth", "0"), "Invalid value for '--depth'"),
        (("log", "vision/mnist", file_uri(dataset), "--run", "two words"), "invalid run id 'two words'"),
        (("log", "vision/mnist", file_uri(dataset), "--run", ""), "invalid run id ''"),
    ]:
        result = cli(*args, ok=False)
        assert message in result.err and len(result.err.strip().splitlines()) == 1, (args, result.err)
    assert snapshot(cli) == before
    with pytest.raises(InvalidInput, match="invalid run id"):
        refmount.use_artifact(V0, run="a\tb")


def test_collections_in_lineage_and_lineage_after_gc(dataset: Path, cli: Cli, registry_url: str,
                                                     mount_factory: Any) -> None:  # fmt: skip
    cli("link", V0, "wandb-registry-datasets/mnist", "--alias", "production")
    m = mount_factory()
    read([m.path / "wandb-registry-datasets/mnist/production/train/0.bin"] * 2, reader_env(REFMOUNT_RUN="serve"))
    m.stop()
    found = cli("lineage", V0, "--json").json()
    assert found["links"] == [{"source": V0, "collection": "wandb-registry-datasets/mnist:v0"}]
    assert [(r["version"], r["role"], r["job"], r["files"]) for r in found["records"]] == [
        (V0, "produced", "run:prep-1", 0), ("wandb-registry-datasets/mnist:v0", "used", "run:serve", 2)]  # fmt: skip
    upstream = cli("lineage", "wandb-registry-datasets/mnist:production", "--json").json()
    assert upstream["version"] == "wandb-registry-datasets/mnist:v0" and upstream["links"] == found["links"]
    assert "linked: vision/mnist:v0 -> wandb-registry-datasets/mnist:v0" in cli("lineage", V0).out
    # gc removes the version, not what is known of who made and read it.
    cli("unlink", "wandb-registry-datasets/mnist:v0")
    cli("delete", V0)
    cli("gc")
    after = cli("lineage", V0, "--json").json()
    assert [(r["role"], r["job"]) for r in after["records"]] == [("produced", "run:prep-1")] and not after["links"]


def test_download_is_a_use_by_the_job_running_it(dataset: Path, cli: Cli, registry_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("REFMOUNT_RUN", "fetch-3")
    cli("download", V0, str(tmp_path / "out"), "-q", "--no-cache")
    cli("download", V0, str(tmp_path / "out"), "-q", "--no-cache")  # all there already: files kept, no bytes
    record = lineage(registry_url)["run:fetch-3"]
    assert (record.files, record.bytes) == (2 * len(FILES), sum(len(d) for d in FILES.values()))
    assert record.job.detail["from"] == "REFMOUNT_RUN" and record.job.detail["pid"] != os.getpid()


def test_api_records_producers_from_the_argument_or_the_environment(
    tmp_path: Path, registry_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_dataset(tmp_path / "data")
    art = refmount.Artifact("mnist")
    art.add_reference(file_uri(data))
    monkeypatch.setenv("REFMOUNT_RUN", "env-run")
    monkeypatch.setenv("WANDB_RUN_ID", "wandb-run")  # REFMOUNT_RUN comes first
    assert refmount.log_artifact(art, "vision") == V0
    assert refmount.log_artifact(art, "vision", run="explicit") == V0  # unchanged content: another producer
    producers = lineage(registry_url, role="produced")
    assert {name: r.job.detail["from"] for name, r in producers.items()} == {
        "run:env-run": "REFMOUNT_RUN", "run:explicit": "--run"}  # fmt: skip


# -- the schema ----------------------------------------------------------------------------------------

V4_COMMIT = "222bd5b"  # refmount's main at schema v4 (collections), the last before lineage
V4_SCRIPT = textwrap.dedent("""
    import sys
    from refmount.manifest import Entry, Manifest
    from refmount.registry import open_registry
    from refmount.registry.sql import SCHEMA_VERSION
    assert SCHEMA_VERSION == 4, SCHEMA_VERSION
    reg = open_registry(sys.argv[1], create=True)
    for i, digests in enumerate((["a"], ["a", "b"])):
        m = Manifest(Entry(f"d{j}/f{j}.bin", f"s3://b/f{j}.bin", d, 10 + j, {"etag": d})
                     for j, d in enumerate(digests))
        reg.log_version("vision", "mnist", m, type="dataset", description=f"n{i}", metadata={"i": i})
    reg.link_version("vision", "mnist", "v0", "wandb-registry-datasets", "mnist", aliases=["production"])
    reg.close()
""")


def test_a_schema_v4_registry_made_by_the_previous_code_upgrades_without_losing_data(
    any_registry_url: str, tmp_path: Path
) -> None:
    reg = upgraded(V4_COMMIT, V4_SCRIPT, 4, any_registry_url, tmp_path)
    versions = reg.versions("vision", "mnist")
    assert [(v.index, v.description, dict(v.metadata), v.aliases) for v in versions] == [
        (0, "n0", {"i": 0}, ()), (1, "n1", {"i": 1}, ("latest",))]  # fmt: skip
    assert [e.path for e in reg.iter_entries(versions[1].manifest_id)] == ["d0/f0.bin", "d1/f1.bin"]
    linked = reg.resolve("wandb-registry-datasets", "mnist", "production")
    assert (linked.linked_from, linked.manifest_id) == (V0, versions[0].manifest_id)
    assert reg.lineage(versions=[V0]) == []
    from refmount.jobs import run_job

    made = reg.log_version("vision", "mnist", test_registry.manifest("new"), type="dataset", run=run_job("r9"))
    assert [(r.version, r.role, r.job.name) for r in reg.lineage(job_id="r9")] == [
        (made.version.qualified_name, "produced", "run:r9")]  # fmt: skip
    reg.close()
