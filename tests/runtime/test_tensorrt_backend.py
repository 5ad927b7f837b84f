"""The TensorRT backend's own checks and reasons (its work on engines: tests/runtime/test_tensorrt_doubles.py)."""

import numpy as np
import pytest
from fakes.install import install

from sed_deploy.engines.profiles import class_buckets, stage_plan
from sed_deploy.runtime.backends import tensorrt as trt_backend
from sed_deploy.runtime.backends.base import BackendError
from sed_deploy.runtime.backends.options import BackendOptions
from sed_deploy.runtime.engine_cache import EngineRecord, Environment


def _backend(tiny_artifacts, tmp_path, stage):
    """A backend on an engine built by the 10.3 double for profiles up to 459 classes."""
    from sed_deploy.engines.engine_build import BuildSettings, build_engine_bytes

    out, manifest = tiny_artifacts
    spec = manifest.stages[stage]
    plan = stage_plan(spec, class_buckets(459))
    engine, _ = build_engine_bytes(out / spec.file, plan, BuildSettings(), b"", stage)
    (tmp_path / f"{stage}.engine").write_bytes(engine)
    record = EngineRecord(stage=stage, precision="fp32", key="k", graph_sha256=spec.sha256,
                          environment=Environment("10.3.0.30", "NVIDIA Fake Orin", "8.7"), plan=plan,
                          file=f"{stage}.engine")
    return trt_backend.TensorrtBackend(spec, tmp_path, manifest, BackendOptions(), record)


def _decoder1_feeds(keep, classes=60):
    rng = np.random.default_rng(0)
    return {"keep": np.arange(keep, dtype=np.int32) % classes,
            "embedding": rng.standard_normal((classes, 128, 4, 4)).astype(np.float32),
            "volume": rng.standard_normal((classes, 80, 4, 4)).astype(np.float32),
            "guidance4": rng.standard_normal((1, 32, 8, 8)).astype(np.float32)}


def test_contexts_per_profile_on_first_use_and_device_outputs_feed_on(tiny_artifacts, tmp_path, monkeypatch):
    """One execution context per profile, made when the profile is first used (the double refuses
    shapes outside the active profile, so a context left on profile 0 fails for 40 classes)."""
    install(monkeypatch, "10.3")
    backend = _backend(tiny_artifacts, tmp_path, "decoder1").load()
    assert backend.contexts == {}
    out = backend.run(_decoder1_feeds(5))
    assert set(backend.contexts) == {0} and out["features1"].shape == (5, 64, 8, 8)
    backend.run(_decoder1_feeds(40))
    assert set(backend.contexts) == {0, 1} and backend.contexts[1].active_optimization_profile == 1
    backend.close()


def test_class_counts_outside_every_profile(tiny_artifacts, tmp_path, monkeypatch):
    install(monkeypatch, "10.3")
    backend = _backend(tiny_artifacts, tmp_path, "decoder1").load()
    with pytest.raises(BackendError, match="profiles do not cover .* sed-build --max-classes"):
        backend.run(_decoder1_feeds(500, classes=500))
    backend.close()


def test_engine_of_another_tensorrt_is_refused_with_its_reason(tiny_artifacts, tmp_path, monkeypatch):
    install(monkeypatch, "10.3")
    backend = _backend(tiny_artifacts, tmp_path, "cost")
    install(monkeypatch, "10.13")
    with pytest.raises(BackendError, match="could not deserialise cost.engine: .*not compatible with this "
                                           "version of TensorRT.*; rebuild it with sed-build"):
        backend.load()


def test_auto_reports_why_tensorrt_is_not_used(tiny_artifacts):
    from sed_deploy.runtime.backends import tensorrt_unavailable_reason

    out, manifest = tiny_artifacts
    assert tensorrt_unavailable_reason(manifest, out) == "tensorrt is not installed"


def test_missing_text_engine_without_onnxruntime_is_a_clear_error(tiny_artifacts, monkeypatch):
    from sed_deploy.core.errors import MissingDependencyError
    from sed_deploy.runtime.backends import onnxruntime as ort_backend

    out, manifest = tiny_artifacts

    def missing(*args, **kwargs):
        raise MissingDependencyError("onnxruntime is not installed")

    monkeypatch.setattr(ort_backend, "resolve_providers", missing)
    fallback = trt_backend._OrtFallback(manifest.stages["text_encoder"], out, manifest, BackendOptions())
    with pytest.raises(BackendError, match="no TensorRT engine and onnxruntime is not installed: run sed-build"):
        fallback.load()


def test_check_sizes_cover_every_profile(tiny_artifacts):
    from sed_deploy.runtime.stage_feeds import plan_sizes

    _, manifest = tiny_artifacts
    spec = manifest.stages["decoder2"]
    sizes = plan_sizes(spec, stage_plan(spec, class_buckets(459)))
    assert {s["T2"] for s in sizes} == {1, 32, 33, 128, 129, 459}
    assert plan_sizes(manifest.stages["image_encoder"], []) == [{}]
