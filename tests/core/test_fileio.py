"""core.fileio: atomic writes get the umask's permissions without touching the umask, staging folders are
locked by their owner and reclaimed only when stale, and the publish lock leaves the user's folder alone."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from sed_deploy.core import fileio


def test_atomic_write_applies_the_umask_and_never_changes_it(tmp_path):
    previous = os.umask(0o027)
    try:
        with fileio.atomic_write(tmp_path / "a.bin") as f:
            f.write(b"x")
        assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
        assert os.umask(0o027) == 0o027  # still what this test set: nobody changed it in between
    finally:
        os.umask(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_importing_fileio_leaves_the_umask_alone():
    code = "import os; os.umask(0o077); import sed_deploy.core.fileio; print(oct(os.umask(0)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "0o77"


def test_a_live_staging_folder_is_kept_and_a_stale_one_reclaimed(tmp_path):
    live = fileio.StagingDir(tmp_path, "job")
    (live.path / "part").write_bytes(b"1")
    assert fileio.reclaim_stale(tmp_path, "job") == [] and live.path.is_dir()
    stale = tmp_path / ".job-1-dead.partial"  # what a SIGKILLed run leaves: nobody holds its lock
    stale.mkdir()
    (stale / "part").write_bytes(b"2")
    assert fileio.reclaim_stale(tmp_path, "job") == [stale] and not stale.exists()
    live.close()
    assert list(tmp_path.iterdir()) == []


def test_the_folder_lock_serialises_and_leaves_no_file_in_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SED_DEPLOY_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "out"
    folder.mkdir()
    order = []

    def hold(name):
        with fileio.folder_lock(folder):
            order.append(f"{name}+")
            threading.Event().wait(0.05)
            order.append(f"{name}-")

    threads = [threading.Thread(target=hold, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])
    assert list(folder.iterdir()) == []


def test_an_unwritable_cache_falls_back_for_the_lock(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SED_DEPLOY_CACHE", str(tmp_path / "file" / "cache"))
    with fileio.folder_lock(tmp_path):
        pass
    monkeypatch.setattr(fileio.tempfile, "gettempdir", lambda: str(tmp_path / "file"))
    with pytest.raises(fileio.ArtifactError, match="cannot create a lock file in"), fileio.folder_lock(tmp_path):
        pass
