"""The configuration: lookup order, documented defaults, errors naming key and file."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
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


def test_lookup_order_config_option_then_env_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('[dialplan]\narea_code = "10"\n', encoding="utf-8")
    env = tmp_path / "env.toml"
    env.write_text('[dialplan]\narea_code = "20"\n', encoding="utf-8")
    default = tmp_path / "default.toml"
    default.write_text('[dialplan]\narea_code = "21"\n', encoding="utf-8")
    monkeypatch.setattr(config, "DEFAULT_PATH", default)
    monkeypatch.setenv(config.ENV_VAR, str(env))
    assert config.load(explicit).source == explicit
    assert config.load(explicit).dialplan.area_code == "10"
    assert config.load().dialplan.area_code == "20"
    monkeypatch.delenv(config.ENV_VAR)
    cfg = config.load()
    assert (cfg.source, cfg.dialplan.area_code) == (default, "21")
    # The CLI's --config goes first as well.
    monkeypatch.setenv(config.ENV_VAR, str(env))
    assert main(["--config", str(explicit), "config", "check"]) == 0


def test_env_var_file_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "typo.toml"))
    with pytest.raises(ConfigError, match="typo.toml: configuration file not found"):
        config.load()


def test_every_key_is_documented_and_has_a_default() -> None:
    defaults = config.parse({})
    for name, cls in config.SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for key in dataclasses.fields(cls):
            assert key.metadata.get("doc", "").strip(), f"[{name}] {key.name} has no doc"
            has_default = key.default is not dataclasses.MISSING
            assert has_default or key.default_factory is not dataclasses.MISSING, key.name
            assert config._type_ok(getattr(getattr(defaults, name), key.name), hints[key.name]), (
                key.name
            )
    # Every default also passes the choices and patterns a file's values must pass.
    assert config.parse(tomllib.loads(config.dump(defaults))) == defaults


def test_dialplan_has_exactly_the_five_keys_with_shenzhen_defaults() -> None:
    assert [f.name for f in dataclasses.fields(config.DialplanConfig)] == [
        "country_code",
        "area_code",
        "international_prefix",
        "national_prefix",
        "outside_line_prefix",
    ]
    plan = config.parse({}).dialplan
    assert (
        plan.country_code,
        plan.area_code,
        plan.international_prefix,
        plan.national_prefix,
        plan.outside_line_prefix,
    ) == ("86", "755", "00", "0", "")


def test_store_location_is_store_path(tmp_path: Path) -> None:
    assert config.parse({}).store.path == "/var/lib/faxgate/faxgate.db"
    path = write(tmp_path, f'[store]\npath = "{tmp_path / "x.db"}"\n')
    assert config.load(path).store.path == str(tmp_path / "x.db")


def test_wrong_type_and_bad_value_name_the_file(tmp_path: Path) -> None:
    for text, key in [
        ("[store]\npath = 5\n", "store.path"),
        ("[faxd]\nmax_dials = 1.5\n", "faxd.max_dials"),
        ('[dialplan]\narea_code = "0755 "\n', "dialplan.area_code"),
        ('[dialplan]\ncountry_code = "+86"\n', "dialplan.country_code"),
        ("[store]\n[store.path]\nx = 1\n", "store.path"),
    ]:
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as err:
            config.load(path)
        assert str(err.value).startswith(f"{path}: key '{key}' must be"), str(err.value)


@pytest.mark.parametrize(
    ("key", "good", "bad"),
    [
        ("country_code", ["1", "86", "852"], ["", "0", "086", "8621", "86a"]),
        ("area_code", ["0", "10", "755"], ["", "7-55", "７５５"]),
        ("international_prefix", ["00", "011"], ["", "+", "00 "]),
        ("national_prefix", ["", "0", "1"], ["O", "0;"]),
        ("outside_line_prefix", ["", "9", "0,", "9W", "*72#"], ["9;ATH", "9\r", "+"]),
    ],
)
def test_dialplan_values_are_dialable(
    tmp_path: Path, key: str, good: list[str], bad: list[str]
) -> None:
    """What reaches the modem's ATD line: digits and dial modifiers, nothing else."""
    for value in good:
        assert getattr(config.parse({"dialplan": {key: value}}).dialplan, key) == value
    for value in bad:
        with pytest.raises(ConfigError, match=f"key 'dialplan.{key}' must be"):
            config.parse({"dialplan": {key: value}}, tmp_path / "faxgate.toml")


def test_config_check_prints_every_key_of_the_effective_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    assert main(["config", "check", "--doc"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# configuration OK: built-in defaults\n")
    printed = tomllib.loads(out)
    assert config.parse(printed) == config.parse({})
    for name, cls in config.SECTIONS.items():
        assert set(printed[name]) == {f.name for f in dataclasses.fields(cls)}, name
        for key in dataclasses.fields(cls):
            assert f"# {key.metadata['doc']}\n{key.name} = " in out
