"""Settings precedence: defaults < /etc file < user file < environment < flags, with sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from refmount import config
from refmount.errors import InvalidInput
from tests.conftest import Cli


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    system, user_home = tmp_path / "etc.toml", tmp_path / "xdg"
    monkeypatch.setattr(config, "SYSTEM_FILE", system)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user_home))
    for var in [k.env for k in config.KEYS.values()] + ["REFMOUNT_CONFIG"]:
        monkeypatch.delenv(var, raising=False)
    (user_home / "refmount").mkdir(parents=True)
    return system, user_home / "refmount" / "config.toml"


def test_precedence_and_sources(files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    system, user = files
    system.write_text('registry = "postgresql://db/refmount"\ncache_size = "50G"\nalias_ttl = 2\nallow_other = true\n')
    user.write_text('cache_size = "1G"\nfuse_options = ["noatime"]\n')
    monkeypatch.setenv("REFMOUNT_ALIAS_TTL", "7.5")
    settings = config.load({"uid": 1234, "gid": None})
    assert settings.registry == "postgresql://db/refmount" and settings.sources["registry"] == str(system)
    assert settings.cache_size == 1 << 30 and settings.sources["cache_size"] == str(user)
    assert settings.alias_ttl == 7.5 and settings.sources["alias_ttl"] == "env REFMOUNT_ALIAS_TTL"
    assert settings.uid == 1234 and settings.sources["uid"] == "flag"
    assert settings.sources["gid"] == "default"
    assert settings.allow_other is True and settings.fuse_options == ("noatime",)


@pytest.mark.parametrize(
    "text, message",
    [("nonsense = 1\n", "unknown setting"), ("cache_size = \"lots\"\n", "invalid cache_size"),
     ("alias_ttl = -1\n", "invalid alias_ttl"), ("allow_other = \"maybe\"\n", "invalid allow_other"),
     ("registry = \n", "cannot read config")],
)  # fmt: skip
def test_bad_config_is_one_clear_line(files: tuple[Path, Path], text: str, message: str) -> None:
    files[1].write_text(text)
    with pytest.raises(InvalidInput, match=message):
        config.load()


def test_sizes() -> None:
    assert config.parse_size("50G") == 50 << 30
    assert config.parse_size("512MiB") == 512 << 20
    assert config.parse_size("1.5T") == int(1.5 * (1 << 40))
    assert config.parse_size("4096") == 4096
    with pytest.raises(InvalidInput):
        config.parse_size("12 parsecs")


def test_explicit_config_file_must_exist(files: tuple[Path, Path], cli: Cli, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    assert config.load().sources["cache_size"] == "default"  # neither default file exists: fine
    missing = tmp_path / "nonexistent" / "x.toml"
    monkeypatch.setenv("REFMOUNT_CONFIG", str(missing))
    err = cli("config", ok=False).err
    assert f"config file {missing} (named by $REFMOUNT_CONFIG) does not exist" in err
    assert len(err.strip().splitlines()) == 1


def test_config_command_shows_sources(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "only.toml"
    conf.write_text('cache_dir = "/var/cache/refmount-test"\n')
    monkeypatch.setenv("REFMOUNT_CONFIG", str(conf))
    shown = cli("config", "--json").json()
    assert shown["cache_dir"] == {"value": "/var/cache/refmount-test", "source": str(conf)}
    assert shown["registry"]["source"] == "env REFMOUNT_REGISTRY"
    conf.write_text("cache_dir = [\n")
    assert "cannot read config" in cli("config", ok=False).err
