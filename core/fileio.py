"""Atomic file writes, staging folders and locks: a file either appears complete under its final name or not at all.

`atomic_write` writes one file through a temporary name beside it. `StagingDir` is a hidden folder
for a set of files published together (an export, the results of an image); its owner holds a lock
(`filelock`, on `LOCK_NAME` inside it) for as long as it lives, so a later run can tell a folder left
behind by a killed process (no lock held: `reclaim_stale` removes it) from one still being written,
whatever happened to the process id. `folder_lock` serialises the runs that publish into one folder;
its lock file lives in the user's cache (`cache_root`), not in their folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import filelock

from .errors import ArtifactError

LOCK_NAME = ".lock"  # inside a staging folder: never published with its files


def cache_root() -> Path:
    """$SED_DEPLOY_CACHE, else $XDG_CACHE_HOME/sed-deploy, else ~/.cache/sed-deploy."""
    if "SED_DEPLOY_CACHE" in os.environ:
        return Path(os.environ["SED_DEPLOY_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "sed-deploy"


def _new_file(folder: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file with a random name, created with mode 0o666 so the kernel applies the process umask
    (mkstemp's 0600 would need the umask read back, which changes it for every thread meanwhile)."""
    for _ in range(100):
        name = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), str(name)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; rename it to `path` only if the block succeeds.

    On any exception the temporary file is removed and the previous `path` (if any) is untouched;
    an `OSError` (disk full, permission) becomes an `ArtifactError` with one line.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _new_file(path.parent, f".{path.name}.", ".partial")
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
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


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` while the block runs (waits for other holders). The lock file is
    keyed by the folder's real path in the cache, so the user's folder gets no extra file."""
    key = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:32]
    user = getattr(os, "getuid", lambda: "user")()
    # an unwritable cache costs nothing but time elsewhere, so the system's temporary folder stands in
    places = (cache_root() / "locks", Path(tempfile.gettempdir()) / f"sed-deploy-{user}-locks")
    for locks in places:
        try:
            locks.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(locks / f"{key}.lock")
            lock.acquire()
            break
        except OSError as exc:
            reason = exc.strerror or str(exc)
    else:
        raise ArtifactError(f"cannot create a lock file in {places[0]} or {places[1]}: {reason}; set "
                            "SED_DEPLOY_CACHE to a writable folder")
    try:
        yield
    finally:
        lock.release()


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
        self._lock: filelock.BaseFileLock | None = filelock.FileLock(starting / LOCK_NAME)
        self._lock.acquire()
        self.path = starting.with_suffix(".partial")
        os.rename(starting, self.path)  # the lock is held on the lock file's inode, which moves with it

    def close(self) -> None:
        """Remove the folder and what is left in it, then release the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

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
    with contextlib.suppress(OSError):
        candidates = [p for p in Path(parent).iterdir() if p.name.startswith(f".{prefix}-")
                      and p.name.endswith(".partial") and p.is_dir() and not p.is_symlink()]
        for path in candidates:
            lock = filelock.FileLock(path / LOCK_NAME, timeout=0)
            try:
                lock.acquire()
            except (filelock.Timeout, OSError):
                continue  # held: a live run is writing it
            try:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            finally:
                lock.release()
    return removed
