"""What every command-line tool shares: common options and the error boundary.

A tool's `main(argv=None) -> int` parses its arguments and calls one library function through
`run`: a `SedDeployError` becomes one line on stderr and exit code 1 (with the traceback only under
--debug); Ctrl-C exits 130. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Callable

from .errors import SedDeployError


def add_common_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    group.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _warning_line(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"WARNING: {message}\n")


def run(job: Callable[[], object], debug: bool = False) -> int:
    """Run `job`, turning user errors into one-line messages; returns the exit code."""
    warnings.showwarning = _warning_line
    try:
        job()
    except SedDeployError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
