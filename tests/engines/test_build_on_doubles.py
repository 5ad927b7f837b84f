"""sed-build against strict doubles of TensorRT 10.3, 10.13 and 11.x (tests/fakes/tensorrt_double.py).

The doubles refuse what TensorRT refuses (each rule cites its source there), so a build that passes
here makes the calls the documented API accepts. Each defect test says why the code at commit
641d8cd fails it.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from fakes.install import install

from sed_deploy.core.errors import ConfigError, MissingDependencyError
from sed_deploy.engines.artifacts_build import BuildOptions, build_artifacts, timing_cache_path
from sed_deploy.engines.cli import main
from sed_deploy.engines.engine_build import BuildSettings, EngineBuildError, build_engine_bytes
from sed_deploy.runtime.engine_cache import read_records

VERSIONS = ("10.3", "10.13", "11")


@pytest.fixture
def folder(tiny_artifacts, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_artifacts[0], copy)
    return copy


def _plans(folder):
    return {r.stage: json.loads((folder / r.file).read_bytes()) for r in read_records(folder)}


@pytest.mark.parametrize("version", VERSIONS)
def test_fp16_engines_are_strongly_typed_without_precision_flags(folder, monkeypatch, version):
    """Defect 1: at 641d8cd `sed-build --precision fp16` made a strongly typed network and then set
    BuilderFlag.FP16, layer precisions and OBEY_PRECISION_CONSTRAINTS; TensorRT 10.x's
    build_serialized_network returns None for that (rule R1), 11.x has no such flags at all. Here the
    build must succeed on every version, 10.13 with its deprecations as errors."""
    install(monkeypatch, version)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        build_artifacts(BuildOptions(folder=folder, precision="fp16", max_classes=40, quiet=True), say=lambda s: None)
    plans = _plans(folder)
    assert set(plans) == {"image_encoder", "text_encoder", "cost", "decoder1", "decoder2", "decoder3"}
    for stage, plan in plans.items():
        precision_flags = {"FP16", "BF16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} & set(plan["flags"])
        assert not precision_flags, (stage, plan["flags"])
        if stage != "text_encoder":
            assert plan["strongly_typed"] and plan["graph"].endswith(f"{stage}.fp16.onnx")


@pytest.mark.parametrize("version", ["10.3", "10.13"])
def test_the_double_refuses_precision_flags_on_strongly_typed_networks(folder, monkeypatch, version):
    """The old way (strongly typed network + FP16 flag) fails on the double as on TensorRT, in one line
    quoting TensorRT's error: proof that the test above can fail."""
    env = install(monkeypatch, version)
    trt = env.trt
    logger = trt.Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse_from_file(str(folder / "image_encoder.fp16.onnx"))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    assert "condition: !config.getFlag(BuilderFlag::kFP16)" in trt.log_records[-1][1]
    layer = network.get_layer(0)
    before = layer.precision
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        layer.precision = trt.float16  # refused: logged, unchanged
    assert layer.precision == before and "not allowed on a strongly typed network" in trt.log_records[-1][1]


def test_removed_names_raise_attribute_error_on_11(monkeypatch):
    env = install(monkeypatch, "11")
    for name in ("FP16", "INT8", "BF16", "OBEY_PRECISION_CONSTRAINTS"):
        with pytest.raises(AttributeError):
            getattr(env.trt.BuilderFlag, name)
    with pytest.raises(AttributeError):
        env.trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH  # noqa: B018
    assert not hasattr(env.trt.ILayer, "precision")
    assert not hasattr(env.trt.Builder, "platform_has_fast_fp16")


