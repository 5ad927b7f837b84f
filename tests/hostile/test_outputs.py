"""Lost or mismatched output: name collisions, output folders full of the user's files, disk full, failed
renames, kill -9 in the middle of an image's files, two runs into one folder, an unwritable cache."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sed_deploy.core.manifest import Manifest
from sed_deploy.runtime import outputs
from sed_deploy.runtime.outputs import OutputError, OutputFolder, encode_png, source_id
from sed_deploy.runtime.segment_cli import main as segment

from .conftest import cli, digest, no_partial, one_error_line


def _image(path: Path, seed: int, size=(24, 20)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _records(out: Path) -> dict[str, dict]:
    """JSON name -> record, for the JSONs sed-segment wrote."""
    found = {}
    for path in out.glob("*.json"):
        record = json.loads(path.read_text())
        if record.get("written_by") == "sed-segment":
            found[path.name] = record
    return found


def _consistent(out: Path) -> None:
    """Each JSON's files exist and carry the same input; no two JSONs describe the same files."""
    seen = set()
    for name, record in _records(out).items():
        assert record["outputs"]["json"] == name
        for kind in ("labels", "overlay"):
            file = out / record["outputs"][kind]
            assert outputs.written_for(file, record["source"]) is True, (name, kind)
            assert file not in seen
            seen.add(file)
    no_partial(out)


def test_colliding_stems_get_their_own_files(tiny_artifacts, vocab_file, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "sub").mkdir()
    paths = [_image(inputs / "a.jpg", 0), _image(inputs / "a.png", 1), _image(inputs / "a_2.jpg", 2),
             _image(inputs / "A.JPG", 3), _image(inputs / "sub" / "a.jpg", 4), _image(inputs / "a_jpg.png", 5)]
    out = tmp_path / "out"
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", vocab_file, *paths, "-o", out], capsys)
    assert outcome.code == 0, outcome.err
    records = _records(out)
    assert len(records) == len(paths)  # nothing lost
    assert sorted(r["source"] for r in records.values()) == sorted(source_id(p) for p in paths)
    _consistent(out)


def test_output_folder_full_of_the_users_files(tiny_artifacts, vocab_file, tmp_path, capsys):
    """-o at the inputs' own folder, with an input named like an output and a user file in the way."""
    artifacts, _ = tiny_artifacts
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = [_image(folder / "p.png", 0), _image(folder / "p_overlay.png", 1), _image(folder / "q.png", 2)]
    (folder / "q.json").write_text('{"mine": true}\n')
    (folder / "notes.txt").write_text("keep me")
    before = digest(folder)
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", vocab_file, *paths, "-o", folder], capsys)
    assert outcome.code == 0, outcome.err
    after = digest(folder)
    assert {k: after[k] for k in before} == before  # no user file changed, no input replaced
    assert len(_records(folder)) == 3
    _consistent(folder)


