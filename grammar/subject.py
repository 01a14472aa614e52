"""Parse a fax Subject into recipients: ``country-area-number|network/name1|name2; ...``.

``subject.lark`` is the source of truth for the syntax; this module gives it
meaning: defaults from the dial plan (missing area = local area, missing
country = local country), country codes, the national-prefix mistakes people
make, limits, dial strings. Every problem is one ``SubjectError`` that points
at a column of the decoded Subject and says in plain words how to fix it,
because the sender reads it in a bounce and must be able to act on it.

Decisions beyond the manual (documented here because the milter and the
receipts depend on them):

- ``0755-83235170`` and ``86-0755-83235170`` (area with the national prefix,
  as people write it at home) mean area ``755``; a lone number that starts with
  the national prefix (``075583235170``) is an error with a suggestion, as the
  manual demands.
- ``0086-755-83235170``: a country code written with the international prefix
  is accepted.
- ``+`` numbers: ``+86-755-83235170`` splits at the dashes; ``+86 755 83235170``
  (three or more space-separated groups) takes the groups as country, area and
  number; otherwise (``+8675583235170``) the country code is split off with the
  ITU table and the rest is the national number. Abroad, the national number
  is stored with area ``0`` ("no separate area": the digits dialled are the
  same). At home, the configured local area code is split off when the number
  starts with it; any other home number must be written with its area code
  separated, since dialling it wrongly would reach someone else.
- Names: surrounding whitespace is dropped and inner runs of whitespace become
  one space (names end up in one-line headers); control characters are errors.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from faxgate.config import DialplanConfig
from faxgate.errors import InputError
from faxgate.grammar import dialplan as dp

GRAMMAR_PATH = Path(__file__).with_name("subject.lark")
DEFAULT_MAX_RECIPIENTS = 50
NETWORK_MAX_DIGITS = 16
RECIPIENT_KEYS = ("country", "area", "number", "network", "name1", "name2", "dial", "e164")
#: Characters that end a name: the separators and their full-width forms.
NAME_SEPARATORS = frozenset(";；﹔/／|｜")

_ASCII = str.maketrans("０１２３４５６７８９ａＡｆＦ", "0123456789AAFF")
_EXAMPLE = "86-755-83235170/金恒科技"


class SubjectError(InputError):
    """The Subject cannot be understood; ``column`` is 1-based in the decoded Subject."""

    def __init__(self, problem: str, column: int, text: str, hint: str) -> None:
        super().__init__(problem, column, text, hint)
        self.problem = problem
        self.column = column
        self.text = text
        self.hint = hint

    def __str__(self) -> str:
        near = f' "{_printable(self.text)}"' if self.text else ""
        return f"Subject column {self.column}{near}: {self.problem}. {self.hint}"


@dataclass(frozen=True)
class Recipient:
    """One fax recipient; country and area are after defaults.

    A network-only recipient (``AF90000098``) has country, area, number, dial
    and e164 all None; an internal extension (``0-0-123``) has e164 None.
    """

    country: str | None = None
    area: str | None = None
    number: str | None = None
    network: str | None = None
    name1: str | None = None
    name2: str | None = None
    dial: str | None = None
    e164: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {key: getattr(self, key) for key in RECIPIENT_KEYS}

    @classmethod
    def from_dict(cls, d: Mapping[str, str | None]) -> Recipient:
        """Build from a mapping with the keys of ``to_dict``; other keys (store columns) are ignored."""
        return cls(**{key: d.get(key) for key in RECIPIENT_KEYS})

    @property
    def is_internal(self) -> bool:
        return self.country == dp.INTERNAL_COUNTRY

    @property
    def is_network_only(self) -> bool:
        return self.number is None and self.network is not None


def parse_subject(
    subject: str, dialplan: DialplanConfig, max_recipients: int = DEFAULT_MAX_RECIPIENTS
) -> list[Recipient]:
    """All recipients named by ``subject``, in order; SubjectError for anything else."""
    raws = _fast_raws(subject)
    if raws is None:
        try:
            raws = _parser().parse(subject)
        except UnexpectedInput as exc:
            raise _syntax_error(exc, subject) from None
    if not raws:
        raise SubjectError(
            "no recipient",
            len(subject) - len(subject.lstrip()) + 1,
            "",
            f"Write the fax number in the Subject, e.g. {_EXAMPLE}",
        )
    recipients = []
    for index, raw in enumerate(raws):
        if index == max_recipients:
            raise SubjectError(
                f"more than {max_recipients} recipients",
                raw.pos + 1,
                raw.first_text,
                f"Send at most {max_recipients} recipients per mail; split the list over several mails",
            )
        recipients.append(_resolve(raw, dialplan))
    return recipients


def format_subject(recipients: Iterable[Recipient]) -> str:
    """A Subject naming ``recipients`` that ``parse_subject`` reads back as the same list."""
    parts = [_format_recipient(r) for r in recipients]
    if not parts:
        raise ValueError("a Subject needs at least one recipient")
    return "; ".join(parts)


def _format_recipient(r: Recipient) -> str:
    if r.number is None and r.network is None:
        raise ValueError(f"recipient without number or network number: {r!r}")
    text = "-".join(part for part in (r.country, r.area, r.number) if part is not None)
    if r.network is not None:
        text = f"{text}|{r.network}" if text else r.network
    if r.name1 is not None or r.name2 is not None:
        text += "/" + _format_name(r.name1)
        if r.name2 is not None:
            text += "|" + _format_name(r.name2)
    return text


def _format_name(name: str | None) -> str:
    if name is None:
        return ""
    if not name or NAME_SEPARATORS.intersection(name) or " ".join(name.split()) != name:
        raise ValueError(f"name cannot be written in a Subject: {name!r}")
    return name


# --- parsing -------------------------------------------------------------------------------


class _Tok(NamedTuple):
    """A token as the resolver needs it (cheaper to make than lark's Token)."""

    value: str
    start_pos: int


class _Phone(NamedTuple):
    plus: bool
    groups: tuple[tuple[_Tok, ...], ...]  # dash-separated groups of space-separated digit runs
    pos: int


class _Names(NamedTuple):
    name1: _Tok | None
    name2: _Tok | None


class _Raw(NamedTuple):
    phone: _Phone | None
    network: _Tok | None
    names: _Names | None
    pos: int
    first_text: str


class _Build(Transformer):
    """Turns parse-tree nodes into plain tuples while LALR reduces (no tree is built)."""

    def start(self, children: list[_Raw]) -> list[_Raw]:
        return children

    def local_phone(self, children: list[Token]) -> _Phone:
        return _Phone(False, tuple((_tok(t),) for t in children), children[0].start_pos)

    def plus_phone(self, children: list) -> _Phone:
        return _Phone(True, tuple(children[1:]), children[0].start_pos)

    def plus_group(self, children: list[Token]) -> tuple[_Tok, ...]:
        return tuple(_tok(t) for t in children)

    def network(self, children: list[Token]) -> _Tok:
        return _tok(children[0])

    def names(self, children: list[Token]) -> _Names:
        name1 = name2 = None
        seen_pipe = False
        for token in children:
            if token.type == "PIPE":
                seen_pipe = True
            elif seen_pipe:
                name2 = _tok(token)
            else:
                name1 = _tok(token)
        return _Names(name1, name2)

    def recipient(self, children: list) -> _Raw:
        phone = network = names = None
        for child in children:
            if isinstance(child, _Phone):
                phone = child
            elif isinstance(child, _Names):
                names = child
            elif isinstance(child, _Tok):
                network = child
        if phone is not None:
            text = "-".join("".join(t.value for t in run) for run in phone.groups)
            return _Raw(phone, network, names, phone.pos, text)
        assert network is not None  # the grammar gives every recipient a phone or a network
        return _Raw(None, network, names, children[0].start_pos, network.value)


def _tok(token: Token) -> _Tok:
    return _Tok(token.value, token.start_pos)


@functools.cache
def _parser() -> Lark:
    """The LALR parser, built once: grammar analysis costs far more than a parse."""
    return Lark(
        GRAMMAR_PATH.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        transformer=_Build(),
        maybe_placeholders=False,
        propagate_positions=False,
    )


# The common shapes ("86-755-83235170|AF90000098/name1|name2", "+86 755 83235170/name",
# one per ';') matched by one regex on the Subject with full-width forms folded to ASCII
# (one character for one, so positions stay): several times faster than lark. Only a
# subset of subject.lark, so whatever it does not match goes to lark; tests check that
# both paths agree, positions included.
_FAST_SEGMENT = re.compile(
    r"\s*(?:"
    r"(?:(?:([0-9]+)\s*-\s*)?(?:([0-9]+)\s*-\s*)?([0-9]+)"
    r"|(\+)\s*([0-9]+(?:(?:\s+|\s*-\s*)[0-9]+)*))"
    r"\s*(?:\|\s*([Aa][Ff][0-9]+)\s*)?"
    r"|([Aa][Ff][0-9]+)\s*"
    r")(?:/([^/|]*)(?:\|([^/|]*))?)?"
)
_FAST_PLUS_PARTS = re.compile(r"[0-9]+|-")
_FAST_FOLD = str.maketrans(
    "０１２３４５６７８９；﹔／｜＋ＡａＦｆ－﹣‐‑‒–—−",
    "0123456789;;/|+AaFf--------",
)


def _fast_raws(subject: str) -> list[_Raw] | None:
    """The recipients of a Subject of the common shapes, or None when lark must decide."""
    folded = subject.translate(_FAST_FOLD)
    raws = []
    offset = 0
    for segment in folded.split(";"):
        base, offset = offset, offset + len(segment) + 1
        if not segment or segment.isspace():
            continue
        m = _FAST_SEGMENT.fullmatch(segment)
        if m is None:
            return None
        spans = m.regs  # (start, end) per group, (-1, -1) when absent
        network = _fast_tok(subject, base, *spans[6]) or _fast_tok(subject, base, *spans[7])
        names = None
        if spans[8][0] >= 0:
            names = _Names(
                _fast_name(subject, base, *spans[8]), _fast_name(subject, base, *spans[9])
            )
        if spans[3][0] >= 0:
            tokens = [_fast_tok(subject, base, *spans[group]) for group in (1, 2, 3)]
            groups = tuple((t,) for t in tokens if t is not None)
            phone = _Phone(False, groups, groups[0][0].start_pos)
        elif spans[4][0] >= 0:
            runs: list[list[_Tok]] = [[]]
            body = base + spans[5][0]
            for part in _FAST_PLUS_PARTS.finditer(m.group(5)):
                if part.group() == "-":
                    runs.append([])
                else:
                    runs[-1].append(_fast_tok(subject, body, *part.span()))
            if len(runs) > 3:
                return None
            phone = _Phone(True, tuple(tuple(run) for run in runs), base + spans[4][0])
        else:
            raws.append(_Raw(None, network, names, network.start_pos, network.value))
            continue
        text = "-".join("".join(t.value for t in run) for run in phone.groups)
        raws.append(_Raw(phone, network, names, phone.pos, text))
    return raws


def _fast_tok(subject: str, base: int, start: int, end: int) -> _Tok | None:
    """The token at ``start:end`` of a segment beginning at ``base``; None if absent or empty."""
    if start >= end:
        return None
    return _Tok(subject[base + start : base + end], base + start)


def _fast_name(subject: str, base: int, start: int, end: int) -> _Tok | None:
    """Like lark's NAME, a name token starts at its first visible character."""
    if start >= end:
        return None
    value = subject[base + start : base + end]
    visible = value.lstrip()
    if not visible:
        return None
    return _Tok(visible, base + start + len(value) - len(visible))


def _digits(token: _Tok) -> str:
    return token.value.translate(_ASCII)


def _resolve(raw: _Raw, plan: DialplanConfig) -> Recipient:
    network = _network(raw.network) if raw.network is not None else None
    name1 = _name(raw.names.name1) if raw.names and raw.names.name1 is not None else None
    name2 = _name(raw.names.name2) if raw.names and raw.names.name2 is not None else None
    if raw.phone is None:
        return Recipient(network=network, name1=name1, name2=name2)
    country, area, number = _plus(raw.phone, plan) if raw.phone.plus else _local(raw.phone, plan)
    _check_length(raw.phone, country, area, number)
    _check_dialling_prefix(raw.phone, country, area, number, plan)
    return Recipient(
        country=country,
        area=area,
        number=number,
        network=network,
        name1=name1,
        name2=name2,
        dial=dp.dial_string(country, area, number, plan),
        e164=dp.e164(country, area, number),
    )


def _local(phone: _Phone, plan: DialplanConfig) -> tuple[str, str, str]:
    """``[[country-]area-]number`` with defaults and the usual prefix mistakes handled."""
    tokens = [group[0] for group in phone.groups]
    parts = [_digits(token) for token in tokens]
    if len(parts) == 1:
        _check_unseparated_area(tokens[0], parts[0], plan)
        return plan.country_code, plan.area_code, parts[0]
    if len(parts) == 2:
        area, number = parts
        return plan.country_code, _home_area(area, plan), number
    country, area, number = parts
    if country == dp.INTERNAL_COUNTRY:
        if area != dp.NO_AREA:
            raise SubjectError(
                "country code 0 is only for internal extensions",
                tokens[1].start_pos + 1,
                tokens[1].value,
                "Write an internal extension as 0-0-EXTENSION, e.g. 0-0-123",
            )
        return country, area, number
    country = _country(tokens[0], country, plan)
    if country == plan.country_code:
        area = _home_area(area, plan)
    return country, area, number


def _plus(phone: _Phone, plan: DialplanConfig) -> tuple[str, str, str]:
    """An international number written with ``+``."""
    groups = phone.groups
    first = groups[0][0]
    if len(groups) == 3:
        country = _country(first, "".join(_digits(t) for t in groups[0]), plan, plus=True)
        area, number = ("".join(_digits(t) for t in group) for group in groups[1:])
        if country == plan.country_code:
            area = _home_area(area, plan)
        return country, area, number
    if len(groups) == 2:
        country = _country(first, "".join(_digits(t) for t in groups[0]), plan, plus=True)
        return _national(phone, country, "".join(_digits(t) for t in groups[1]), plan)
    runs = [_digits(token) for token in groups[0]]
    if len(runs) >= 2 and runs[0] in dp.COUNTRY_CODES:
        if len(runs) >= 3:
            area = runs[1]
            if runs[0] == plan.country_code:
                area = _home_area(area, plan)
            return runs[0], area, "".join(runs[2:])
        return _national(phone, runs[0], runs[1], plan)
    joined = "".join(runs)
    split = dp.split_country_code(joined)
    if split is None:
        raise _unknown_country(first, joined[:3], plan)
    country, national = split
    if not national:
        raise SubjectError(
            "the number is missing after the country code",
            phone.pos + 1,
            "+" + joined,
            f"Write the whole international number, e.g. +{plan.country_code}-{plan.area_code}-83235170",
        )
    return _national(phone, country, national, plan)


def _national(
    phone: _Phone, country: str, national: str, plan: DialplanConfig
) -> tuple[str, str, str]:
    """Country plus an undivided national number: find the area where it is safe to."""
    if country != plan.country_code or plan.area_code == dp.NO_AREA:
        return country, dp.NO_AREA, national
    local = plan.area_code
    if national.startswith(local) and len(national) > len(local):
        return country, local, national[len(local) :]
    raise SubjectError(
        "cannot tell the area code from the number",
        phone.pos + 1,
        "+" + country + national,
        f"Separate the area code with '-', e.g. +{country}-AREA-NUMBER, "
        f"or +{country}-0-{national} for a number without area code",
    )


def _country(token: _Tok, country: str, plan: DialplanConfig, plus: bool = False) -> str:
    if country in dp.COUNTRY_CODES:
        return country
    prefix = plan.international_prefix
    bare = country[len(prefix) :]
    if not plus and prefix and country.startswith(prefix) and bare in dp.COUNTRY_CODES:
        return bare  # "0086": written with the international prefix
    raise _unknown_country(token, country, plan)


def _unknown_country(token: _Tok, country: str, plan: DialplanConfig) -> SubjectError:
    return SubjectError(
        f"{country} is not a country calling code",
        token.start_pos + 1,
        token.value,
        f"Use the international calling code (e.g. 86 China, 852 Hong Kong, 1 USA) "
        f"or leave the country out for numbers in {plan.country_code}",
    )


def _home_area(area: str, plan: DialplanConfig) -> str:
    """A home area code; ``0755`` (written with the national prefix) means ``755``."""
    prefix = plan.national_prefix
    if area != dp.NO_AREA and prefix and area.startswith(prefix) and len(area) > len(prefix):
        return area[len(prefix) :]
    return area


def _check_unseparated_area(token: _Tok, number: str, plan: DialplanConfig) -> None:
    """A lone number starting with a dialling prefix still holds its area or country code."""
    international, national = plan.international_prefix, plan.national_prefix
    if international and number.startswith(international):
        raise SubjectError(
            "country code not separated from the number",
            token.start_pos + 1,
            token.value,
            "Write country-area-number without the international prefix, "
            "e.g. 852-0-999999, or an international number as +852999999",
        )
    if not national or not number.startswith(national) or len(number) <= len(national):
        return
    rest = number[len(national) :]
    local = plan.area_code
    if local != dp.NO_AREA and rest.startswith(local) and len(rest) > len(local):
        hint = f"Write {local}-{rest[len(local) :]}"
    else:
        hint = f"Write area-number without the leading {national}, e.g. {local}-83235170"
    raise SubjectError(
        "area code not separated from the number", token.start_pos + 1, token.value, hint
    )


def _check_dialling_prefix(
    phone: _Phone, country: str, area: str, number: str, plan: DialplanConfig
) -> None:
    """Refuse digits that would dial a prefix the policy never sees (toll fraud).

    The modem dials ``number`` as it is for an extension or a local number, and
    ``area`` right after the national prefix: if those begin with the
    outside-line, international or national prefix, the call leaves the PBX or
    the country while the E.164 form (and so the destination policy) says
    internal or local, e.g. ``0-0-900441234567``, ``0-00441234567`` or
    ``0044-1234567``.
    """
    if country == dp.INTERNAL_COUNTRY:
        prefixes = [plan.outside_line_prefix, plan.international_prefix, plan.national_prefix]
        first, what = number, "extension"
    elif country != plan.country_code:
        return  # after the international prefix the network reads the country code
    else:
        prefixes = [plan.international_prefix, plan.national_prefix]
        dialled_area = area not in (plan.area_code, dp.NO_AREA)
        first, what = (area, "area code") if dialled_area else (number, "number")
    for prefix in prefixes:
        if prefix and first.startswith(prefix):
            text = "-".join("".join(t.value for t in run) for run in phone.groups)
            raise SubjectError(
                f"{what} {first} starts with the dialling prefix {prefix}",
                phone.pos + 1,
                text,
                "Write the number as country-area-number without dialling prefixes, e.g. "
                f"{plan.country_code}-{plan.area_code}-83235170 or +44-20-12345678 abroad",
            )


def _check_length(phone: _Phone, country: str, area: str, number: str) -> None:
    if country == dp.INTERNAL_COUNTRY:
        digits = len(number)
        problem = f"extension too long: {digits} digits"
    else:
        digits = len(country) + len(dp.international_area(area)) + len(number)
        problem = f"number too long: {digits} digits with country and area code"
    if digits > dp.E164_MAX_DIGITS:
        text = "-".join("".join(t.value for t in run) for run in phone.groups)
        raise SubjectError(
            problem,
            phone.pos + 1,
            text,
            f"A fax number has at most {dp.E164_MAX_DIGITS} digits (E.164), country code "
            "included; check for a number pasted twice or a missing ';'",
        )


def _network(token: _Tok) -> str:
    network = token.value.translate(_ASCII).upper()
    if len(network) - 2 > NETWORK_MAX_DIGITS:
        raise SubjectError(
            "network number too long",
            token.start_pos + 1,
            token.value,
            f"A network number is AF followed by at most {NETWORK_MAX_DIGITS} digits, e.g. AF90000098",
        )
    return network


#: Longest name1/name2: a cover page draws each on one line, and a 100,000-character
#: name made PIL allocate a 150-megapixel text image per recipient.
MAX_NAME_CHARS = 100


def _name(token: _Tok) -> str:
    for offset, char in enumerate(token.value):
        if unicodedata.category(char) == "Cc" and not char.isspace():
            raise SubjectError(
                "control character in a name",
                token.start_pos + offset + 1,
                char,
                "Names may contain any visible character except ; / and |",
            )
    name = " ".join(token.value.split())
    if len(name) > MAX_NAME_CHARS:
        raise SubjectError(
            f"name too long: {len(name)} characters",
            token.start_pos + 1,
            name[:20] + "...",
            f"A name has at most {MAX_NAME_CHARS} characters; check for a missing ';'",
        )
    return name


# --- syntax errors -------------------------------------------------------------------------

_COMMAS = ",，、"
_BRACKETS = "()（）[]［］"
_AF_START = re.compile(r"[AaＡａ]([FfＦｆ]|$)")
# What mail clients put in front of a Subject when replying or forwarding.
_REPLY_PREFIX = re.compile(r"(?i)(re|fw|fwd|aw|wg|sv|vs|答复|回复|转发|轉寄)\s*[:：]")


def _syntax_error(exc: UnexpectedInput, subject: str) -> SubjectError:
    """Explain a lark error in words a sender understands."""
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = set(exc.expected)
        if token.type == "$END":
            column = len(subject.rstrip()) + 1
            return _explain(subject, column, "", "$END", expected)
        return _explain(subject, token.start_pos + 1, token.value, token.type, expected)
    assert isinstance(exc, UnexpectedCharacters)
    pos = exc.pos_in_stream
    return _explain(subject, pos + 1, subject[pos], "CHAR", set(exc.allowed))


def _explain(subject: str, column: int, value: str, kind: str, expected: set[str]) -> SubjectError:
    text = value.strip().split()[0] if value.strip() else value
    text = text[:40]
    first = text[:1]
    if kind in ("NAME", "CHAR") and first:
        # The contextual lexer's fallback reads almost anything as NAME: look closer.
        if _matches("NETWORK", text):
            kind = "NETWORK"
        else:
            kind = next((name for name in ("_DASH", "PLUS") if _matches(name, first)), kind)
    if kind in ("_DASH", "PLUS", "_SEMI") or first in _COMMAS:
        text = first
    at_start = "NETWORK" in expected and "DIGITS" in expected
    in_number = "_DASH" in expected or ("DIGITS" in expected and not at_start)
    if kind in ("$END", "_SEMI") and "DIGITS" in expected and not at_start:
        return SubjectError(
            "a number is missing",
            column,
            text,
            f"After '-' or '+' comes the next part of the number: country-area-number, "
            f"e.g. {_EXAMPLE}",
        )
    if first and first in _COMMAS:
        return SubjectError(
            "recipients are separated by ';'", column, text, "Write e.g. 755-83235170; 755-83235180"
        )
    if first and first in _BRACKETS:
        return SubjectError(
            "brackets in a number",
            column,
            text,
            "Separate the area code with '-' instead, e.g. 755-83235170",
        )
    if kind == "PLUS":
        return SubjectError(
            "'+' can only start an international number",
            column,
            text,
            "Write e.g. +8675583235170 or 86-755-83235170",
        )
    if kind == "_DASH":
        if at_start:
            return SubjectError(
                "a recipient cannot start with '-'",
                column,
                text,
                f"Write country-area-number, e.g. {_EXAMPLE}",
            )
        return SubjectError(
            "too many '-'",
            column,
            text,
            "A fax number has at most three parts: country-area-number, e.g. 86-755-83235170",
        )
    if kind == "_SLASH":
        if at_start:
            return SubjectError(
                "a name without a fax number",
                column,
                text,
                "Write the fax number or AF network number before '/', e.g. 83235170/金恒科技",
            )
        return SubjectError(
            "a second '/' in one recipient",
            column,
            text,
            "A name cannot contain ; / or |; separate recipients with ';'",
        )
    if kind == "PIPE":
        if "_SLASH" in expected:
            return SubjectError(
                "a second '|' before the names",
                column,
                text,
                "Write number|AF-network-number/name1|name2, e.g. 83235170|AF90000098/金恒科技|张三",
            )
        return SubjectError(
            "more than two names",
            column,
            text,
            "Write at most two names: /name1|name2; a name cannot contain ; / or |",
        )
    if kind == "NETWORK":
        return SubjectError(
            "a network number in the wrong place",
            column,
            text,
            "Write it after the fax number and '|', e.g. 83235170|AF90000098/金恒科技",
        )
    if (first.translate(_ASCII).isdigit() or kind == "DIGITS") and (
        in_number or "_SLASH" in expected
    ):
        return SubjectError(
            "digits separated by a space",
            column,
            text,
            "Separate country, area code and number with '-', e.g. 86-755-83235170; "
            "put a name after '/'",
        )
    if _AF_START.match(text):
        return SubjectError(
            "a network number needs digits",
            column,
            text,
            "A network number is AF followed by digits, e.g. AF90000098",
        )
    reply = _REPLY_PREFIX.match(subject, column - 1) if at_start else None
    if reply:
        return SubjectError(
            "a reply or forward prefix",
            column,
            reply.group(),
            "Remove it: the Subject names only the recipients, and a reply to a receipt "
            f"must not send the fax again. E.g. {_EXAMPLE}",
        )
    if at_start:
        return SubjectError(
            "a recipient starts with a fax number or AF network number",
            column,
            text,
            f"Write country-area-number/name, e.g. {_EXAMPLE}",
        )
    if "_SLASH" in expected:
        return SubjectError(
            "unexpected text after the number",
            column,
            text,
            "A fax number has only digits and '-'; put a name after '/', e.g. 83235170/金恒科技",
        )
    return SubjectError(
        "unexpected text",
        column,
        text,
        f"Write country-area-number/name, recipients separated by ';', e.g. {_EXAMPLE}",
    )


@functools.cache
def _terminal(name: str) -> re.Pattern[str]:
    return re.compile(_parser().get_terminal(name).pattern.to_regexp())


def _matches(terminal: str, text: str) -> bool:
    return _terminal(terminal).fullmatch(text) is not None


def _printable(text: str) -> str:
    """Show invisible characters as U+XXXX so the sender can find them."""
    return "".join(
        char if char.isprintable() and char != '"' else f"U+{ord(char):04X}" for char in text
    )
