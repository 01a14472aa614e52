from __future__ import annotations

from pathlib import Path

import pytest

from faxgate import config
from faxgate.cli import main
from faxgate.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "faxgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_when_default_file_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    cfg = config.load()
    assert cfg.source is None
    assert cfg.dialplan.country_code == "86"
    assert cfg.store.path.endswith(".db")


def test_explicit_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")


def test_env_var_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, '[dialplan]\narea_code = "10"\n')
    monkeypatch.setenv(config.ENV_VAR, str(path))
    assert config.load().dialplan.area_code == "10"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[dialplan]\narea_cod = "10"\n')
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert "dialplan.area_cod" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[dialpan]\n")
    with pytest.raises(ConfigError, match=r"unknown section \[dialpan\]"):
        config.load(path)


def test_wrong_type_names_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[dialplan]\ncountry_code = 86\n")
    with pytest.raises(ConfigError, match="dialplan.country_code.*string"):
        config.load(path)
    path = write(tmp_path, '[limits]\nmax_recipients = "5"\n')
    with pytest.raises(ConfigError, match="limits.max_recipients.*integer"):
        config.load(path)
    path = write(tmp_path, "[limits]\nmax_recipients = true\n")
    with pytest.raises(ConfigError, match="limits.max_recipients"):
        config.load(path)
    path = write(tmp_path, '[milter]\nfax_addresses = "fax@x"\n')
    with pytest.raises(ConfigError, match="milter.fax_addresses.*list of string"):
        config.load(path)


def test_choices(tmp_path: Path) -> None:
    path = write(tmp_path, '[milter]\nunauthorized = "bounce"\n')
    with pytest.raises(ConfigError, match="reject, discard"):
        config.load(path)


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[dialplan\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        config.load(path)


def test_dump_round_trips(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[dialplan]\noutside_line_prefix = "9"\n[milter]\nfax_addresses = ["a@b", "c@d"]\n',
    )
    cfg = config.load(path)
    again = config.load(write(tmp_path, config.dump(cfg, with_docs=True)))
    assert again.dialplan == cfg.dialplan
    assert again.milter == cfg.milter


def test_config_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[dialplan]\narea_code = "21"\n')
    assert main(["--config", str(path), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert 'area_code = "21"' in out
    assert "configuration OK" in out
    bad = write(tmp_path, "[dialplan]\nbogus = 1\n")
    assert main(["--config", str(bad), "config", "check"]) == 2
    assert "dialplan.bogus" in capsys.readouterr().err
