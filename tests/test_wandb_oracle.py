"""The wandb SDK (offline, no server) judges refmount's manifests of s3, gs and file:// references.

The same ``add_reference`` calls in both tools must give equal entries (path, ref, digest, size, extra less
refmount's own keys) and equal artifact digests, for keys with spaces, ``%``, non-ASCII characters, ``+`` and
``=``; W&B's manifest must import and read right through the mount; refmount's export must load in W&B and
fetch the same objects. A key holding ``?`` or ``#``, which W&B's refs cannot carry, is logged in refmount's
marked, percent-encoded form with a warning, and still reads right.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.server_gcs import GCSEnv
from tests.servers import S3Env
from tests.wandb_sdk import Ref, both, without_own_keys

ODD_KEYS = ["odd/sp ace.txt", "odd/pct%41.txt", "odd/ün本.txt", "odd/a+b=c.txt", "odd/%2F%zz.txt"]
OTHER_KEYS = ["nested/deep/x.bin", "nested/y.bin", "one.bin"]
DECOY = "odd/pctA.txt"  # what 'pct%41.txt' would name if a tool decoded W&B's refs: its bytes differ


def _bodies(keys: list[str]) -> dict[str, bytes]:
    return {key: f"the bytes of {key}".encode() for key in keys}


def _assert_same(theirs: Any, ours: Any) -> None:
    assert without_own_keys(ours.manifest.to_json()["contents"]) == theirs.manifest.to_manifest_json()["contents"]
    assert ours.manifest.digest == theirs.digest


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_s3_references_equal_wandbs(wandb: Any, s3_env: S3Env, versioned: bool) -> None:
    b = s3_env.bucket(versioned=versioned)
    puts = {key: s3_env.put(b, key, body) for key, body in _bodies(ODD_KEYS + OTHER_KEYS).items()}
    refs: list[Ref] = [
        (f"s3://{b}/odd/", None, True),
        (f"s3://{b}/nested/", "n", True),
        (f"s3://{b}/one.bin", None, True),
        (f"s3://{b}/one.bin", "renamed/one.bin", True),
        (f"s3://{b}/odd/sp ace.txt", "single.txt", True),
        (f"s3://{b}/nested/deep/", None, False),
        (f"s3://{b}/odd/", "odd-location", False),
    ]
    if versioned:
        refs.append((f"s3://{b}/one.bin?versionId={puts['one.bin']['VersionId']}", "pinned.bin", True))
    _assert_same(*both(wandb, refs))


def test_gcs_references_equal_wandbs(wandb: Any, gcs_env: GCSEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")  # W&B's client wants a project, the emulator any
    b = gcs_env.bucket(versioned=True)
    for key, body in _bodies(ODD_KEYS + OTHER_KEYS).items():
        gcs_env.put(b, key, body)
    refs: list[Ref] = [
        (f"gs://{b}/odd/", None, True),
        (f"gs://{b}/nested/", "n", True),
        (f"gs://{b}/one.bin", "renamed/one.bin", True),
        (f"gs://{b}/nested/deep/", None, False),
    ]
    _assert_same(*both(wandb, refs))


def test_file_references_equal_wandbs(wandb: Any, tmp_path: Path) -> None:
    root = tmp_path / "data"
    for key, body in _bodies([k for k in ODD_KEYS if "%" not in k] + OTHER_KEYS).items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(body)
    refs: list[Ref] = [
        (file_uri(root / "odd"), None, True),
        (file_uri(root / "nested"), "n", True),
        (file_uri(root / "one.bin"), "renamed/one.bin", True),
        (file_uri(root / "nested"), "nested-locations", False),
        (file_uri(root / "one.bin"), "one-location.bin", False),
    ]
    _assert_same(*both(wandb, refs))


def test_wandb_manifest_reads_right_through_the_mount(wandb: Any, s3_env: S3Env, cli: Cli, mount_factory: Any,
                                                      tmp_path: Path) -> None:  # fmt: skip
    b = s3_env.bucket(versioned=True)
    bodies = _bodies([DECOY, *ODD_KEYS])
    for key, body in bodies.items():
        s3_env.put(b, key, body)
    art = wandb.Artifact("wb", type="dataset")
    art.add_reference(f"s3://{b}/odd/")
    manifest = tmp_path / "wandb-manifest.json"
    manifest.write_text(json.dumps(art.manifest.to_manifest_json()))
    assert cli("import", str(manifest), "wb/odd", "--json").json()["digest"] == art.digest
    version = mount_factory().path / "wb/odd/v0"
    for key, body in bodies.items():
        assert (version / key.removeprefix("odd/")).read_bytes() == body
    assert cli("verify", "wb/odd", "-q").out.startswith(f"{len(bodies)} of {len(bodies)} references resolve")


def test_wandb_loads_refmounts_export(wandb: Any, s3_env: S3Env, cli: Cli, mount_factory: Any) -> None:
    from wandb.sdk.artifacts.artifact_manifests.artifact_manifest_v1 import ArtifactManifestV1
    from wandb.sdk.artifacts.storage_handlers.s3_handler import S3Handler

    b = s3_env.bucket(versioned=True)
    cut = "odd/q?x=1#frag.txt"  # '?' and '#': no W&B ref can carry this key
    bodies = _bodies([DECOY, *ODD_KEYS, cut])
    for key, body in bodies.items():
        s3_env.put(b, key, body)
    logged = cli("log", "ds/odd", f"s3://{b}/odd/")
    assert logged.err.strip() == (
        "refmount: warning: 1 object key holds '?' or '#', which W&B's refs cannot carry: refmount writes such a "
        "ref percent-encoded (extra.ref_quoted) and reads it right; W&B cannot load it: q?x=1#frag.txt"
    )
    exported = ArtifactManifestV1.from_manifest_json(json.loads(cli("export", "ds/odd").out))
    handler = S3Handler()
    for path, entry in exported.entries.items():
        if path == cut.removeprefix("odd/"):
            assert entry.extra["ref_quoted"] is True
            continue
        assert Path(handler.load_path(entry, local=True)).read_bytes() == bodies[f"odd/{path}"]
    version = mount_factory().path / "ds/odd/v0"
    assert (version / cut.removeprefix("odd/")).read_bytes() == bodies[cut]  # refmount reads its own form right
