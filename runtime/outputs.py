"""The result files of segmented images: all of an image's files or none, never over a file of the user's.

For an image the writer publishes `BASE_labels.png`, `BASE_overlay.png` and `BASE.json` together:

- **names**: BASE is the image's stem; when two inputs of a run share a stem (`a.jpg`, `a.png`) each
  gets its extension (`a_jpg`, `a_png`), and a name still taken gets `_2`, `_3`, ... in input order.
  Names are compared case-folded and NFC-normalised (case-insensitive file systems), and no output
  is ever the path of an input of the run.
- **never over a user's file**: an existing file under an output name is replaced only if
  sed-segment wrote it for the same input file (each PNG carries a text chunk and the JSON a field
  naming its input, see `SOURCE_KEY`). Otherwise the next free name is taken (`a_2`, ...), so a
  user's `manifest.json`, an input `p_overlay.png` or another run's results are never touched.
- **all or nothing**: the files are written and fsynced in a locked staging folder inside the output
  folder, then renamed into place under an exclusive lock on the output folder (concurrent runs
  publish one image at a time), the JSON last and the old JSON removed first: a JSON means its
  image's set is complete, even after kill -9. If a rename fails, those already made are rolled
  back. A staging folder left by a killed run is removed by the next run.
- a write that fails (disk full, no permission) raises `OutputError` with one line; nothing of that
  image is left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, PngImagePlugin

from sed_deploy.core.errors import SedDeployError
from sed_deploy.core.fileio import StagingDir, folder_lock, fsync_dir, reclaim_stale

WRITER = "sed-segment"
SOURCE_KEY = "sed-segment:source"  # PNG text chunk holding the resolved path of the input image
KINDS = {"labels": "_labels.png", "overlay": "_overlay.png", "json": ".json"}  # kind -> suffix after BASE
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PROBE_BYTES = 1 << 16  # PNG text chunks are read from the first 64 KiB only
_MAX_JSON_BYTES = 16 << 20


class OutputError(SedDeployError):
    """Results that cannot be written (folder unusable, disk full, permission)."""


def name_key(name: str) -> str:
    """How a file system that ignores case and Unicode composition would see `name`."""
    return unicodedata.normalize("NFC", name).casefold()


def source_id(image: str | Path) -> str:
    """The identity of an input recorded in its outputs: its resolved absolute path."""
    try:
        return str(Path(image).resolve())
    except (OSError, RuntimeError):  # a symlink loop: the path as given
        return os.path.abspath(image)


def plan_bases(images: Sequence[str | Path]) -> list[str]:
    """The output BASE of each input: stem, or stem_ext when stems collide, then _2, _3 ... until unique."""
    paths = [Path(p) for p in images]
    counts: dict[str, int] = {}
    for path in paths:
        counts[name_key(path.stem)] = counts.get(name_key(path.stem), 0) + 1
    natural = []
    for path in paths:
        base = path.stem or path.name or "image"
        if counts[name_key(path.stem)] > 1 and path.suffix:
            base = f"{path.stem}_{path.suffix[1:]}"
        natural.append(base)
    taken: set[str] = set()
    reserved = {name_key(b) for b in natural}
    bases = []
    for base in natural:
        chosen = base
        n = 1
        while name_key(chosen) in taken or (chosen != base and name_key(chosen) in reserved):
            n += 1
            chosen = f"{base}_{n}"
        taken.add(name_key(chosen))
        bases.append(chosen)
    return bases


def encode_png(image: Image.Image, source: str) -> bytes:
    """PNG bytes of `image`, with a text chunk naming the input it was computed from."""
    info = PngImagePlugin.PngInfo()
    info.add_text(SOURCE_KEY, source)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def written_for(path: Path, source: str) -> bool | None:
    """None if `path` does not exist; True if sed-segment wrote it for `source`; False otherwise.

    Never follows a symlink and never opens anything but a regular file (a FIFO would block).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(_PROBE_BYTES if path.suffix == ".png" else _MAX_JSON_BYTES + 1)
    except OSError:
        return False
    if path.suffix == ".png":
        return _png_source(head) == source
    try:
        data = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("written_by") == WRITER and data.get("source") == source


def _png_source(head: bytes) -> str | None:
    if not head.startswith(_PNG_SIGNATURE):
        return None
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(head):
        length = int.from_bytes(head[pos : pos + 4], "big")
        kind = head[pos + 4 : pos + 8]
        data = head[pos + 8 : pos + 8 + length]
        if kind == b"tEXt" and b"\0" in data:
            key, _, value = data.partition(b"\0")
            if key.decode("latin-1") == SOURCE_KEY:
                return value.decode("latin-1")
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _backup(target: Path, backup: Path) -> Path:
    """A copy of `target` to restore on failure: a hard link where the file system has them."""
    try:
        os.link(target, backup, follow_symlinks=False)
    except OSError:
        shutil.copyfile(target, backup, follow_symlinks=False)
    return backup


def check_output_folder(folder: str | Path) -> Path:
    """`folder` as a Path; `OutputError` if a file stands where it or one of its parents should be."""
    path = Path(folder)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            what = "is an existing file, not a folder" if part == path else f"is inside the file {part}"
            raise OutputError(f"output folder {path} {what}; give a folder with -o")
        if part.exists():
            break
    return path


