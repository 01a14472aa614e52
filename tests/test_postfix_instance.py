"""The private Postfix manager's configuration, and the deploy snippet it mirrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from faxgate.postfix_instance import MILTER_SETTINGS, PostfixError, PostfixInstance

SNIPPET = Path(__file__).resolve().parent.parent / "deploy" / "postfix" / "main.cf.snippet"


def snippet_settings() -> dict[str, str]:
    settings = {}
    for line in SNIPPET.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def test_snippet_has_every_line_explained_and_matches_the_test_instance() -> None:
    settings = snippet_settings()
    assert settings["smtpd_milters"] == "inet:127.0.0.1:8899"
    assert settings["milter_default_action"] == "tempfail"
    for key in ("{auth_authen}", "{client_addr}", "i"):
        assert key in settings["milter_mail_macros"].split()
    # The integration tests run Postfix with exactly the documented milter settings.
    assert {k: v for k, v in settings.items() if k != "smtpd_milters"} == MILTER_SETTINGS
    lines = SNIPPET.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert lines[index - 1].startswith("#"), f"unexplained line: {line}"


def test_main_cf_is_private_and_loopback_only(tmp_path: Path) -> None:
    mta = PostfixInstance(
        tmp_path / "pf", 2525, relay=("127.0.0.1", 2526), milter="inet:127.0.0.1:9"
    )
    params = mta.main_cf()
    assert params["inet_interfaces"] == "loopback-only"
    assert params["queue_directory"].startswith(str(tmp_path))
    assert params["data_directory"].startswith(str(tmp_path))
    assert params["relayhost"] == "[127.0.0.1]:2526"
    assert params["smtpd_authorized_xclient_hosts"] == "127.0.0.1"
    assert params["smtpd_milters"] == "inet:127.0.0.1:9"
    assert PostfixInstance(tmp_path, 25).main_cf().get("smtpd_milters") is None


def test_master_cf_listens_only_on_chosen_loopback_ports(tmp_path: Path) -> None:
    mta = PostfixInstance(tmp_path, 2525, extra_listeners={2527: {"smtpd_milters": ""}})
    services = [
        line.split()
        for line in mta.master_cf().splitlines()
        if line.strip() and not line[0].isspace() and not line.startswith("#")
    ]
    listeners = [s[0] for s in services if s[1] == "inet"]
    assert listeners == ["127.0.0.1:2525", "127.0.0.1:2527"]
    assert all(s[4] == "n" for s in services)  # no chroot
    assert "  -o smtpd_milters=" in mta.master_cf()


def test_private_parent_directory_is_a_clear_error(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(PostfixError, match="not searchable"):
        PostfixInstance(private / "pf", 2525).configure()