@pytest.mark.parametrize("version", ["10.3", "10.13"])
def test_fp32_only_artifacts_build_fp16_with_the_flag_on_10(folder, monkeypatch, version):
    """Weakly typed fp16 (no fp16 graphs): the FP16 flag, normalisation layers pinned to fp32; the 10.13
    setter's DeprecationWarning is kept inside the builder."""
    install(monkeypatch, version)
    data = json.loads((folder / "manifest.json").read_text())
    for stage in data["stages"].values():
        stage["variants"] = {}
    (folder / "manifest.json").write_text(json.dumps(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        build_artifacts(BuildOptions(folder=folder, precision="fp16", max_classes=40, quiet=True,
                                     stages=("decoder1",)), say=lambda s: None)
    plan = _plans(folder)["decoder1"]
    assert not plan["strongly_typed"] and "FP16" in plan["flags"] and plan["graph"].endswith("decoder1.onnx")


def test_fp32_only_artifacts_on_11_say_to_reexport(folder, monkeypatch):
    install(monkeypatch, "11")
    data = json.loads((folder / "manifest.json").read_text())
    data["stages"]["cost"]["variants"] = {}
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="re-export with sed-export --precision fp16"):
        build_artifacts(BuildOptions(folder=folder, precision="fp16", stages=("cost",), quiet=True),
                        say=lambda s: None)


def test_parser_errors_and_failed_builds_are_one_line(folder, monkeypatch, tmp_path):
    install(monkeypatch, "10.3")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(EngineBuildError, match="stage cost: TensorRT's ONNX parser rejected broken.onnx"):
        build_engine_bytes(broken, [], BuildSettings(), b"", "cost")
    # a dynamic graph without profiles: TensorRT's own reason, quoted
    with pytest.raises(EngineBuildError, match="could not build the engine: Network has dynamic or shape inputs"):
        build_engine_bytes(folder / "cost.onnx", [], BuildSettings(), b"", "cost")


def test_timing_cache_follows_its_help_text(folder, monkeypatch, capsys):
    """Smaller defect: the --timing-cache help must name the file the build uses."""
    install(monkeypatch, "10.3")
    assert main([str(folder), "--stages", "image_encoder", "-q"]) == 0
    from sed_deploy.runtime.backends.tensorrt import current_environment

    path = timing_cache_path(folder, current_environment())
    assert path.is_file() and path.name.startswith("timing.10.3.0.30-NVIDIA-Fake-Orin")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "ARTIFACTS/engines/timing.<TensorRT>-<GPU>.cache" in capsys.readouterr().out


def test_another_optimization_level_builds_a_new_engine(folder, monkeypatch, capsys):
    """Issue 22: the cache key left out --optimization-level, so a rebuild at another level reused the
    engine built at the first; now every builder setting is part of the key (no --force needed)."""
    install(monkeypatch, "10.13")
    assert main([str(folder), "--stages", "cost", "--optimization-level", "3", "-q"]) == 0
    first = {r.key for r in read_records(folder) if r.stage == "cost"}
    assert main([str(folder), "--stages", "cost", "--optimization-level", "3"]) == 0
    assert "cost           cached" in capsys.readouterr().out  # the same settings reuse the engine
    assert main([str(folder), "--stages", "cost", "--optimization-level", "5", "-q"]) == 0
    keys = {r.key for r in read_records(folder) if r.stage == "cost"}
    assert len(keys) == 2 and first < keys
    assert main([str(folder), "--stages", "cost", "--workspace", "1024", "-q"]) == 0
    assert len({r.key for r in read_records(folder) if r.stage == "cost"}) == 3


def test_check_compares_every_engine_with_onnxruntime(folder, monkeypatch, capsys):
    """--check runs on the double (engines computed by ONNX Runtime) at every profile's min and max."""
    install(monkeypatch, "10.13")
    assert main([str(folder), "--precision", "fp16", "--check", "--max-classes", "40", "-q"]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") >= 6 and "FAILED" not in out


class TestDla:
    def test_static_stages_go_to_the_dla_the_rest_stays_on_the_gpu(self, folder, monkeypatch):
        install(monkeypatch, "10.3", dla_cores=2)
        report = build_artifacts(BuildOptions(folder=folder, precision="fp16", max_classes=40, dla_core=1,
                                              quiet=True), say=lambda s: None)
        plans = _plans(folder)
        assert plans["image_encoder"]["dla_core"] == 1 and "GPU_FALLBACK" in plans["image_encoder"]["flags"]
        assert "FP16" in plans["image_encoder"]["flags"] and not plans["image_encoder"]["strongly_typed"]
        assert all(plans[s]["dla_core"] is None for s in ("cost", "decoder1", "decoder2", "decoder3"))
        assert report.records["image_encoder"].dla_core == 1

    def test_the_runtime_sets_the_dla_core(self, folder, monkeypatch):
        install(monkeypatch, "10.3", dla_cores=2)
        build_artifacts(BuildOptions(folder=folder, precision="fp16", max_classes=40, dla_core=0, quiet=True),
                        say=lambda s: None)
        from sed_deploy.runtime.pipeline import Pipeline

        with Pipeline.from_artifacts(folder, backend="tensorrt") as pipe:
            pipe.set_vocabulary(["person", "dog"], embeddings=np.zeros((2, pipe.manifest.num_templates,
                                                                          pipe.manifest.embed_dim), np.float32))
            result = pipe(np.zeros((40, 40, 3), np.uint8))
        assert "DLA core 0" in result.engines["image_encoder"]

    @pytest.mark.parametrize("version,options,match", [
        ("10.3", {"precision": "fp32"}, "--dla-core needs --precision fp16"),
        ("11", {"precision": "fp16"}, "--dla-core needs TensorRT 10.x"),
    ])
    def test_refusals(self, folder, monkeypatch, version, options, match):
        install(monkeypatch, version, dla_cores=2)
        with pytest.raises(ConfigError, match=match):
            build_artifacts(BuildOptions(folder=folder, dla_core=0, quiet=True, stages=("image_encoder",),
                                         **options), say=lambda s: None)

    def test_a_device_without_that_core(self, folder, monkeypatch):
        install(monkeypatch, "10.3", dla_cores=0)
        with pytest.raises(EngineBuildError, match="--dla-core 0: this device has 0 DLA core"):
            build_artifacts(BuildOptions(folder=folder, precision="fp16", dla_core=0, quiet=True,
                                         stages=("image_encoder",)), say=lambda s: None)


class TestPluginVersions:
    def test_no_plugin_on_jetpack_6(self, monkeypatch):
        from sed_deploy.kernels.trt_plugin import register_plugin

        install(monkeypatch, "10.3")
        with pytest.raises(MissingDependencyError) as info:
            register_plugin()
        assert str(info.value) == ("the attention plugin needs TensorRT >= 10.6; this is 10.3 "
                                   "(JetPack 6.1 or later ships 10.3)")

    def test_aot_needs_10_9(self, monkeypatch):
        from sed_deploy.kernels.trt_plugin import register_plugin

        install(monkeypatch, "10.8")
        assert register_plugin().aot is False  # JIT only
        with pytest.raises(MissingDependencyError, match="ahead-of-time kernel .* needs TensorRT >= 10.9; this "
                                                         "is 10.8"):
            register_plugin(require_aot=True)

    @pytest.mark.parametrize("version", ["10.13", "11"])
    def test_registers_jit_and_aot(self, monkeypatch, version):
        from sed_deploy.kernels.trt_plugin import register_plugin

        env = install(monkeypatch, version)
        assert register_plugin(require_aot=True).aot
        assert set(env.trt.plugin_registry["sed::linear_class_attention"]) == {"register", "autotune", "impl",
                                                                               "aot_impl"}

    def test_tensorrt_older_than_10_3_is_refused(self, monkeypatch):
        from sed_deploy.engines.engine_build import require_tensorrt

        install(monkeypatch, "8.6")
        with pytest.raises(MissingDependencyError, match=r"needs TensorRT >= 10.3; this is 8.6"):
            require_tensorrt()


class TestDoubleRules:
    """The double itself enforces the runtime rules (so the backend tests above can fail)."""

    @pytest.fixture
    def context(self, folder, monkeypatch):
        from sed_deploy.core.manifest import Manifest
        from sed_deploy.engines.engine_build import BuildSettings, build_engine_bytes
        from sed_deploy.engines.profiles import class_buckets, stage_plan

        env = install(monkeypatch, "10.13")
        spec = Manifest.load(folder).stages["cost"]
        plan = stage_plan(spec, class_buckets(40))
        data, _ = build_engine_bytes(folder / spec.file, plan, BuildSettings(), b"", "cost")
        engine = env.trt.Runtime(env.trt.Logger()).deserialize_cuda_engine(data)
        context = engine.create_execution_context(env.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        return env, engine, context

    def test_shapes_must_lie_in_the_active_profile(self, context):
        env, engine, ctx = context
        text = [36 if d == -1 else d for d in engine.get_tensor_shape("text")]
        assert not ctx.set_input_shape("text", text)  # a new context is on profile 0: 1-32 classes
        assert "satisfyProfile" in env.trt.log_records[-1][1]
        with pytest.raises(RuntimeError, match="Error in set optimization profile async"):
            ctx.set_optimization_profile_async(5, 0)
        ctx.set_optimization_profile_async(1, 0)
        assert ctx.set_input_shape("text", text)

    def test_enqueue_needs_shapes_addresses_and_memory(self, context):
        env, engine, ctx = context
        assert not ctx.execute_async_v3(0) and "input shape not set" in env.trt.log_records[-1][1]
        for name in engine.input_names:
            shape = [2 if d == -1 else d for d in engine.get_tensor_shape(name)]
            assert ctx.set_input_shape(name, shape)
        assert not ctx.execute_async_v3(0) and "Address is not set for input tensor" in env.trt.log_records[-1][1]
        assert not ctx.set_tensor_address("dense", 0x7F00_0000_0010)  # not 256-byte aligned
        for i in range(engine.num_io_tensors):
            ctx.set_tensor_address(engine.get_tensor_name(i), env.gpu.malloc(1 << 20))
        assert not ctx.execute_async_v3(0) and "device memory of" in env.trt.log_records[-1][1]

    def test_version_surface(self, monkeypatch):
        import sys

        install(monkeypatch, "10.3")
        assert "tensorrt.plugin" not in sys.modules
        env = install(monkeypatch, "10.13")
        assert hasattr(sys.modules["tensorrt.plugin"], "aot_impl")
        engine = env.trt.ICudaEngine({"inputs": [], "outputs": [], "profiles": []}, env.trt.Logger())
        with pytest.warns(DeprecationWarning, match="Deprecated in TensorRT 10.12"):
            engine.get_device_memory_size_for_profile(0)


def _stub_classes(path) -> dict[str, set[str]]:
    """Class name -> names defined in its body, from a .pyi file."""
    import ast

    classes = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            names = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.ClassDef):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    names.update(t.id for t in item.targets if isinstance(t, ast.Name))
            classes[node.name] = names
    return classes


def test_the_10_13_double_has_no_name_the_10_13_stubs_lack(monkeypatch):
    """Every class and member of the 10.13 double exists in the tensorrt-stubs of 10.13 that mypy checks
    against (`make setup` puts them in .venv/trt-stubs; MYPYPATH may point elsewhere)."""
    import enum
    import os
    from pathlib import Path

    roots = [Path(__file__).resolve().parents[2] / ".venv" / "trt-stubs",
             *(Path(p) for p in os.environ.get("MYPYPATH", "").split(os.pathsep) if p)]
    stubs = next((r / "tensorrt_bindings" / "tensorrt.pyi" for r in roots
                  if (r / "tensorrt_bindings" / "tensorrt.pyi").is_file()), None)
    if stubs is None:
        pytest.skip("no tensorrt stubs (make setup installs them under .venv/trt-stubs)")
    classes = _stub_classes(stubs)
    env = install(monkeypatch, "10.13")
    missing = []
    for name, value in vars(env.trt).items():
        if not isinstance(value, type) or name.startswith("_"):
            continue
        if name not in classes:
            missing.append(name)
            continue
        own = value.__members__ if issubclass(value, enum.Enum) else [n for n in vars(value) if not n.startswith("_")]
        missing += [f"{name}.{n}" for n in own if n not in classes[name]]
    assert missing == []


@pytest.fixture
def int8_folder(tiny_int8, tmp_path):
    copy = tmp_path / "tiny_int8"
    shutil.copytree(tiny_int8[0], copy)
    return copy


@pytest.mark.parametrize("version", VERSIONS)
def test_int8_engines_are_strongly_typed_qdq_graphs_without_precision_flags(int8_folder, monkeypatch, version):
    """int8 engines come from the export's symmetric Q/DQ graphs (explicit quantization): strongly typed,
    no INT8 flag (TensorRT 10.x refuses precision flags on strongly typed networks, rule R1), and the
    double's parser accepts the graphs only because every zero point is 0 (rule R-Q)."""
    install(monkeypatch, version)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        report = build_artifacts(BuildOptions(folder=int8_folder, precision="int8", max_classes=40, quiet=True),
                                 say=lambda s: None)
    plans = _plans(int8_folder)
    for stage, plan in plans.items():
        assert not {"FP16", "BF16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} & set(plan["flags"]), (stage, plan["flags"])
        if stage in ("image_encoder", "cost", "decoder1"):
            assert plan["strongly_typed"] and plan["graph"].endswith(f"{stage}.int8.onnx")
            assert report.builds[stage].computes == "int8"
        else:  # decoder2/3 were kept fp32 at export; the text stage is always fp32
            assert plan["graph"].endswith(f"{stage}.onnx") and report.builds[stage].computes == "fp32"
    assert {r.precision for r in read_records(int8_folder)} == {"int8"}


def test_the_double_refuses_asymmetric_qdq(int8_folder, monkeypatch):
    """The runtime's uint8 form (zero point 128) is for CPUs only: TensorRT's parser refuses it, so the
    test above can fail if the artifact were written in that form."""
    from sed_deploy.runtime.qdq import for_onnxruntime

    install(monkeypatch, "10.13")
    graph = int8_folder / "cost.int8.onnx"
    graph.write_bytes(for_onnxruntime(graph))
    settings = BuildSettings(strongly_typed=True)
    with pytest.raises(EngineBuildError, match="symmetric quantization only"):
        build_engine_bytes(graph, [], settings, b"", "cost")


def test_int8_without_int8_graphs_says_to_reexport(folder, monkeypatch):
    install(monkeypatch, "11")
    with pytest.raises(ConfigError, match="sed-export --precision int8"):
        build_artifacts(BuildOptions(folder=folder, precision="int8", quiet=True), say=lambda s: None)
