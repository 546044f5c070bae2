"""Settings precedence: defaults < /etc file < user file < environment < flags, with sources."""

from __future__ import annotations

import re
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
    assert settings.uid == 1234 and settings.sources["uid"] == "option --uid"
    assert settings.sources["gid"] == "default"
    assert settings.allow_other is True and settings.fuse_options == ("noatime",)
    assert settings.lineage is True and settings.sources["lineage"] == "default"
    monkeypatch.setenv("REFMOUNT_LINEAGE", "off")
    assert config.load().lineage is False and config.load({"lineage": True}).lineage is True
    assert settings.dir_readahead == 16 and settings.sources["dir_readahead"] == "default"
    monkeypatch.setenv("REFMOUNT_DIR_READAHEAD", "0")
    assert config.load().dir_readahead == 0 and config.load({"dir_readahead": 64}).dir_readahead == 64


@pytest.mark.parametrize(
    "text, message",
    [("nonsense = 1\n", "unknown setting"), ("cache_size = \"lots\"\n", "invalid cache_size"),
     ("alias_ttl = -1\n", "invalid alias_ttl"), ("allow_other = \"maybe\"\n", "invalid allow_other"),
     ("registry = \n", "cannot read config"),
     ("cache_size = -100\n", "invalid cache_size -100: must not be negative"),
     ("cache_size = \"50i\"\n", "invalid cache_size '50i': expected a size"),
     ("alias_ttl = true\n", "invalid alias_ttl True"), ("alias_ttl = nan\n", "invalid alias_ttl nan"),
     ("alias_ttl = inf\n", "invalid alias_ttl inf"), ("uid = true\n", "invalid uid True"),
     ("gid = 100.5\n", "invalid gid 100.5"), ("registry = 5\n", "invalid registry 5"),
     ("fuse_options = [1]\n", "invalid fuse_options [1]"), ("lineage = \"sometimes\"\n", "invalid lineage"),
     ("dir_readahead = -1\n", "invalid dir_readahead -1: must be from 0 (off) to 1024"),
     ("dir_readahead = 2.5\n", "invalid dir_readahead 2.5"), ("dir_readahead = \"many\"\n", "invalid dir_readahead")],
)  # fmt: skip
def test_bad_config_is_one_clear_line(files: tuple[Path, Path], text: str, message: str) -> None:
    files[1].write_text(text)
    with pytest.raises(InvalidInput, match=re.escape(message)) as caught:
        config.load()
    assert str(files[1]) in str(caught.value) and "\n" not in str(caught.value)


def test_sizes() -> None:
    for text in ("50G", "50g", "50Gi", "50GiB", "50GB", " 50 G "):
        assert config.parse_size(text) == 50 << 30, text
    assert config.parse_size("512MiB") == 512 << 20
    assert config.parse_size("1.5T") == int(1.5 * (1 << 40))
    assert config.parse_size("4096") == config.parse_size("4096B") == config.parse_size(4096) == 4096
    for bad in ("12 parsecs", "50i", "50iB", "50GiBB", "-5G", "nan", "inf", -100, True):
        with pytest.raises(ValueError):
            config.parse_size(bad)


def test_explicit_config_file_must_exist(files: tuple[Path, Path], cli: Cli, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    assert config.load().sources["cache_size"] == "default"  # neither default file exists: fine
    missing = tmp_path / "nonexistent" / "x.toml"
    monkeypatch.setenv("REFMOUNT_CONFIG", str(missing))
    err = cli("config", ok=False).err
    assert f"config file {missing} (named by $REFMOUNT_CONFIG) does not exist" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_values_name_where_they_come_from(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def one_line_error(*args: str) -> str:
        err = cli(*args, ok=False).err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        return err

    conf = tmp_path / "bad.toml"
    conf.write_text("cache_size = -100\n")
    monkeypatch.setenv("REFMOUNT_CONFIG", str(conf))
    assert f"{conf}: invalid cache_size -100" in one_line_error("config")
    conf.write_text("")
    for value in ("nan", "inf", "-1", "true"):
        monkeypatch.setenv("REFMOUNT_ALIAS_TTL", value)
        assert f"env REFMOUNT_ALIAS_TTL: invalid alias_ttl '{value}'" in one_line_error("config")
    monkeypatch.delenv("REFMOUNT_ALIAS_TTL")
    missing = str(tmp_path / "missing")  # the settings are checked first; nothing is mounted
    for option, value in [("--alias-ttl", "nan"), ("--alias-ttl", "inf"), ("--alias-ttl", "-1"),
                          ("--cache-size", "50i"), ("--cache-size", "-1")]:  # fmt: skip
        err = one_line_error("mount", missing, option, value)
        assert option in err and "invalid" in err.lower(), err


def test_config_hides_the_registry_password() -> None:
    as_set = Cli("postgresql://u:hunter2@db.example:5432/refmount")  # `refmount config` does not connect
    for args in [("config",), ("config", "--json")]:
        out = as_set(*args).out
        assert "postgresql://u:***@db.example:5432/refmount" in out and "hunter2" not in out


def test_config_command_shows_sources(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "only.toml"
    conf.write_text('cache_dir = "/var/cache/refmount-test"\n')
    monkeypatch.setenv("REFMOUNT_CONFIG", str(conf))
    shown = cli("config", "--json").json()
    assert shown["cache_dir"] == {"value": "/var/cache/refmount-test", "source": str(conf)}
    assert shown["registry"]["source"] == "env REFMOUNT_REGISTRY"
    conf.write_text("cache_dir = [\n")
    assert "cannot read config" in cli("config", ok=False).err
