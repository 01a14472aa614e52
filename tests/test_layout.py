"""The package layout: one faxgate namespace that never shadows pymilter."""

from __future__ import annotations

import importlib
import subprocess
import sys


def test_import_milter_is_pymilter_c_extension() -> None:
    import milter

    assert milter.__file__.endswith(".so"), milter.__file__
    assert hasattr(milter, "register")
    import Milter

    assert Milter.__file__ and "site-packages" in Milter.__file__


def test_faxgate_subpackages_map_to_top_level_folders() -> None:
    for name, folder in [
        ("faxgate.milter", "milter"),
        ("faxgate.grammar", "grammar"),
        ("faxgate.faxd", "faxd"),
        ("faxgate.render", "render"),
    ]:
        module = importlib.import_module(name)
        assert module.__file__ is not None
        assert module.__file__.replace("\\", "/").endswith(f"/{folder}/__init__.py")


def test_console_entry_point_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "faxgate.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "config" in out
