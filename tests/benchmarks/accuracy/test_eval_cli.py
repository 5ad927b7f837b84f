"""sed-eval end to end on the tiny artifacts: known numbers through a forced prediction, then real runs."""

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from sed_deploy.benchmarks.accuracy.cli import main
from sed_deploy.core.optional import available
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.segmentation import Segmentation

IGNORE = 255
ALL = np.arange(5)
# stem: (image colour, ground truth, forced prediction, kept per decoder stage)
CASES = {
    "a": (10, [[0, 0, 1], [1, 2, IGNORE]], [[0, 1, 1], [1, 2, 0]], (ALL, ALL, ALL)),
    "b": (20, [[2, 2], [0, IGNORE]], [[2, 0], [0, 1]], (np.array([0, 1, 2, 3]), np.array([0, 1, 3]), np.array([0, 1]))),
    "g": (30, [[3, 9]], [[3, 3]], (ALL, ALL, ALL)),  # 9 is outside the five classes: ignored
}
# counted pixels: a (0,0) (0,1) (1,1) (1,1) (2,2), b (2,2) (2,0) (0,0), g (3,3)
EXPECTED = np.zeros((5, 5), dtype=np.int64)
EXPECTED[:4, :4] = [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 1]]
IOU = [2 / 4, 2 / 3, 2 / 3, 1.0]


