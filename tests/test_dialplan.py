"""The dial plan: digits to dial and E.164 forms, country-code table, other home countries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faxgate.config import DialplanConfig
from faxgate.grammar.dialplan import (
    COUNTRY_CODES,
    E164_MAX_DIGITS,
    dial_string,
    e164,
    split_country_code,
)
from faxgate.grammar.subject import SubjectError, parse_subject

SHENZHEN = DialplanConfig(
    country_code="86",
    area_code="755",
    international_prefix="00",
    national_prefix="0",
    outside_line_prefix="",
)
SHENZHEN_PBX = DialplanConfig(
    country_code="86",
    area_code="755",
    international_prefix="00",
    national_prefix="0",
    outside_line_prefix="9",
)
NEW_YORK = DialplanConfig(
    country_code="1",
    area_code="212",
    international_prefix="011",
    national_prefix="1",
    outside_line_prefix="",
)
HONG_KONG = DialplanConfig(
    country_code="852",
    area_code="0",
    international_prefix="001",
    national_prefix="",
    outside_line_prefix="",
)


@pytest.mark.parametrize(
    ("country", "area", "number", "plain", "pbx"),
    [
        ("86", "755", "83235170", "83235170", "983235170"),  # same country and area
        ("86", "10", "666666", "010666666", "9010666666"),  # same country, other area
        ("86", "0", "13800138000", "13800138000", "913800138000"),  # home, no area code
        ("852", "0", "999999", "00852999999", "900852999999"),  # abroad, no area code
        ("49", "30", "123456", "004930123456", "9004930123456"),  # abroad with area
        ("0", "0", "123", "123", "123"),  # internal: never an outside line
    ],
)
def test_dial_string(country: str, area: str, number: str, plain: str, pbx: str) -> None:
    assert dial_string(country, area, number, SHENZHEN) == plain
    assert dial_string(country, area, number, SHENZHEN_PBX) == pbx


@pytest.mark.parametrize(
    ("country", "area", "number", "expected"),
    [
        ("86", "755", "83235170", "+8675583235170"),
        ("852", "0", "999999", "+852999999"),
        ("1", "212", "5551234", "+12125551234"),
        ("0", "0", "123", None),
    ],
)
def test_e164(country: str, area: str, number: str, expected: str | None) -> None:
    assert e164(country, area, number) == expected


def test_other_home_countries() -> None:
    assert parse_subject("5551234", NEW_YORK)[0].dial == "5551234"
    assert parse_subject("415-5551234", NEW_YORK)[0].dial == "14155551234"
    assert parse_subject("86-755-83235170", NEW_YORK)[0].dial == "0118675583235170"
    assert parse_subject("+12125551234", NEW_YORK)[0].dial == "5551234"
    # Hong Kong has no area codes and no national prefix.
    [local, mainland] = parse_subject("23456789; 86-755-83235170", HONG_KONG)
    assert (local.area, local.dial, local.e164) == ("0", "23456789", "+85223456789")
    assert mainland.dial == "0018675583235170"
    assert parse_subject("+85223456789", HONG_KONG)[0].dial == "23456789"


def test_new_york_unseparated_area_uses_national_prefix_one() -> None:
    with pytest.raises(SubjectError) as info:
        parse_subject("12125551234", NEW_YORK)
    assert info.value.hint == "Write 212-5551234"


def test_country_codes_form_a_prefix_code() -> None:
    for code in COUNTRY_CODES:
        assert code.isdigit() and 1 <= len(code) <= 3
        assert not any(code[:n] in COUNTRY_CODES for n in range(1, len(code))), code


def test_country_code_table_has_the_well_known_codes() -> None:
    assert {"1", "7", "44", "49", "81", "86", "852", "853", "886", "971", "998"} <= COUNTRY_CODES
    assert not {"0", "28", "42", "80", "999", "969"} & COUNTRY_CODES
    assert len(COUNTRY_CODES) > 200


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        ("12125551234", ("1", "2125551234")),
        ("74951234567", ("7", "4951234567")),
        ("8675583235170", ("86", "75583235170")),
        ("852999999", ("852", "999999")),
        ("886", ("886", "")),
        ("999123", None),
        ("0123", None),
        ("", None),
    ],
)
def test_split_country_code(digits: str, expected: tuple[str, str] | None) -> None:
    assert split_country_code(digits) == expected


@given(
    st.sampled_from(sorted(COUNTRY_CODES)),
    st.text("0123456789", min_size=1, max_size=E164_MAX_DIGITS),
)
def test_plus_number_abroad_keeps_its_digits(country: str, national: str) -> None:
    try:
        [r] = parse_subject(f"+{country}{national}", SHENZHEN)
    except SubjectError as err:
        assert country == "86" or "too long" in err.problem
        return
    assert r.e164 == f"+{country}{national}"
    if country != "86":
        assert r.dial == f"00{country}{national}"
