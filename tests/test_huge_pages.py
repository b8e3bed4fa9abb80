"""Huge pages are an explicit opt-in: importing bioplaus changes no environment variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bioplaus.cli import build_parser
from bioplaus.huge_pages import ENV

ROOT = Path(__file__).resolve().parent.parent
ALIGNED = "all(t.data_ptr() % 4096 == 0 for t in [torch.empty(2**21, dtype=torch.uint8) for _ in range(3)])"


def python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter without THP_MEM_ALLOC_ENABLE in its environment."""
    clean = {k: v for k, v in os.environ.items() if k != ENV} | (env or {})
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=clean, cwd=ROOT)


def test_importing_bioplaus_leaves_the_environment_unchanged():
    done = python(
        "import json, os; before = dict(os.environ); import bioplaus, bioplaus.cli; "
        "print(json.dumps([before, dict(os.environ)]))"
    )
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout)
    assert before == after and ENV not in after


def test_enable_after_import_works_until_the_first_tensor():
    done = python(f"import os, torch, bioplaus; bioplaus.enable_huge_pages(); print(os.environ['{ENV}'], {ALIGNED})")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True"]
    plain = python(f"import torch, bioplaus; print({ALIGNED})")
    assert plain.stdout.split() == ["False"]  # without the opt-in, PyTorch does not page-align them


def test_enable_after_a_tensor_is_too_late_and_says_so():
    done = python("import torch, bioplaus; torch.zeros(1); bioplaus.enable_huge_pages()")
    assert done.returncode != 0
    assert "came before enable_huge_pages(); call it before creating any tensor" in done.stderr
    assert f"{ENV}=1" in done.stderr


@pytest.mark.parametrize("command", [["compare"], ["run", "x.toml"], ["sweep", "x.toml"]])
def test_the_flag_is_on_compare_run_and_sweep(command):
    assert build_parser().parse_args([*command, "--huge-pages"]).huge_pages
    assert not build_parser().parse_args(command).huge_pages


SWEEP_SCRIPT = """
import os, sys
from pathlib import Path

import torch

import bioplaus
from bioplaus.cli import main


@bioplaus.rules.register("record_huge_pages")
class Record(bioplaus.rules.Backprop):
    \"\"\"BP that writes, once per process, whether huge pages are on there.\"\"\"

    def update(self, model, ctx):
        probe = [torch.empty(2**21, dtype=torch.uint8) for _ in range(3)]
        aligned = all(t.data_ptr() % 4096 == 0 for t in probe)
        line = f"{os.environ.get('THP_MEM_ALLOC_ENABLE')} {aligned}"
        Path(os.environ["RECORD_DIR"], str(os.getpid())).write_text(line)
        super().update(model, ctx)


if __name__ == "__main__":
    Path(os.environ["RECORD_DIR"], "main").write_text(str(os.getpid()))
    sys.exit(main(sys.argv[1:]))
"""


def test_sweep_workers_inherit_huge_pages(tmp_path):
    script, config, record = tmp_path / "sweep_script.py", tmp_path / "c.toml", tmp_path / "record"
    script.write_text(textwrap.dedent(SWEEP_SCRIPT))
    config.write_text(
        'task = "digits"\nrules = ["record_huge_pages"]\nepochs = 1\nbatch_size = 512\n[model_options]\nhidden = [8]\n'
    )
    record.mkdir()
    argv = ["sweep", str(config), "--out", str(tmp_path / "out"), "--seeds", "2", "--workers", "2", "--quiet"]
    done = subprocess.run(
        [sys.executable, str(script), *argv, "--huge-pages"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != ENV} | {"RECORD_DIR": str(record)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    main_pid = (record / "main").read_text()
    workers = {p.name: p.read_text() for p in record.iterdir() if p.name != "main"}
    assert workers and main_pid not in workers  # the runs ran in worker processes
    assert set(workers.values()) == {"1 True"}
