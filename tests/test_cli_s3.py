"""`refmount log` and friends on s3:// references, through the real CLI and a real moto_server."""

from __future__ import annotations

import json
from pathlib import Path

from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.servers import S3Env


def test_log_s3_prefix_versions_and_pins(s3_env: S3Env, cli: Cli, tmp_path: Path) -> None:
    b = s3_env.bucket(versioned=True)
    for i in range(3):
        s3_env.put(b, f"datasets/mnist/train/{i:04}.png", b"png%d" % i)
    s3_env.put(b, "datasets/mnist2/other", b"sibling")
    first = cli("log", "vision/mnist", f"s3://{b}/datasets/mnist", "--type", "dataset", "--json").json()
    assert first["name"] == "vision/mnist:v0" and first["files"] == 3
    assert not cli("log", "vision/mnist", f"s3://{b}/datasets/mnist/", "--json").json()["created"]
    put = s3_env.put(b, "datasets/mnist/train/0001.png", b"changed")
    assert cli("log", "vision/mnist", f"s3://{b}/datasets/mnist/", "--json").json()["name"] == "vision/mnist:v1"
    manifest = json.loads(cli("show", "vision/mnist:v1", "--json").out)
    entry = manifest["contents"]["train/0001.png"]
    assert entry["extra"]["versionID"] == put["VersionId"] and entry["digest"] == put["ETag"].strip('"')
    assert entry["ref"] == f"s3://{b}/datasets/mnist/train/0001.png" and entry["size"] == 7
    listing = cli("show", "vision/mnist:v0").out
    assert put["VersionId"] not in listing and "train/0002.png" in listing


def test_mixed_references_with_names(s3_env: S3Env, cli: Cli, tmp_path: Path) -> None:
    b = s3_env.bucket()
    s3_env.put(b, "models/cnn/model.h5", b"weights")
    labels = tmp_path / "labels.csv"
    labels.write_text("a,b\n")
    cli("log", "models/cnn", f"s3://{b}/models/cnn/model.h5", file_uri(labels), "--type", "model",
        "--name", "weights/model.h5", "--name", "labels.csv", "-q")  # fmt: skip
    contents = json.loads(cli("export", "models/cnn:latest").out)["contents"]
    assert set(contents) == {"weights/model.h5", "labels.csv"}


def test_s3_errors_change_nothing(s3_env: S3Env, cli: Cli) -> None:
    b = s3_env.bucket()
    for i in range(3):
        s3_env.put(b, f"p/{i}", b"x")
    for args, message in {
        ("log", "p/a", "s3://no-such-bucket-x/p/"): "does not exist",
        ("log", "p/a", f"s3://{b}/p/", "--max-objects", "2"): "max_objects=2",
        ("log", "p/a", f"s3://{b}/nothing/"): "no objects under",
    }.items():
        result = cli(*args, ok=False)
        assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert "no registry at" in cli("ls", ok=False).err  # the failed logs did not even create it
