"""Progress bars for long work: tqdm when it is installed, a plain stderr line otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from .optional import available, require

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", enabled: bool = True) -> Iterator[T]:
    """Iterate over `items` with a progress bar on stderr (silent when `enabled` is False)."""
    if not enabled:
        yield from items
        return
    if available("tqdm"):
        yield from require("tqdm").tqdm(items, total=total, desc=desc, leave=False, dynamic_ncols=True)
        return
    count = 0
    for count, item in enumerate(items, start=1):
        yield item
        sys.stderr.write(f"\r{desc}: {count}/{total if total is not None else '?'}")
        sys.stderr.flush()
    if count:
        sys.stderr.write("\n")
