"""The systemd units in deploy/systemd: valid for systemd, runnable by our CLI, and in step with
the nginx site file (loopback only, the ports nginx proxies to)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .stack import REPO, SITE

UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
INSTALLED = "/opt/fracturescan/.venv/bin/fracturescan"


def _exec_start(unit: Path) -> list[str]:
    [line] = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_units_for_the_app_and_the_api() -> None:
    commands = {_exec_start(unit)[1] for unit in UNITS}
    assert commands == {"app", "serve"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze (Debian's systemd package)")
    # The same unit, pointing at this environment's installed command instead of /opt.
    here = Path(sys.executable).parent / "fracturescan"
    if not here.is_file():
        pytest.skip(f"the fracturescan console script is not installed next to {sys.executable}")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED, str(here)))
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    # verify only warns about unknown keys; any remark about our file counts as a failure.
    remarks = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    assert result.returncode == 0 and not remarks, result.stdout + result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_command_line_is_accepted_and_matches_the_proxy(unit: Path) -> None:
    from typer.main import get_command

    from fracturescan.cli.main import app

    args = _exec_start(unit)
    assert args[0] == INSTALLED
    root = get_command(app)
    sub = root.get_command(root.make_context("fracturescan", args[1:2]), args[1])
    params = sub.make_context(args[1], args[2:]).params  # raises on an unknown or malformed option
    assert params["host"] == "127.0.0.1"  # only the proxy is reachable from the network
    upstream = "fracturescan_app" if args[1] == "app" else "fracturescan_api"
    block = re.search(rf"upstream {upstream} {{\s*server 127\.0\.0\.1:(\d+);", SITE.read_text())
    assert block and int(block.group(1)) == params["port"]
    assert ":" not in params["db"].split("://", 1)[1].split("@")[0]  # no password on the command line
