"""sed-export killed at every step of export and publish; --opset; --reuse with a changed vocabulary.

The kill cases run the real `export_artifacts` (staging, tokenizer files, publish, manifest) with each
stage's graph export replaced by a fast stand-in that writes a small file and its real stage
contract: what is on disk after a kill depends on the staging and publishing, not on the graphs.
A driver process imports everything and builds the tiny model once (one thread, so forking is safe),
then forks one child per case; each child is killed just before its N-th step (SIGKILL at every step,
SIGTERM at a few), and the driver records what the folder looks like.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sed_deploy.core.errors import ConfigError
from sed_deploy.export.artifacts import SUPPORTED_OPSETS, ExportOptions, check_options, current_manifest
from sed_deploy.export.cli import main as export

from .conftest import cli, one_error_line

_DRIVER = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import sed_deploy.export.artifacts as artifacts
    from sed_deploy.export.cli import main
    from sed_deploy.core.contract import stage_io_shapes
    from sed_deploy.core.errors import ArtifactError
    from sed_deploy.core.manifest import Manifest, StageSpec, TensorSpec, file_sha256
    from sed_deploy.core.manifest_schema import INTEGER_TENSORS

    import torch
    torch.set_num_threads(1)
    model = artifacts.build_sed("tiny")
    artifacts.build_sed = lambda *args, **kwargs: model
    out = Path(sys.argv[1])
    real_replace, real_text = os.replace, artifacts._write_text_assets

    def fake_export_one(stage, folder, opset, counts, steps, plugin=False):
        path = folder / f"{stage.CONTRACT.name}.onnx"
        path.write_bytes(f"{stage.CONTRACT.name} {os.environ['RUN']}".encode())
        shapes = stage_io_shapes(stage.CONTRACT.name, stage.model.config, stage.k)
        spec = lambda n: TensorSpec(n, INTEGER_TENSORS.get(n, "float32"), shapes[n])
        return StageSpec(stage.CONTRACT.name, path.name, file_sha256(path), tuple(map(spec, stage.CONTRACT.inputs)),
                         tuple(map(spec, stage.CONTRACT.outputs)))

    def run(kill_at, sig, run_id):
        os.environ["RUN"] = run_id
        step = [0]

        def tick():
            step[0] += 1
            if step[0] == kill_at:
                os.kill(os.getpid(), sig)

        def export_one(*a, **k):
            tick()
            return fake_export_one(*a, **k)

        def replace(src, dst):
            tick()
            return real_replace(src, dst)

        def text_assets(*a, **k):
            tick()
            return real_text(*a, **k)

        artifacts._export_one, artifacts._write_text_assets, os.replace = export_one, text_assets, replace
        code = main(["--backbone", "tiny", "-o", str(out), "-q"])
        Path(sys.argv[2]).write_text(str(step[0]))  # how many steps a whole export takes
        os._exit(code)

    def child(kill_at, sig, run_id):
        pid = os.fork()
        if pid == 0:
            run(kill_at, sig, run_id)
        _, status = os.waitpid(pid, 0)
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def state():
        staging = sorted(p.name for p in out.iterdir() if p.name.startswith(".export-"))
        try:
            manifest = Manifest.load(out)
        except ArtifactError:
            return {"manifest": None, "staging": staging}
        try:
            manifest.verify_files(out)
            valid = True
        except ArtifactError:
            valid = False
        graph = (out / manifest.stages["cost"].file).read_text()
        return {"manifest": "present", "valid": valid, "run": graph.split()[-1], "staging": staging}

    results = {"old": child(0, 0, "old"), "state_old": state(), "cases": []}
    results["steps"] = steps = int(Path(sys.argv[2]).read_text())
    plan = [(signal.SIGKILL, n) for n in range(1, steps + 1)]
    plan += [(signal.SIGTERM, n) for n in (1, 6, 8, 9, 12, steps - 1, steps)]  # export, text, publish, manifest
    for sig, kill_at in plan:
        code = child(kill_at, sig, f"new{kill_at}")
        results["cases"].append({"signal": int(sig), "kill_at": kill_at, "code": code, **state()})
    results["final"] = child(0, 0, "final")
    results["state_final"] = state()
    print(json.dumps(results))
""")



@pytest.fixture(scope="module")
def kill_results(tmp_path_factory):
    """Steps: 6 stage exports, the tokenizer file (written, renamed), 7 files moved into place, the manifest
    (written in staging, moved into place): SIGKILL before each of them, SIGTERM before some."""
    folder = tmp_path_factory.mktemp("killed")
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(folder / "artifacts"), str(folder / "steps")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_killed_export_never_leaves_a_folder_that_looks_valid_but_is_not(kill_results):
    assert kill_results["old"] == 0 and kill_results["state_old"]["valid"]
    for case in kill_results["cases"]:
        if case["manifest"] is not None:  # a manifest means every graph it names is there and intact
            assert case["valid"], case
            assert case["run"] in ("old", f"new{case['kill_at']}"), case
    killed = [c for c in kill_results["cases"] if c["code"] == -9]
    assert kill_results["steps"] >= 17 and len(killed) == kill_results["steps"]  # every step was reached
    assert any(c["manifest"] is None for c in killed)  # some kills land mid-publish
    assert kill_results["final"] == 0 and kill_results["state_final"]["valid"]
    assert kill_results["state_final"]["run"] == "final" and kill_results["state_final"]["staging"] == []


def test_sigkill_leaves_staging_that_the_next_export_removes(kill_results):
    killed = [c for c in kill_results["cases"] if c["code"] == -9]
    assert all(len(c["staging"]) <= 1 for c in killed)  # the previous one's was reclaimed by this run
    assert any(c["staging"] for c in killed)


def test_sigterm_cleans_its_staging_folder(kill_results):
    terminated = [c for c in kill_results["cases"] if c["signal"] == 15 and c["code"] == 143]
    assert len(terminated) == 7
    for case in terminated:
        assert case["staging"] == [], case
        if case["manifest"] is not None:
            assert case["valid"], case


@pytest.mark.parametrize("opset", [5, -1, 16, 0, 99])
def test_unsupported_opsets_are_refused(opset, tmp_path, capsys):
    with pytest.raises(ConfigError, match=f"opset {opset} is not supported"):
        check_options(ExportOptions(backbone="tiny", output=tmp_path, opset=opset))
    with pytest.raises(SystemExit) as info:
        export(["--backbone", "tiny", "--opset", str(opset), "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "invalid choice" in err
    assert not (tmp_path / "x").exists()
    assert 17 in SUPPORTED_OPSETS and 16 not in SUPPORTED_OPSETS


def test_reuse_follows_the_vocabulary_content_not_its_name(tiny_artifacts, tmp_path):
    artifacts, _ = tiny_artifacts
    vocab = artifacts.parent / "street.txt"
    options = ExportOptions(backbone="tiny", output=artifacts, vocab=str(vocab), precisions=("fp32", "fp16"))
    assert current_manifest(options) is not None  # the same names: reused
    changed = tmp_path / "street.txt"  # same file name, other classes
    changed.write_text(vocab.read_text().replace("dog", "cat"))
    assert current_manifest(ExportOptions(backbone="tiny", output=artifacts, vocab=str(changed),
                                          precisions=("fp32", "fp16"))) is None
    assert current_manifest(ExportOptions(backbone="tiny", output=artifacts, vocab=str(vocab), opset=18,
                                          precisions=("fp32",))) is None


def test_export_into_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    outcome = cli(export, ["--backbone", "tiny", "-o", tmp_path / "file"], capsys)
    one_error_line(outcome, "is an existing file, not a folder")
