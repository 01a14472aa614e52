"""The dial plan: turn a recipient's country, area and number into the digits to dial.

Rules (issue 2), with ``plan`` the configured ``[dialplan]``:

- ``0-0-N`` (country ``0``): an internal extension; dial ``N`` as it is, with no
  outside-line prefix (an internal call does not leave the PBX) and no E.164 form.
- same country and same area: the number;
- same country, area ``0`` ("no area code"): the number, without national prefix,
  because the national prefix is what precedes an area code;
- same country, other area: national prefix + area + number;
- other country: international prefix + country + area (left out when ``0``) + number.

Every external call gets ``plan.outside_line_prefix`` in front.

``COUNTRY_CODES`` lists the assigned ITU-T E.164 country calling codes. They
form a prefix code (no code is the beginning of another), so the country of a
``+`` number is found by trying its first one, two and three digits.
"""

from __future__ import annotations

from faxgate.config import DialplanConfig

#: Longest international number allowed by ITU-T E.164, country code included.
E164_MAX_DIGITS = 15

INTERNAL_COUNTRY = "0"
NO_AREA = "0"

_CODES_BY_LENGTH = (
    "1 7",
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58"
    " 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98",
    "211 212 213 216 218 220 221 222 223 224 225 226 227 228 229"
    " 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 247 248 249"
    " 250 251 252 253 254 255 256 257 258 260 261 262 263 264 265 266 267 268 269"
    " 290 291 297 298 299 350 351 352 353 354 355 356 357 358 359"
    " 370 371 372 373 374 375 376 377 378 379 380 381 382 383 385 386 387 389"
    " 420 421 423 500 501 502 503 504 505 506 507 508 509"
    " 590 591 592 593 594 595 596 597 598 599"
    " 670 672 673 674 675 676 677 678 679 680 681 682 683 685 686 687 688 689 690 691 692"
    " 800 808 850 852 853 855 856 870 878 880 881 882 883 886"
    " 960 961 962 963 964 965 966 967 968 970 971 972 973 974 975 976 977 979"
    " 992 993 994 995 996 998",
)

#: Assigned country calling codes (ITU-T E.164 list, without spare codes).
COUNTRY_CODES: frozenset[str] = frozenset(" ".join(_CODES_BY_LENGTH).split())


def split_country_code(digits: str) -> tuple[str, str] | None:
    """Split international digits (after ``+``) into (country code, national number).

    None when no assigned country code begins the digits.
    """
    for length in (1, 2, 3):
        if digits[:length] in COUNTRY_CODES:
            return digits[:length], digits[length:]
    return None


def dial_string(country: str, area: str, number: str, plan: DialplanConfig) -> str:
    """The digits a modem dials for ``country-area-number`` under ``plan``."""
    if country == INTERNAL_COUNTRY:
        return number
    if country == plan.country_code:
        if area == plan.area_code or area == NO_AREA:
            digits = number
        else:
            digits = plan.national_prefix + area + number
    else:
        digits = plan.international_prefix + country + international_area(area) + number
    return plan.outside_line_prefix + digits


def e164(country: str, area: str, number: str) -> str | None:
    """The international form ``+<country><area><number>``; None for internal extensions."""
    if country == INTERNAL_COUNTRY:
        return None
    return "+" + country + international_area(area) + number


def international_area(area: str) -> str:
    """The area digits as written after the country code (none for area ``0``)."""
    return "" if area == NO_AREA else area
