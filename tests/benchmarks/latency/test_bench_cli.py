"""sed-bench end to end on the tiny artifacts: files, schema, ordered percentiles, forced keep, skipped backends."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sed_deploy.benchmarks.latency import worker as bench_worker
from sed_deploy.benchmarks.latency.cli import build_parser, main
from sed_deploy.benchmarks.latency.markdown import DECODERS, render_markdown
from sed_deploy.benchmarks.latency.precision_errors import compare
from sed_deploy.core.contract import IMAGE_STAGES
from sed_deploy.core.optional import available
from sed_deploy.export.text import embed_vocabulary
from sed_deploy.runtime.backends.openvino import precision_unavailable_reason as openvino_precision_reason
from sed_deploy.runtime.embedding_cache import EmbeddingCache

from ...conftest import load_vocab

REPORT_KEYS = {"schema", "command", "machine", "artifacts", "vocabulary", "options", "settings", "matmul_peak", "work",
               "work_error", "backends", "runs", "failures", "comparisons", "precision_errors", "seconds", "notes"}
RUN_KEYS = {"backend", "setting", "iterations", "classes", "stages", "end_to_end", "host_overhead", "memory",
            "samples_ms"}
KEEP = 8


@pytest.fixture(scope="module")
def vocab(tmp_path_factory, tiny_model):
    """The first 40 PC-459 names as a file, their tiny-model embeddings in a cache folder."""
    root = tmp_path_factory.mktemp("bench_vocab")
    names = load_vocab("pc459")[:40]
    path = root / "pc40.json"
    path.write_text(json.dumps(names))
    embed_vocabulary(tiny_model, names, cache=EmbeddingCache(root / "cache" / "text"), show_progress=False)
    return path, root / "cache"


def _bench(artifacts, vocab, out, *extra):
    path, cache = vocab
    return main(["--artifacts", str(artifacts), "--vocab", str(path), "--cache-dir", str(cache), "--topk", "2,4",
                 "--keep", str(KEEP), "--warmup", "1", "--iters", "3", "--text-classes", "3", "-q", "-o", str(out),
                 *extra])


@pytest.fixture(scope="module")
def isolated_report(tiny_artifacts, vocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out")
    images = tmp_path_factory.mktemp("bench_images")
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (90, 120, 3)), ("b.jpg", (200, 150, 3))):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(images / name)
    code = _bench(tiny_artifacts[0], vocab, out, "--backends", "ort,torch,tensorrt", "--images",
                  str(images / "a.png"), str(images / "b.jpg"))
    return code, out


def test_files_exist_and_parse(isolated_report):
    code, out = isolated_report
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["latency_stages.png", "latency_vs_classes.png", "report.json",
                                                     "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert set(report) == REPORT_KEYS and report["schema"] == "sed-bench/1"
    assert all(set(run) == RUN_KEYS for run in report["runs"])
    assert (out / "latency_stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # report.md is a pure function of report.json
    assert render_markdown(report) == (out / "report.md").read_text()


def test_every_backend_and_setting_ran_with_ordered_percentiles(isolated_report):
    report = json.loads((isolated_report[1] / "report.json").read_text())
    keys = ["off", "k2", "k4", "k2-keep8", "k4-keep8"]
    assert [(r["backend"], r["setting"]["key"]) for r in report["runs"]] == [(b, k) for b in ("ort", "torch")
                                                                             for k in keys]
    assert [p.rsplit("/", 1)[-1] for p in report["options"]["images"]] == ["a.png", "b.jpg"]
    for run in report["runs"]:
        assert run["iterations"] == 3 and len(run["samples_ms"]["total"]) == 3
        for summary in [run["stages"][s]["ms"] for s in IMAGE_STAGES] + [run["end_to_end"]["ms"]]:
            assert 0 < summary["min"] <= summary["median"] <= summary["p90"] <= summary["p99"] <= summary["max"]
        stage_sum = sum(run["stages"][s]["ms"]["median"] for s in IMAGE_STAGES)
        assert run["end_to_end"]["ms"]["median"] > stage_sum * 0.5
        assert run["memory"]["peak_rss_mb"] > 0
        assert all(run["stages"][s]["gflops"] > 0 for s in IMAGE_STAGES)


def test_forced_keep_is_honoured_and_real_cer_prunes_on_the_tiny_map(isolated_report):
    report = json.loads((isolated_report[1] / "report.json").read_text())
    for run in report["runs"]:
        classes = run["classes"]
        assert classes["cost"] == 40
        if run["setting"]["forced"]:
            assert [classes[f"decoder{i}"] for i in (1, 2, 3)] == [KEEP] * 3
            assert "FORCED" in run["setting"]["label"]
        elif run["setting"]["cer"]:
            assert classes["decoder1"] < 40  # 16 pixels x k=2 or 4 cannot cover 40 classes
        else:
            assert [classes[f"decoder{i}"] for i in (1, 2, 3)] == [40] * 3
    speedups = report["comparisons"]["cer_speedup"]
    assert {(s["backend"], s["setting"]["key"]) for s in speedups} >= {("ort", "k2-keep8"), ("torch", "k4-keep8")}
    assert all(s["ceiling"] > 1 for s in speedups)


def test_unavailable_backend_is_skipped_with_its_reason(isolated_report):
    code, out = isolated_report
    report = json.loads((out / "report.json").read_text())
    trt = report["backends"]["tensorrt"]
    assert trt["status"] == "skipped" and trt["reason"]
    assert f"- tensorrt: skipped: {trt['reason']}" in (out / "report.md").read_text()
    for name in ("ort", "torch"):
        text = report["backends"][name]["text"]
        assert text["vocabulary_source"] == "cache"
        assert text["sample_classes"] == 3 and text["sample_seconds"] > 0 and text["sample_error"] is None
        assert text["estimated_vocabulary_seconds"] == pytest.approx(text["sample_seconds"] / 3 * 40, abs=0.1)


def test_report_md_labels_forced_rows_and_says_random_weights(isolated_report):
    md = (isolated_report[1] / "report.md").read_text()
    assert "| ort | CER k=2, FORCED keep 8 |" in md
    assert "RANDOM weights" in md and "3.9x (468.1 ms -> 120.1 ms" in md
    assert "## ONNX Runtime against PyTorch" in md


def test_a_failing_setting_is_reported_and_the_run_goes_on(tiny_artifacts, vocab, tmp_path, monkeypatch):
    real = bench_worker.run_setting

    def run_setting(pipeline, setting, *args):
        if not setting.cer:
            raise MemoryError("simulated")
        return real(pipeline, setting, *args)

    monkeypatch.setattr(bench_worker, "run_setting", run_setting)
    code = _bench(tiny_artifacts[0], vocab, tmp_path, "--backends", "ort", "--no-isolate", "--no-plots")
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [f["setting"]["key"] for f in report["failures"]] == ["off"]
    assert report["failures"][0]["reason"] == "out of memory: simulated"
    assert len(report["runs"]) == 4 and report["comparisons"]["cer_speedup"] == []
    assert "- ort, CER off: failed: out of memory: simulated" in (tmp_path / "report.md").read_text()


def test_user_errors_are_one_line(tiny_artifacts, tmp_path, capsys):
    code = main(["--artifacts", str(tmp_path / "none"), "-o", str(tmp_path / "out"), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: artifacts folder") and "none does not exist" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:  # a usage error, before anything runs
        main(["--artifacts", str(tiny_artifacts[0]), "--vocab", "a,b", "--backends", "onnx", "-o", str(tmp_path)])
    assert info.value.code == 2 and "unknown backend 'onnx'; expected auto, ort" in capsys.readouterr().err
    args = build_parser().parse_args(["--artifacts", "a", "-o", "o", "--backends", "onnxruntime,pytorch,ort"])
    assert args.backends == ("ort", "torch")  # aliases still work
    code = main(["--artifacts", str(tiny_artifacts[0]), "--vocab", "a,b", "--topk", "99", "-o", str(tmp_path)])
    assert code == 1 and "--topk values must be between 1 and 16" in capsys.readouterr().err
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    code = main(["--artifacts", str(tiny_artifacts[0]), "--vocab", "a,b", "--images", str(tmp_path / "bad.jpg"),
                 "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "bad.jpg" in err and len(err.strip().splitlines()) == 1


def test_importing_sed_bench_does_not_import_torch():
    code = ("import sys; import sed_deploy.benchmarks.latency.cli, sed_deploy.benchmarks.latency.worker; "
            "from sed_deploy.core.machine import machine_info; machine_info(); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_one_row_per_backend_and_precision_with_error_tables(tiny_artifacts, vocab, tmp_path):
    path, cache = vocab
    openvino = available("openvino")
    backends = "ort,torch,openvino" if openvino else "ort,torch"
    code = main(["--artifacts", str(tiny_artifacts[0]), "--vocab", str(path), "--cache-dir", str(cache),
                 "--backends", backends, "--precision", "fp32,fp16,bf16", "--topk", "2", "--no-baseline",
                 "--warmup", "0", "--iters", "2", "--text-classes", "0", "--no-isolate", "--no-plots", "-q",
                 "-o", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["options"]["precisions"] == ["fp32", "fp16", "bf16"]
    markdown = (tmp_path / "report.md").read_text()
    assert "not measured (--text-classes 0)" in markdown and "failed: None" not in markdown
    bf16_here = openvino and openvino_precision_reason("bf16") is None
    expected = ["ort fp32", "ort fp16", "torch fp32"]
    if openvino:
        expected += ["openvino fp32", "openvino fp16"] + (["openvino bf16"] if bf16_here else [])
    assert [r["backend"] for r in report["runs"]] == expected
    assert report["backends"]["torch fp16"]["status"] == "skipped"
    assert "fp32 stage modules only" in report["backends"]["torch fp16"]["reason"]
    assert report["backends"]["ort bf16"]["reason"] == ("the ort backend cannot run bf16: bf16 is a runtime precision "
                                                        "of openvino only; use --backend openvino, or --precision fp32")
    if openvino and not bf16_here:
        assert report["backends"]["openvino bf16"]["status"] == "skipped"
        assert report["backends"]["openvino bf16"]["reason"].startswith("not available on this CPU: bf16 needs a CPU "
                                                                          "with BF16 support")
    # an error table per reduced row and setting, against the fp32 row of the same backend
    tables = {(e["backend"], e["setting"]): e for e in report["precision_errors"]}
    assert set(tables) == {(row, "k2") for row in expected if not row.endswith("fp32")}
    for (row, _), table in tables.items():
        assert table["reference"] == row.split()[0] + " fp32" and table["images"] == 1
        # fp16 graphs keep the fp32 graphs' outputs within 1e-2 of the scale (their export check), yet differ
        assert 0 < table["max_relative_error"] < (5e-2 if row.endswith("bf16") else 1e-2)
        assert 0.5 <= table["label_agreement"]["min"] <= table["label_agreement"]["mean"] <= 1
        assert all(0 < table["jaccard"][s]["min"] <= table["jaccard"][s]["mean"] <= 1 for s in DECODERS)
    # plain backend names stand for their fp32 rows in the comparisons
    assert [(r["fast"], r["slow"]) for r in report["comparisons"]["ort_vs_torch"]] == [("ort fp32", "torch fp32")]
    assert [r["fast"] for r in report["comparisons"]["openvino_vs_ort"]] == [r for r in expected
                                                                           if r.startswith("openvino")]
    markdown = (tmp_path / "report.md").read_text()
    assert ("## OpenVINO against ONNX Runtime fp32" in markdown) == openvino
    assert "## Reduced precision against fp32" in markdown and "near-ties make label agreement" in markdown
    assert "| ort fp16 | ort fp32 | CER k=2 | 1 |" in markdown
    assert any("near-ties" in note or "nearly tie" in note for note in report["notes"])


def test_error_table_of_known_outputs():
    ids = np.array([0, 2, 5])
    scores = np.zeros((3, 2, 2), np.float32)
    scores[:, 0, 0] = [0.5, 0.25, 0.125]
    reference = {"scores": scores, "ids": ids, "labels": np.array([[0, 2], [5, 5]]),
                 "kept1": np.array([0, 1, 2, 5]), "kept2": ids, "kept3": ids}
    same = compare([reference], [reference])
    assert same["max_relative_error"] == 0 and same["label_agreement"] == {"mean": 1.0, "min": 1.0}
    # the candidate rejected class 5 (scores 0 there), moved class 2 by 0.05 and flipped one pixel
    candidate = {"scores": scores[:2] + np.float32(0.05) * np.array([0, 1], np.float32)[:, None, None],
                 "ids": ids[:2], "labels": np.array([[0, 2], [5, 0]]), "kept1": np.array([0, 1, 2]),
                 "kept2": ids[:2], "kept3": ids[:2]}
    table = compare([reference, reference], [reference, candidate])
    assert table["images"] == 2
    assert table["max_relative_error"] == pytest.approx(0.125 / 0.5)  # class 5's 0.125 lost, over the scale 0.5
    assert table["label_agreement"] == {"mean": pytest.approx(0.875), "min": 0.75}
    assert table["jaccard"]["decoder1"] == {"mean": pytest.approx(0.875), "min": 0.75}
    assert table["jaccard"]["decoder3"]["min"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same images"):
        compare([reference], [])
