"""Progress bars for long work, on stderr (tqdm, a dependency of every install)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

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
        self.total, self.desc, self.done = total, desc, 0
        self._bar: tqdm | None = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr,
                                      disable=not enabled)

    def label(self, desc: str) -> None:
        """Show what is being done now."""
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        if self._bar is not None:
            self._bar.update(steps)

    def write(self, line: str) -> None:
        """Print a line above the bar (to stdout)."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