def _missing_folders(folder: Path) -> list[Path]:
    """The folders that creating `folder` would make, deepest first."""
    missing = []
    for part in (folder, *folder.parents):
        if os.path.lexists(part):
            break
        missing.append(part)
    return missing


class OutputFolder:
    """Where a run publishes the results of its images.

    Args:
        folder: the output folder (created if missing).
        inputs: every input image of the run (their outputs never take an input's path).
    """

    def __init__(self, folder: str | Path, inputs: Sequence[str | Path] = ()) -> None:
        self.folder = check_output_folder(folder)
        self._created = _missing_folders(self.folder)  # removed again by close() if nothing was published
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            reclaim_stale(self.folder, WRITER)
            self._staging: StagingDir | None = StagingDir(self.folder, WRITER)
        except OSError as exc:
            raise OutputError(f"cannot write to the output folder {self.folder}: {exc.strerror or exc}") from None
        self.bases = plan_bases(inputs)
        self._inputs = {source_id(p) for p in inputs}
        self._planned = {name_key(b) for b in self.bases}
        self._count = 0
        self._published = 0

    def write(self, source: str | Path, base: str, pngs: Mapping[str, bytes], summary: dict) -> dict[str, Path]:
        """Publish the files of one image; returns kind -> path of the files written.

        Args:
            source: the input image (path); recorded in every file.
            base: its planned BASE (`self.bases[i]`); a later free name if that one is taken.
            pngs: "labels" and "overlay" -> PNG bytes made with `encode_png(..., source_id(source))`.
            summary: the JSON content; `written_by`, `source` and `outputs` are added.

        Raises:
            OutputError: the files cannot be written; nothing of this image is left behind.
        """
        if self._staging is None:
            raise OutputError("this output folder was closed")
        ident = source_id(source)
        self._count += 1
        staged = {kind: self._stage(f"{self._count}-{kind}", data) for kind, data in pngs.items()}
        with folder_lock(self.folder):
            chosen = self._free_base(base, ident)
            names = {kind: f"{chosen}{suffix}" for kind, suffix in KINDS.items()}
            record = {**summary, "written_by": WRITER, "source": ident, "outputs": names}
            text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
            staged["json"] = self._stage(f"{self._count}-json", text.encode("utf-8"))
            self._publish(staged, {kind: self.folder / name for kind, name in names.items()})
        self._published += 1
        return {kind: self.folder / name for kind, name in names.items()}

    def _stage(self, name: str, data: bytes) -> Path:
        path = self._staging.path / name
        try:
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            raise OutputError(f"cannot write results into {self.folder}: {exc.strerror or exc}") from None
        return path

    def _free_base(self, base: str, ident: str) -> str:
        """`base` if its files are absent or this run's own for `ident`, else base_2, base_3, ..."""
        candidate, n = base, 1
        while True:
            paths = [self.folder / f"{candidate}{suffix}" for suffix in KINDS.values()]
            clash = any(source_id(p) in self._inputs for p in paths)
            other = candidate != base and name_key(candidate) in self._planned
            if not clash and not other and all(written_for(p, ident) in (None, True) for p in paths):
                return candidate
            n += 1
            candidate = f"{base}_{n}"
            if n > 10_000:
                raise OutputError(f"no free output name for {base} in {self.folder}")

    def _publish(self, staged: dict[str, Path], targets: dict[str, Path]) -> None:
        """Rename the staged files into place, JSON last; undo every rename made if one fails."""
        backups: dict[str, Path] = {}
        done: list[str] = []
        try:
            for kind, target in targets.items():
                if os.path.lexists(target):
                    backups[kind] = _backup(target, staged[kind].with_name(staged[kind].name + ".old"))
            if "json" in backups:
                os.unlink(targets["json"])  # no JSON while the set is being replaced
            for kind in ("labels", "overlay", "json"):
                os.replace(staged[kind], targets[kind])
                done.append(kind)
        except BaseException as exc:  # a failed rename, or SIGTERM / Ctrl-C in the middle: undo what was done
            self._roll_back(done, backups, targets)
            if not isinstance(exc, OSError):
                raise
            raise OutputError(f"cannot write {targets['json'].name} and its images into {self.folder}: "
                              f"{exc.strerror or exc}; nothing of it was written") from None
        fsync_dir(self.folder)

    @staticmethod
    def _roll_back(done: list[str], backups: dict[str, Path], targets: dict[str, Path]) -> None:
        for kind in (*reversed(done), *(k for k in ("json",) if k not in done)):
            with contextlib.suppress(OSError):
                if kind in backups:
                    os.replace(backups[kind], targets[kind])
                elif kind in done:
                    os.unlink(targets[kind])

    def close(self) -> None:
        """Remove the staging folder (whatever is left in it was never published), and the output
        folders this run created if it published nothing: a failed run leaves no empty folder behind."""
        if self._staging is not None:
            self._staging.close()
            self._staging = None
            if not self._published:
                for made in self._created:  # deepest first; a folder someone else filled meanwhile stays
                    with contextlib.suppress(OSError):
                        made.rmdir()

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
