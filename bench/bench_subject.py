"""Subject parsing speed: 10,000 typical Subjects, side by side with baselines.

    .venv/bin/python bench/bench_subject.py [--count N] [--repeat R]

Rows: faxgate's parse_subject (fast path + lark LALR, full validation and dial
strings); the same with the fast path switched off (lark LALR for every
Subject); a naive split-on-separators parser that validates nothing (the floor
any real parser is compared against). Best of R runs each.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections.abc import Callable
from unittest import mock

from faxgate.config import DialplanConfig
from faxgate.grammar import subject as subject_module
from faxgate.grammar.subject import parse_subject

PLAN = DialplanConfig(
    country_code="86",
    area_code="755",
    international_prefix="00",
    national_prefix="0",
    outside_line_prefix="",
)
NAMES = ["金恒科技", "傲发科技", "张三", "李四", "Acme Ltd", "深圳市某某有限公司", "王五"]


def typical_subjects(count: int, seed: int = 2026) -> list[str]:
    """Subjects shaped like the manual's examples, with what users type in practice mixed in."""
    rng = random.Random(seed)

    def number() -> str:
        return str(rng.randrange(20_000_000, 89_999_999))

    def recipient() -> str:
        name = rng.choice(NAMES)
        shape = rng.random()
        if shape < 0.30:
            return f"86-755-{number()}/{name}"
        if shape < 0.50:
            return f"{rng.choice(['10', '20', '21', '755'])}-{number()}/{name}"
        if shape < 0.62:
            return f"{number()}/{name}"
        if shape < 0.70:
            return f"86-755-{number()}|AF{rng.randrange(10**8):08d}/{name}|{rng.choice(NAMES)}"
        if shape < 0.76:
            return f"AF{rng.randrange(10**8):08d}/{name}"
        if shape < 0.84:
            return f"+86 755 {number()}/{name}"
        if shape < 0.92:
            return f"８６－７５５－{number()}／{name}"  # full-width input method
        return f"852-0-{number()}/{name}"

    subjects = []
    for _ in range(count):
        k = 1 if rng.random() < 0.7 else rng.randint(2, 4)
        subjects.append("; ".join(recipient() for _ in range(k)))
    return subjects


_NAIVE_PHONE = re.compile(r"(?:(\d+)-)?(?:(\d+)-)?(\d+)")


def naive_parse(subject: str) -> list[tuple[str | None, ...]]:
    """Split on the separators, no validation, no full-width or '+' support."""
    out = []
    for part in subject.split(";"):
        part = part.strip()
        if not part:
            continue
        address, _, names = part.partition("/")
        number, _, network = address.partition("|")
        name1, _, name2 = names.partition("|")
        m = _NAIVE_PHONE.match(number.strip())
        out.append((*(m.groups() if m else (None, None, None)), network, name1, name2))
    return out


def best_time(func: Callable[[str], object], subjects: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for text in subjects:
            func(text)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--count", type=int, default=10_000)
    args.add_argument("--repeat", type=int, default=5)
    opts = args.parse_args()

    subjects = typical_subjects(opts.count)
    start = time.perf_counter()
    subject_module._parser()
    build = time.perf_counter() - start
    fast_share = sum(subject_module._fast_raws(s) is not None for s in subjects) / len(subjects)

    def faxgate(text: str) -> object:
        return parse_subject(text, PLAN)

    ours = best_time(faxgate, subjects, opts.repeat)
    with mock.patch.object(subject_module, "_fast_raws", return_value=None):
        lark_only = best_time(faxgate, subjects, opts.repeat)
    naive = best_time(naive_parse, subjects, opts.repeat)

    n = len(subjects)
    print(f"{n} subjects, best of {opts.repeat}; parser built once in {build * 1000:.0f} ms")
    print(f"fast path took {fast_share:.0%} of the subjects")
    print(f"{'parser':<34}{'seconds':>9}{'subjects/s':>12}{'vs faxgate':>12}")
    for label, seconds in [
        ("faxgate parse_subject", ours),
        ("faxgate, lark LALR only", lark_only),
        ("naive split (no validation)", naive),
    ]:
        print(f"{label:<34}{seconds:>9.3f}{n / seconds:>12,.0f}{seconds / ours:>11.2f}x")


if __name__ == "__main__":
    main()