def test_output_folder_is_the_artifacts_folder(tiny_artifacts, vocab_file, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    copy = tmp_path / "artifacts"
    shutil.copytree(artifacts, copy)
    before = digest(copy)
    image = _image(tmp_path / "manifest.jpg", 0)
    outcome = cli(segment, ["--artifacts", copy, "--vocab", vocab_file, image, "-o", copy], capsys)
    assert outcome.code == 0, outcome.err
    after = digest(copy)
    assert {k: after[k] for k in before} == before
    Manifest.load(copy).verify_files(copy)
    assert "manifest_2.json" in after


def test_rerun_replaces_its_own_results_and_nothing_else(tiny_artifacts, vocab_file, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    image = _image(tmp_path / "x.png", 0)
    out = tmp_path / "out"
    for _ in range(2):
        assert cli(segment, ["--artifacts", artifacts, "--vocab", vocab_file, image, "-o", out], capsys).code == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.json", "x_labels.png", "x_overlay.png"]
    (tmp_path / "other").mkdir()
    other = _image(tmp_path / "other" / "x.png", 1)  # same name, another input: must not replace x's results
    assert cli(segment, ["--artifacts", artifacts, "--vocab", vocab_file, other, "-o", out], capsys).code == 0
    assert {r["source"] for r in _records(out).values()} == {source_id(image), source_id(other)}
    _consistent(out)


def test_output_that_is_a_file_or_unwritable(tiny_artifacts, vocab_file, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    image = _image(tmp_path / "x.png", 0)
    (tmp_path / "taken").write_text("a file")
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", vocab_file, image, "-o", tmp_path / "taken"], capsys)
    one_error_line(outcome, "is an existing file, not a folder")
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", vocab_file, image,
                            "-o", tmp_path / "taken" / "sub"], capsys)
    one_error_line(outcome, "is inside the file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "x.png"]  # nothing created on the way


def test_a_run_that_publishes_nothing_leaves_no_folder_it_made(tmp_path):
    source = str(_image(tmp_path / "a.png", 0))
    with pytest.raises(RuntimeError), OutputFolder(tmp_path / "new" / "deeper", [source]):
        raise RuntimeError("the server refused the first image")
    with OutputFolder(tmp_path / "quiet", [source]):
        pass  # every image skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    (tmp_path / "mine").mkdir()
    with OutputFolder(tmp_path / "mine" / "out", [source]):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "mine"]  # the user's own folder stays
    assert not any((tmp_path / "mine").iterdir())


def test_a_failed_rename_rolls_the_image_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    source = str(_image(tmp_path / "a.png", 0))
    pngs = {kind: encode_png(Image.new("L", (2, 2), v), source_id(source)) for kind, v in (("labels", 1),
                                                                                          ("overlay", 2))}
    with OutputFolder(out, [source]) as folder:
        folder.write(source, "a", pngs, {"n": 1})
    before = digest(out)
    real, calls = os.replace, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", failing)
    with OutputFolder(out, [source]) as folder, pytest.raises(OutputError, match="nothing of it was written"):
        folder.write(source, "a", {k: v + b"" for k, v in pngs.items()}, {"n": 2})
    monkeypatch.setattr(outputs.os, "replace", real)
    assert digest(out) == before  # the first set, exactly, and no staging folder


@pytest.mark.skipif(os.geteuid() != 0, reason="a small tmpfs for the disk-full case needs root (mount -t tmpfs)")
def test_disk_full_is_one_line_and_leaves_nothing_partial(tiny_artifacts, vocab_file, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        first = _image(tmp_path / "first.png", 0, (16, 16))
        big = _image(tmp_path / "big.png", 1, (900, 700))  # its PNGs do not fit in what is left
        outcome = cli(segment, ["--artifacts", artifacts, "--vocab", vocab_file, first, big, "-o", small], capsys)
        one_error_line(outcome, "No space left on device")
        assert sorted(p.name for p in small.iterdir()) == ["first.json", "first_labels.png", "first_overlay.png"]
        _consistent(small)
    finally:
        subprocess.run(["umount", str(small)], check=False)


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from sed_deploy.runtime import outputs
    from sed_deploy.runtime.segment_cli import main
    kill_at, calls, real = int(sys.argv[1]), [], os.replace

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)

    outputs.os.replace = replace
    sys.exit(main(sys.argv[2:]))
""")


def test_kill_9_between_the_files_of_an_image(tiny_artifacts, vocab_file, tmp_path):
    """Killed before each rename of an image's three files: a JSON is there only with its complete set;
    the next run removes the staging folder the killed one left."""
    artifacts, _ = tiny_artifacts
    image = _image(tmp_path / "k.png", 0)
    for kill_at in (1, 2, 3):
        out = tmp_path / f"out{kill_at}"
        args = ["--artifacts", str(artifacts), "--vocab", vocab_file, str(image), "-o", str(out), "-q"]
        proc = subprocess.run([sys.executable, "-c", _KILLER, str(kill_at), *args], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert not (out / "k.json").exists()  # the JSON is renamed last
        assert [p for p in out.iterdir() if p.name.endswith(".partial")]  # left behind by the kill
        assert segment(args) == 0
        assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
        assert (out / "k.json").exists()
        _consistent(out)


def test_two_runs_into_one_folder(tiny_artifacts, vocab_file, tmp_path):
    """Concurrent runs whose images share a stem: both results survive, each set consistent."""
    artifacts, _ = tiny_artifacts
    out = tmp_path / "shared"
    images = [_image(tmp_path / "a.jpg", 0), _image(tmp_path / "a.png", 1)]
    procs = [subprocess.Popen([sys.executable, "-m", "sed_deploy.runtime.segment_cli", "--artifacts", str(artifacts),
                               "--vocab", vocab_file, str(image), "-o", str(out), "-q"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for image in images]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert {r["source"] for r in _records(out).values()} == {source_id(p) for p in images}
    _consistent(out)


def test_an_unwritable_cache_only_warns(tiny_artifacts, tmp_path, capsys, monkeypatch):
    artifacts, _ = tiny_artifacts
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("SED_DEPLOY_CACHE", str(tmp_path / "file" / "cache"))  # under a file: never writable
    image = _image(tmp_path / "c.png", 0)
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", "zebra,giraffe", image, "-o", tmp_path / "o"],
                  capsys)
    assert outcome.code == 0, outcome.err
    assert "WARNING: the embeddings were not cached" in outcome.err
