"""The per-operator profile study on the tiny artifacts: both profilers give the stage's operators,
the class axes sit at the FORCED-keep counts, the report names the most expensive operator types."""

from __future__ import annotations

import json

import pytest

from sed_deploy.benchmarks.studies import stage_profile
from sed_deploy.core.manifest import Manifest


def test_class_axes_follow_a_forced_keep_run(tiny_artifacts):
    folder, _ = tiny_artifacts
    stages = Manifest.load(folder).stages
    assert stage_profile.class_sizes(stages["image_encoder"], 459, 32) == {}
    assert set(stage_profile.class_sizes(stages["cost"], 459, 32).values()) == {459}
    assert sorted(stage_profile.class_sizes(stages["decoder1"], 459, 32).values()) == [32, 459]
    assert set(stage_profile.class_sizes(stages["decoder3"], 459, 32).values()) == {32}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_profiles_of_both_engines_account_for_the_stage(tiny_artifacts, tiny_int8, tmp_path, precision):
    pytest.importorskip("openvino", reason="needs the openvino package ([openvino])")
    folder = tiny_artifacts[0] if precision == "fp32" else tiny_int8[0]
    stage_profile.main(["--artifacts", str(folder), "--stages", "cost,decoder1", "--vocabulary", "20", "--kept", "6",
                        "--precision", precision, "--threads", "1", "--runs", "1", "-o", str(tmp_path)])
    report = json.loads((tmp_path / "profile.json").read_text())
    assert [(r["stage"], r["engine"]) for r in report["rows"]] == [
        ("cost", "ort"), ("cost", "openvino"), ("decoder1", "ort"), ("decoder1", "openvino")]
    for row in report["rows"]:
        ops = {t["op"].split(" ")[0] for t in row["by_type"]}
        assert row["kernel_ms"] > 0 and abs(sum(t["share"] for t in row["by_type"]) - 1) < 1e-2
        assert ops & {"Conv", "MatMul", "Gemm", "FusedMatMul", "FullyConnected", "Convolution",
                      "QLinearConv", "MatMulInteger"}, ops  # the stage's compute shows up
        spec = Manifest.load(folder).stages[row["stage"]]
        variant = spec.variants.get(precision)
        assert row["graph"] == (variant.file if variant is not None and not variant.fallback else spec.file)
    text = (tmp_path / "profile.md").read_text()
    assert "| cost | ort |" in text and "| decoder1 | openvino |" in text
