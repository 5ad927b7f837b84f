"""The command-line boundary every tool shares: one-line usage errors, value parsers, and `run`.

A tool's `main(argv=None) -> int` parses its arguments and calls one library function through
`run`: a `SedDeployError` becomes one line on stderr and exit code 1 (with the traceback only under
--debug); Ctrl-C exits 130 and SIGTERM 143, after the job's `finally` blocks have removed what was
half-written. Any other exception is a bug and keeps its traceback. Warnings of the library
(`warnings.warn`, and `logging` records of WARNING and above) are printed as one `WARNING:` line each.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import traceback
import warnings
from collections.abc import Callable

from .errors import SedDeployError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors: `prog: error: what was wrong (see prog --help)`, exit code 2."""

    def error(self, message: str):
        line = " ".join(message.split())  # argparse wraps some messages over lines
        self.exit(2, f"{self.prog}: error: {line} (see {self.prog} --help)\n")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    group.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number from `low` to `high` (absurd values fail where they enter)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low:,} to {high:,}, got {value:,}")
        return value

    return parse


def comma_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated names, blanks dropped ("cuda, cpu" -> ("cuda", "cpu"))."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def positive_ints(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated whole numbers of at least 1 ("4,8,16")."""
    values = tuple(positive_int(part) for part in comma_list(text))
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 4,8,16, got {text!r}")
    return values


def choice_list(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """argparse type: a comma-separated list of some of `choices`."""

    def parse(text: str) -> tuple[str, ...]:
        values = comma_list(text)
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}, got {text!r}")
        return values

    return parse


def _warning_line(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"WARNING: {' '.join(str(message).split())}\n")


class _WarningLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"WARNING: {' '.join(record.getMessage().split())}\n")


class Terminated(BaseException):
    """SIGTERM arrived: unwinds the job like Ctrl-C, so staging folders and temporary files are removed."""


def _terminate(signum, frame):
    raise Terminated


def run(job: Callable[[], object], debug: bool = False) -> int:
    """Run `job`, turning user errors into one-line messages; returns the exit code.

    SIGTERM (and Ctrl-C) unwind the job through its `finally` blocks, so nothing half-written stays
    behind; the exit codes are 143 and 130 as a shell reports them.
    """
    warnings.showwarning = _warning_line
    library_log = logging.getLogger("sed_deploy")
    handler = _WarningLines(logging.WARNING)
    library_log.addHandler(handler)
    previous = None
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        previous = signal.signal(signal.SIGTERM, _terminate)
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
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    finally:
        library_log.removeHandler(handler)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
