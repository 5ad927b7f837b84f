"""Progress display for long work: tqdm when it is installed, plain stderr lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from .optional import available, require

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True) -> Iterator[T]:
    """Iterate over `items` with a progress bar on stderr (silent when `enabled` is False)."""
    bar = Steps(total, desc, enabled)
    try:
        for item in items:
            yield item
            bar.advance()
    finally:
        bar.close()


class Steps:
    """A bar of `total` steps whose label can change (e.g. the stage being exported)."""

    def __init__(self, total: int | None, desc: str = "", enabled: bool = True) -> None:
        self.enabled, self.total, self.desc, self.done = enabled, total, desc, 0
        self._bar = None
        if enabled and available("tqdm"):
            self._bar = require("tqdm").tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)

    def label(self, desc: str) -> None:
        """Show what is being done now."""
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        if self._bar is not None:
            self._bar.update(steps)
        elif self.enabled:
            sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total if self.total is not None else '?'}")
            sys.stderr.flush()

    def write(self, line: str) -> None:
        """Print a line above the bar (to stdout)."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            if self.enabled and self.done:
                sys.stderr.write("\n")
            print(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.done:
            sys.stderr.write("\n")
            self.done = 0
