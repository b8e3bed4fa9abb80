"""The README's example runs, and CI runs the README's test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_command(name: str) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "readme_command.py"), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command.py test-command" in ci and 'bash -c "$test_command"' in ci
    command = readme_command("test-command")
    assert "pip install torch==2.13.0" in command and command.index("torch==2.13.0") < command.index(".[dev]")
    main = readme_command("main-command")
    assert "bioplaus compare --task fashion-mnist" in main and "torch==2.13.0" in main
    for line in (command, main):  # a stock Debian's pip refuses system installs: both use a virtual environment
        venv = "python3 -m venv .venv && . .venv/bin/activate"
        assert venv in line and line.index(venv) < line.index("pip install") and "python3-venv" in line


def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.+?)\n```", text, re.S).group(1)
    assert len(code.splitlines()) <= 25
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", "--stdin-filename", "readme.py", "-"],
        input=code,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout  # no unused imports or undefined names
    done = subprocess.run(
        [sys.executable, "-c", "import matplotlib; matplotlib.use('Agg')\n" + code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "±" in done.stdout  # the comment promises mean ± sd per rule
    assert "plain_sign" in done.stdout and (tmp_path / "runs" / "digits" / "figure.png").exists()
