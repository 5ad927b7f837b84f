"""Profile plans, engine cache keys and staleness rules (pure, no TensorRT)."""

import pytest

from sed_deploy.core.errors import ConfigError
from sed_deploy.core.fileio import write_json
from sed_deploy.engines.profiles import artifacts_plan, class_buckets, parse_profiles, stage_plan
from sed_deploy.runtime.engine_cache import (
    EngineRecord,
    Environment,
    choose_engines,
    engine_key,
    select_profile,
    stale_reason,
    usable_engines,
)

ENV = Environment(tensorrt="10.3.0", gpu="Orin", compute_capability="8.7")


def test_buckets_cover_every_count_once():
    buckets = class_buckets(459)
    assert buckets.ranges == ((1, 32), (33, 128), (129, 459))
    covered = [c for lo, hi in buckets.ranges for c in range(lo, hi + 1)]
    assert covered == list(range(1, 460))
    assert class_buckets(20).ranges == ((1, 20),)
    assert class_buckets(459, top_opt=150).top_opt == 150  # tuned for the vocabulary
    assert class_buckets(459, (16, 64, 256), top_opt=150).top_opt == 459  # 150 is not in the top bucket


@pytest.mark.parametrize("spec,match", [
    ("32,16", "ascending positive"), ("a,b", "'auto' or ascending"), ("0,5", "ascending positive"),
])
def test_bad_profile_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_profiles(spec)


def test_plan_follows_the_manifest(tiny_artifacts):
    _, manifest = tiny_artifacts
    plan = artifacts_plan(manifest, max_classes=459)
    assert plan["image_encoder"] == []
    assert plan["text_encoder"] == [{"tokens": [[1, 1], [256, 16], [256, 77]]}]
    cost = plan["cost"]
    assert [p["text"][0][0] for p in cost] == [1, 33, 129] and [p["text"][2][0] for p in cost] == [32, 128, 459]
    decoder2 = plan["decoder2"]
    assert [p["keep"] for p in decoder2] == [[[1], [16], [32]], [[33], [80], [128]], [[129], [459], [459]]]
    # the gathered axis (T1) may be anything up to the maximum in every profile
    assert all(p["features1"][0][0] == 1 and p["features1"][2][0] == 459 for p in decoder2)
    assert decoder2[0]["features1"][0][1:] == [64, 8, 8]


def test_profile_selection_by_class_count(tiny_artifacts):
    _, manifest = tiny_artifacts
    plan = stage_plan(manifest.stages["decoder1"], class_buckets(459))
    assert select_profile(plan, {"keep": (5,), "embedding": (459, 128, 4, 4)}) == 0
    assert select_profile(plan, {"keep": (40,), "embedding": (200, 128, 4, 4)}) == 1
    assert select_profile(plan, {"keep": (459,), "embedding": (459, 128, 4, 4)}) == 2
    with pytest.raises(ValueError, match="no optimization profile"):
        select_profile(plan, {"keep": (460,)})


def test_cache_key_changes_with_everything_it_depends_on():
    plan = [{"keep": [[1], [16], [32]]}]
    key = engine_key("sha", ENV, "fp16", plan)
    assert key == engine_key("sha", ENV, "fp16", plan)
    assert len({key, engine_key("sha2", ENV, "fp16", plan), engine_key("sha", ENV, "fp32", plan),
                engine_key("sha", Environment("10.4.0", "Orin", "8.7"), "fp16", plan),
                engine_key("sha", Environment("10.3.0", "A100", "8.0"), "fp16", plan),
                engine_key("sha", ENV, "fp16", [{"keep": [[1], [8], [32]]}])}) == 6


def _record(manifest, stage, folder, env=ENV, sha=None, precision="fp32", built_at=0.0, key="k"):
    spec = manifest.stages[stage]
    record = EngineRecord(stage=stage, precision=precision, key=key * 64, graph_sha256=sha or spec.sha256,
                          environment=env, plan=[], file=f"engines/{stage}.{precision}.{key * 4}.engine",
                          built_at=built_at)
    (folder / "engines").mkdir(exist_ok=True)
    (folder / record.file).write_bytes(b"engine")
    write_json(folder / (record.file + ".json"), record.to_dict())
    return record


def test_staleness_rules(tiny_artifacts, tmp_path):
    _, manifest = tiny_artifacts
    good = _record(manifest, "cost", tmp_path)
    assert stale_reason(good, manifest, ENV, tmp_path) is None
    assert "another graph" in stale_reason(_record(manifest, "cost", tmp_path, sha="0" * 64), manifest, ENV, tmp_path)
    other_trt = Environment("11.4.0", "Orin", "8.7")
    assert "built with TensorRT 10.3.0, this is 11.4.0" in stale_reason(good, manifest, other_trt, tmp_path)
    other_gpu = Environment("10.3.0", "NVIDIA H100", "9.0")
    assert "this GPU is NVIDIA H100 (sm 9.0)" in stale_reason(good, manifest, other_gpu, tmp_path)
    (tmp_path / good.file).unlink()
    assert "is missing" in stale_reason(good, manifest, ENV, tmp_path)


def test_usable_engines_skips_foreign_ones(tiny_artifacts, tmp_path):
    _, manifest = tiny_artifacts
    _record(manifest, "decoder1", tmp_path)
    _record(manifest, "decoder2", tmp_path, env=Environment("10.3.0", "RTX 4090", "8.9"))
    usable, refused = usable_engines(manifest, tmp_path, ENV)
    assert list(usable["fp32"]) == ["decoder1"] and len(refused) == 1 and "RTX 4090" in refused[0]


def test_engine_choice_rule(tiny_artifacts, tmp_path):
    """Defect 5: at 641d8cd the last sidecar by file name won ("fp32" sorts after "fp16"), silently.
    Now: the complete fp16 set, else fp32; within a precision the newest build."""
    _, manifest = tiny_artifacts
    images = ("image_encoder", "cost", "decoder1", "decoder2", "decoder3")
    for stage in images:
        _record(manifest, stage, tmp_path, precision="fp32")
    for stage in images[:-1]:
        _record(manifest, stage, tmp_path, precision="fp16")
    chosen, _ = choose_engines(manifest, tmp_path, ENV)
    assert {r.precision for r in chosen.values()} == {"fp32"}  # the fp16 set lacks decoder3
    _record(manifest, "decoder3", tmp_path, precision="fp16")
    chosen, _ = choose_engines(manifest, tmp_path, ENV)
    assert {r.precision for r in chosen.values()} == {"fp16"} and set(chosen) == set(images)
    assert {r.precision for r in choose_engines(manifest, tmp_path, ENV, "fp32")[0].values()} == {"fp32"}
    newer = _record(manifest, "cost", tmp_path, precision="fp16", built_at=10.0, key="a")
    assert choose_engines(manifest, tmp_path, ENV)[0]["cost"].file == newer.file