def _save(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture()
def known(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for stem, (colour, gt, _, _) in CASES.items():
        gt = np.array(gt)
        _save(images / f"{stem}.png", np.full((*gt.shape, 3), colour))
        _save(labels / f"{stem}.png", gt)
    _save(images / "c.png", np.zeros((2, 2, 3)))
    _save(labels / "c.png", np.zeros((3, 3)))  # size mismatch
    _save(images / "d.png", np.zeros((2, 2, 3)))  # no label
    return images, labels


@pytest.fixture()
def forced(monkeypatch):
    """The pipeline's prediction replaced by the cases' (the stages are not run)."""
    by_colour = {colour: (np.array(pred, dtype=np.int32), kept) for colour, _, pred, kept in CASES.values()}

    def call(self, image):
        pred, kept = by_colour[int(np.asarray(image)[0, 0, 0])]
        return Segmentation(labels=pred, names=self.names, kept=kept, scores=np.zeros((len(kept[2]), 1, 1)),
                            score_ids=kept[2], timings={"image_encoder": 0.002, "total": 0.004})

    monkeypatch.setattr(Pipeline, "__call__", call)


def _args(artifacts, images, labels, out, *extra):
    return ["--artifacts", str(artifacts), "--images", str(images), "--labels", str(labels),
            "--vocab", str(artifacts.parent / "street.txt"), "-o", str(out), "-q", *extra]


def test_known_numbers_through_the_cli(tiny_artifacts, known, forced, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    out = tmp_path / "report"
    assert main(_args(artifacts, *known, out, "--panels", "2")) == 0
    lines = capsys.readouterr().out.splitlines()
    for kind, stem in (("missing label", "d.png"), ("size mismatch", "c.png"), ("out of range", "g.png")):
        assert sum(line.startswith(f"{kind}: ") and stem in line for line in lines) == 1, kind
    assert "3 image(s) evaluated, 3 problem(s): mIoU 70.83" in lines[-2]
    report = json.loads((out / "report.json").read_text())
    np.testing.assert_array_equal(np.load(out / "confusion.npy"), EXPECTED)
    m = report["metrics"]
    assert m["miou"] == pytest.approx(np.mean(IOU), abs=1e-6)
    assert m["fwiou"] == pytest.approx(3 / 9 * IOU[0] + 2 / 9 * IOU[1] + 3 / 9 * IOU[2] + 1 / 9 * IOU[3], abs=1e-6)
    assert m["pixel_accuracy"] == pytest.approx(7 / 9, abs=1e-6)
    assert m["classes_present"] == 4 and m["pixels"] == 9
    assert report["dataset"]["problems"] == {"missing label": 1, "size mismatch": 1, "out of range": 1}
    assert [c["iou"] for c in report["classes"]] == [pytest.approx(v, abs=1e-6) for v in IOU] + [None]
    assert report["classes"][4]["present"] is False
    # CER: "tree, forest" (2) is in b's ground truth and was dropped before decoder2
    assert report["cer"]["classes"] == [{"id": 2, "name": "tree, forest", "present_images": 2, "rejected_images": 1,
                                         "rejection_rate": 0.5, "rejected_gt_pixels": 2,
                                         "rejected_at": {"decoder1": 0, "decoder2": 1, "decoder3": 0}}]
    images = {r["stem"]: r for r in report["images"]}
    assert images["b"]["rejected_present"] == [2] and images["b"]["kept"]["decoder3"] == [0, 1]
    assert images["g"]["miou"] == 1.0 and images["a"]["timings_ms"]["total"] == 4.0
    # the markdown table is sorted by IoU; pictures are written and linked
    md = (out / "report.md").read_text()
    section = md.split("## Classes")[1].split("\n\n")[1].splitlines()[2:]
    assert [r.split("|")[2].strip() for r in section] == ["sky", "dog", "tree, forest", "person"]
    assert "| tree, forest | 2 | 1 | 50.0 | 2 | decoder2: 1 |" in md
    # per-image mIoU: g 1, a 0.72, b 0.5; two panels each, but three images: two best, one worst
    assert report["files"]["best"] == ["best_1_g.png", "best_2_a.png"] and report["files"]["worst"] == ["worst_1_b.png"]
    for name in ["confusion.png", *report["files"]["best"], *report["files"]["worst"]]:
        assert (out / name).is_file() and f"]({name})" in md


def test_nothing_to_evaluate_is_one_error_line(tiny_artifacts, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    _save(tmp_path / "i" / "x.png", np.zeros((2, 2, 3)))
    code = main(_args(artifacts, tmp_path / "i", tmp_path / "l", tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 1
    assert "error: no image could be evaluated: 0 pair(s), 1 problem(s) (first: missing label:" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "report.json").exists()


@pytest.fixture()
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(3):
        _save(images / f"street_{i}.png", rng.integers(0, 256, (40, 52, 3)))
        gt = rng.integers(0, 5, (40, 52))
        gt[:4] = IGNORE
        Image.fromarray(gt.astype(np.uint16)).save(labels / f"street_{i}.png")  # 16-bit labels
    return images, labels


@pytest.mark.parametrize("cer", [True, False])
def test_a_real_run_through_the_pipeline(tiny_artifacts, dataset, tmp_path, cer):
    artifacts, _ = tiny_artifacts
    out = tmp_path / "report"
    extra = ["--limit", "2", "--seed", "3", "--topk", "1"] + ([] if cer else ["--no-cer"])
    assert main(_args(artifacts, *dataset, out, *extra)) == 0
    report = json.loads((out / "report.json").read_text())
    auto = "openvino" if available("openvino") else "ort"  # the auto rule on a CPU (runtime/backends)
    assert report["config"]["backend"] == auto and report["config"]["weights"] == "random"
    assert len(report["images"]) == 2 and report["dataset"]["problems"] == {}
    matrix = np.load(out / "confusion.npy")
    assert matrix.sum() == report["metrics"]["pixels"] == 2 * 36 * 52  # ignore rows left out
    assert 0 <= report["metrics"]["miou"] <= 1
    for record in report["images"]:
        assert set(record["timings_ms"]) >= {"image_encoder", "decoder3", "total"}
        kept = [set(record["kept"][f"decoder{i}"]) for i in (1, 2, 3)]
        assert kept[2] <= kept[1] <= kept[0] <= set(range(5))
        if not cer:
            assert kept[2] == set(range(5)) and record["rejected_present"] == []
        assert not set(record["rejected_present"]) & kept[2]
    assert report["cer"]["enabled"] is cer
    rejected = sum(r["rejected_images"] for r in report["cer"]["classes"])
    assert rejected == sum(len(r["rejected_present"]) for r in report["images"])
    assert "**These artifacts have random weights" in (out / "report.md").read_text()


@pytest.fixture()
def tokenizer(monkeypatch):
    """Noisy names need the text stage; until the runtime tokenizer lands, open_clip's tokenizes."""
    if importlib.util.find_spec("sed_deploy.runtime.tokenizer") is None:
        from sed_deploy.model.text import tokenize

        monkeypatch.setattr(Pipeline, "tokenize", lambda self, texts: tokenize(texts))


def test_noise_study(tiny_artifacts, dataset, tokenizer, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    out = tmp_path / "report"
    assert main(_args(artifacts, *dataset, out, "--vocab-noise", "emoji", "typos", "--noise-level", "heavy")) == 0
    rows = {(r["kind"], r["normalised"]): r for r in json.loads((out / "report.json").read_text())["vocab_noise"]}
    assert len(rows) == 4 and all(r["names_changed_by_noise"] == 5 for r in rows.values())
    emoji = rows["emoji", True]
    assert emoji["names_equal_to_clean"] == 5 and emoji["names_changed_by_normalisation"] == 5
    assert emoji["cosine_min"] == 1.0 and emoji["label_agreement"] == 1.0 and emoji["miou_change"] == 0
    assert rows["emoji", False]["cosine_min"] < 1.0 and rows["emoji", False]["names_equal_to_clean"] == 0
    typos = rows["typos", False]
    assert typos["cosine_min"] < 0.999 and typos["names_equal_to_clean"] == 0
    assert {k: v for k, v in rows["typos", True].items() if k not in ("label", "normalised")} == {
        k: v for k, v in typos.items() if k not in ("label", "normalised")}  # nothing to repair in typos
    assert "| emoji | heavy | yes | 5 | 5 | 5 | 1.0000 | 1.0000 | 100.0 |" in (out / "report.md").read_text()
    assert "emoji heavy, normalised: cosine 1.0000, agreement 100.0%" in capsys.readouterr().out


def test_precisions_side_by_side(tiny_int8, dataset, tmp_path, capsys):
    """--compare-precision int8: the int8 column is what a separate --precision int8 run measures, class by class."""
    artifacts = tiny_int8[0]
    out, alone = tmp_path / "both", tmp_path / "int8"
    assert main(_args(artifacts, *dataset, out, "--compare-precision", "int8", "--no-figures")) == 0
    assert main(_args(artifacts, *dataset, alone, "--precision", "int8", "--no-figures")) == 0
    both, int8 = (json.loads((d / "report.json").read_text()) for d in (out, alone))
    table = both["precisions"]
    assert table["reference"] == "fp32" and table["reference_miou"] == both["metrics"]["miou"]
    (run,) = table["runs"]
    assert run["precision"] == "int8" and run["miou"] == int8["metrics"]["miou"]
    assert run["miou_change"] == pytest.approx(run["miou"] - both["metrics"]["miou"], abs=1e-5)
    assert 0 <= run["label_agreement"] <= 1
    by_id = {c["id"]: c["iou"] for c in int8["classes"]}
    assert table["classes"] and all(c["int8"] == by_id[c["id"]] for c in table["classes"])
    assert both["vocab_noise"] == []
    markdown = (out / "report.md").read_text()
    assert "## Precisions side by side" in markdown and "IoU % int8" in markdown
    assert "int8: mIoU" in capsys.readouterr().out


def test_compare_precision_refuses_unknown_names(tiny_artifacts, dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(_args(tiny_artifacts[0], *dataset, tmp_path / "o", "--compare-precision", "int4"))
    assert "expected precisions among" in capsys.readouterr().err
