"""Calling the ``bioplaus`` command line in-process from tests."""

from __future__ import annotations

from bioplaus.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``bioplaus ARGV``; return its exit status, stdout and stderr (argparse exits included)."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err
