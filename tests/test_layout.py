"""The package layout, setup and entry point: one faxgate namespace that never shadows pymilter."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from faxgate import cli

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
FAXGATE = Path(sys.executable).parent / "faxgate"
# pymilter's top-level modules: nothing of ours may be importable under these names.
PYMILTER_NAMES = ("milter", "Milter", "mime")


def test_import_milter_is_pymilter_c_extension() -> None:
    import milter

    assert milter.__file__.endswith(".so"), milter.__file__
    assert hasattr(milter, "register") and hasattr(milter, "main")
    import Milter
    import mime

    for module in (milter, Milter, mime):
        assert module.__file__ and "site-packages" in module.__file__, module.__file__
        assert not Path(module.__file__).resolve().is_relative_to(REPO / "milter")


def test_python_m_from_the_repository_root_still_gets_pymilter(tmp_path: Path) -> None:
    """``python -m faxgate.cli`` puts the working directory on sys.path; our milter/ must not
    shadow pymilter then. The milter command imports Milter before it reads the config."""
    result = subprocess.run(
        [sys.executable, "-m", "faxgate.cli", "--config", str(tmp_path / "absent.toml"), "milter"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2 and "configuration file not found" in result.stderr


def test_nothing_of_ours_installs_under_a_pymilter_name() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    for package in [*setuptools["packages"], *setuptools["package-dir"]]:
        assert package == "faxgate" or package.startswith("faxgate."), package
    assert not set(PYMILTER_NAMES) & set(setuptools["packages"])


def test_faxgate_subpackages_map_to_top_level_folders() -> None:
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for name, folder in [
        ("faxgate", "faxgate"),
        ("faxgate.milter", "milter"),
        ("faxgate.grammar", "grammar"),
        ("faxgate.faxd", "faxd"),
        ("faxgate.render", "render"),
        ("faxgate.simline", "simline"),
    ]:
        assert mapping[name] == folder
        module = importlib.import_module(name)
        assert Path(module.__file__) == REPO / folder / "__init__.py"
    assert list((REPO / "grammar").glob("*.lark")), "the grammar is a .lark file in grammar/"
    for folder in ("tests", "deploy/postfix", "bench"):
        assert (REPO / folder).is_dir(), folder


def test_python_and_the_design_dependencies() -> None:
    assert sys.version_info >= (3, 11)
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    declared = {
        re.split(r"[<>=!~ \[]", dep, maxsplit=1)[0].lower()
        for dep in PYPROJECT["project"]["dependencies"]
    }
    design = {
        "pymilter": "milter",
        "pyserial": "serial",
        "pypdf": "pypdf",
        "pillow": "PIL",
        "lark": "lark",
        "sqlite-utils": "sqlite_utils",
    }
    assert set(design) <= declared
    for distribution, module in design.items():
        assert importlib.metadata.version(distribution)
        importlib.import_module(module)
    assert {"pytest", "hypothesis", "ruff"} <= {
        re.split(r"[<>=!~ ]", dep, maxsplit=1)[0]
        for dep in PYPROJECT["project"]["optional-dependencies"]["test"]
    }


def test_one_console_entry_point_with_every_subcommand() -> None:
    assert PYPROJECT["project"]["scripts"] == {"faxgate": "faxgate.cli:main"}
    installed = [
        ep for ep in importlib.metadata.entry_points(group="console_scripts")
        if ep.dist is not None and ep.dist.name == "faxgate"
    ]  # fmt: skip
    assert [(ep.name, ep.value) for ep in installed] == [("faxgate", "faxgate.cli:main")]
    result = subprocess.run(
        [str(FAXGATE), "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    listed = re.findall(r"^    (\w+) ", result.stdout, re.M)
    assert listed == list(cli.COMMANDS), result.stdout


def _readme_test_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Run the tests", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_says_what_faxgate_is_and_ci_runs_its_one_test_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    intro = readme.split("\n## ", 1)[0]
    assert all(word in intro for word in ("e-mail", "fax", "Postfix", "milter", "faxd")), intro
    [command] = _readme_test_commands()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    steps = [
        line
        for line in ci.splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert steps == [command]
    assert os.access(REPO / ".ci" / "run", os.X_OK)


# ---- bootstrap ----------------------------------------------------------------------------

STUBS = {
    # Reports every package installed except those named in $MISSING.
    "dpkg-query": 'for m in $MISSING; do [ "$m" = "$3" ] && exit 1; done\n'
    "printf 'install ok installed'\n",
    "apt-get": 'echo "$DEBIAN_FRONTEND apt-get $*" >> "$LOG"\n',
    "debconf-set-selections": 'echo "debconf $(cat)" >> "$LOG"\n',
    # Stands in for the system python3: checks the version, makes a venv of stubs.
    "python3": 'echo "python3 $1 $2" >> "$LOG"\n'
    'if [ "$1" = --version ]; then echo "Python 3.9.2"; exit 0; fi\n'
    'if [ "$1" = -c ] && [ -n "$OLD_PYTHON" ]; then exit 1; fi\n'
    'if [ "$1" = -m ] && [ "$2" = venv ]; then\n'
    "  rm -rf .venv && mkdir -p .venv/bin\n"
    '  printf \'#!/bin/sh\\necho "venv-python $*" >> "$LOG"\\n\' > .venv/bin/python\n'
    '  printf \'#!/bin/sh\\necho "pip $*" >> "$LOG"\\n\' > .venv/bin/pip\n'
    "  chmod +x .venv/bin/python .venv/bin/pip\n"
    "fi\n",
}


@pytest.fixture
def fresh_machine(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the repository's bootstrap with apt, dpkg and python replaced by loggers."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "bootstrap.sh", repo / "scripts" / "bootstrap.sh")
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\n', encoding="utf-8")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in STUBS.items():
        path = stubs / name
        path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "LOG": str(tmp_path / "log"),
        "MISSING": "",
        "PYTHON": "python3",
    }
    return repo, env


def bootstrap(repo: Path, env: dict[str, str], **extra: str) -> tuple[int, list[str], str]:
    log = Path(env["LOG"])
    log.unlink(missing_ok=True)
    result = subprocess.run(
        ["bash", str(repo / "scripts" / "bootstrap.sh")],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return result.returncode, lines, result.stdout + result.stderr


def test_bootstrap_on_a_fresh_debian_machine(fresh_machine: tuple[Path, dict[str, str]]) -> None:
    repo, env = fresh_machine
    code, log, output = bootstrap(repo, env, MISSING="postfix python3-venv libmilter-dev")
    assert code == 0, output
    assert log == [
        # postfix would ask what kind of mail server this is: answered before installing.
        "debconf postfix postfix/main_mailer_type select No configuration",
        "noninteractive apt-get update -q",
        "noninteractive apt-get install -y -q --no-install-recommends "
        "postfix libmilter-dev python3-venv",
        "python3 -c import sys; sys.exit(sys.version_info < (3, 11))",
        "python3 -m venv",
        "pip install -q --upgrade pip",
        "pip install -q -e .[test]",
    ]
    stamp = (repo / ".venv" / ".faxgate-installed").read_text(encoding="utf-8").strip()
    assert stamp == hashlib.sha256((repo / "pyproject.toml").read_bytes()).hexdigest()


def test_bootstrap_again_only_checks(fresh_machine: tuple[Path, dict[str, str]]) -> None:
    repo, env = fresh_machine
    assert bootstrap(repo, env)[0] == 0
    code, log, output = bootstrap(repo, env)
    assert code == 0 and output.strip() == "bootstrap: ready (.venv)"
    assert log == [
        "python3 -c import sys; sys.exit(sys.version_info < (3, 11))",
        "venv-python -c import faxgate",
    ]
    # A changed pyproject.toml (a new dependency) installs again; apt stays untouched.
    (repo / "pyproject.toml").write_text('[project]\nname = "y"\n', encoding="utf-8")
    code, log, _ = bootstrap(repo, env)
    assert code == 0 and "pip install -q -e .[test]" in log
    assert not any("apt-get" in line for line in log)


def test_bootstrap_redoes_a_half_made_venv(fresh_machine: tuple[Path, dict[str, str]]) -> None:
    """Without python3-venv, ``python3 -m venv`` leaves a venv with python and no pip."""
    repo, env = fresh_machine
    assert bootstrap(repo, env)[0] == 0
    (repo / ".venv" / "bin" / "pip").unlink()
    code, log, _ = bootstrap(repo, env)
    assert code == 0
    assert "python3 -m venv" in log and "pip install -q -e .[test]" in log


def test_bootstrap_refuses_an_old_python(fresh_machine: tuple[Path, dict[str, str]]) -> None:
    repo, env = fresh_machine
    code, log, output = bootstrap(repo, env, OLD_PYTHON="1")
    assert code == 1
    assert "needs Python >= 3.11, python3 is Python 3.9.2" in output
    assert not (repo / ".venv").exists()


def test_real_bootstrap_is_idempotent_and_quick() -> None:
    """Run twice: the first brings this checkout up to date, the second must only check."""
    script = REPO / "scripts" / "bootstrap.sh"
    first = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    started = time.monotonic()
    second = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "bootstrap: ready (.venv)"
    assert elapsed < 5, f"second bootstrap took {elapsed:.1f} s"
