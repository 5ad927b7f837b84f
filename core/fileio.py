"""Atomic file writes and staging folders: a file either appears complete under its final name or not at all.

`atomic_write` writes one file through a temporary name beside it. `StagingDir` is a hidden folder
for a set of files published together (an export, the results of an image); its owner holds an
exclusive `flock` on it for as long as it lives, so a later run can tell a folder left behind by a
killed process (no lock held: `reclaim_stale` removes it) from one still being written, whatever
happened to the process id.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ArtifactError

try:  # POSIX; elsewhere stale staging folders are never reclaimed automatically
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; rename it to `path` only if the block succeeds.

    On any exception the temporary file is removed and the previous `path` (if any) is untouched;
    an `OSError` (disk full, permission) becomes an `ArtifactError` with one line.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ArtifactError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def fsync_dir(path: str | Path) -> None:
    """Make the renames inside a folder durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _try_lock(fd: int, shared: bool = False, wait: bool = False) -> bool:
    if fcntl is None:
        return True
    flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `folder` itself while the block runs (waits for other holders)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        _try_lock(fd, wait=True)
        yield
    finally:
        os.close(fd)  # releases the lock


class StagingDir:
    """A hidden folder `<parent>/.<prefix>-<pid>-<random>.partial`, locked by this process until `close`.

    Args:
        parent: where to create it (the folder its files are published into: renames stay on one
            file system).
        prefix: names the kind of staging folder (e.g. "export", "sed-segment").
    """

    def __init__(self, parent: str | Path, prefix: str) -> None:
        # made under another suffix and locked before it gets the name `reclaim_stale` looks for, so
        # no other run can take it for a stale one in between
        starting = Path(tempfile.mkdtemp(prefix=f".{prefix}-{os.getpid()}-", suffix=".starting", dir=parent))
        self._fd: int | None = os.open(starting, os.O_RDONLY)
        _try_lock(self._fd)
        self.path = starting.with_suffix(".partial")
        os.rename(starting, self.path)

    def close(self) -> None:
        """Remove the folder and what is left in it, then release the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StagingDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reclaim_stale(parent: str | Path, prefix: str) -> list[Path]:
    """Remove staging folders of `prefix` in `parent` that no live process holds; returns them.

    A folder whose lock can be taken was left by a process that died (SIGKILL, power loss): its
    files were never published, so nothing of value is lost.
    """
    removed = []
    if fcntl is None:
        return removed
    with contextlib.suppress(OSError):
        candidates = [p for p in Path(parent).iterdir() if p.name.startswith(f".{prefix}-")
                      and p.name.endswith(".partial") and p.is_dir() and not p.is_symlink()]
        for path in candidates:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if _try_lock(fd):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            finally:
                os.close(fd)
    return removed
