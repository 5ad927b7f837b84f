"""The TensorRT plugin: lazy imports and the AOT kernel build on the CPU; registration and engines
with the plugin node, JIT and AOT, on a GPU with TensorRT (gpu)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from sed_deploy.core.errors import MissingDependencyError
from sed_deploy.core.optional import available
from sed_deploy.kernels import trt_plugin
from sed_deploy.kernels.checks import KernelInputError

HEAVY = ("tensorrt", "torch", "triton", "onnx", "onnxruntime")


def test_kernels_package_imports_without_heavy_modules():
    code = (
        "import sys\n"
        "import sed_deploy.kernels, sed_deploy.kernels.trt_plugin, sed_deploy.kernels.ort_plugin\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(available("tensorrt"), reason="tensorrt is installed here")
def test_register_plugin_without_tensorrt_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"tensorrt is not installed .*sed-deploy\[trt\]"):
        trt_plugin.register_plugin()


class TestAotKernel:
    @pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
    def test_compiles_for_tensorrt_calling_convention(self, fp16):
        triton = pytest.importorskip("triton", reason="needs triton (the kernels extra)")
        target = triton.backends.compiler.GPUTarget("cuda", 87, 32)  # Jetson Orin; no GPU needed to compile

        compiled, config = trt_plugin.compile_aot_kernel(8, fp16, 1e-6, target=target, ptx_version=85)
        ptx = trt_plugin.drop_unused_trailing_params(compiled.asm["ptx"], compiled.metadata.name, count=2)

        entry = re.search(r"\.entry\s+\w+\s*\(([^)]*)\)", ptx).group(1)
        kinds = [re.search(r"\.param \.(\w+)", p).group(1) for p in entry.split(",")]
        assert kinds == ["u64"] * 3 + ["u32"] * 10 + ["u64"]  # q, k, v; H, T, 8 strides; out
        assert ".version 8.5" in ptx
        assert config.block_t == 64 and config.block_d == 16 and config.fp16_dot == fp16

    def test_ptxas_accepts_the_trimmed_ptx(self, tmp_path):
        triton = pytest.importorskip("triton", reason="needs triton (the kernels extra)")
        from triton.backends.nvidia.compiler import get_ptxas

        target = triton.backends.compiler.GPUTarget("cuda", 87, 32)
        compiled, _ = trt_plugin.compile_aot_kernel(32, True, 1e-6, target=target, ptx_version=85)
        ptx = tmp_path / "kernel.ptx"
        ptx.write_text(trt_plugin.drop_unused_trailing_params(compiled.asm["ptx"], compiled.metadata.name, count=2))

        done = subprocess.run(
            [get_ptxas(87).path, "--gpu-name", "sm_87", str(ptx), "-o", str(tmp_path / "kernel.cubin")],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr


class TestDropUnusedTrailingParams:
    PTX = (
        ".visible .entry k(\n\t.param .u64 k_param_0,\n\t.param .u64 k_param_1,\n\t.param .u64 k_param_2\n)\n"
        "{\n\tld.param.u64 %rd1, [k_param_0];\n}\n"
    )

    def test_drops_the_last_parameters(self):
        trimmed = trt_plugin.drop_unused_trailing_params(self.PTX, "k", count=2)

        assert "k_param_1" not in trimmed and "k_param_2" not in trimmed
        assert ".entry k(\n\t.param .u64 k_param_0\n)" in trimmed

    def test_refuses_a_used_parameter(self):
        with pytest.raises(KernelInputError, match="expected PTX parameter k_param_0 unused"):
            trt_plugin.drop_unused_trailing_params(self.PTX, "k", count=3)

    def test_refuses_a_missing_entry(self):
        with pytest.raises(KernelInputError, match="expected a PTX entry named other, got none"):
            trt_plugin.drop_unused_trailing_params(self.PTX, "other", count=1)


@pytest.fixture(scope="module")
def trt():
    if not available("tensorrt"):
        pytest.skip("needs TensorRT (the trt extra)")
    import tensorrt

    registration = trt_plugin.register_plugin()
    assert registration.plugin_id == "sed::linear_class_attention"
    assert trt_plugin.register_plugin() is registration
    return tensorrt


@pytest.mark.gpu
class TestEngineWithPlugin:
    """Build a TensorRT engine from the plugin graph of one attention layer and compare with torch."""

    @pytest.mark.parametrize("aot", [False, True], ids=["jit", "aot"])
    def test_engine_matches_torch(self, trt, aot, seed, torch_cuda):
        from sed_deploy.kernels import plugin_node_export
        from sed_deploy.kernels.onnx_plugin import plugin_translation_table
        from sed_deploy.model.decoder import LinearAttentionLayer

        if aot and not trt_plugin.register_plugin().aot:
            pytest.skip(f"TensorRT {trt.__version__} has no AOT Python plugins (10.9+)")
        torch.manual_seed(seed)
        layer = LinearAttentionLayer(128, 4).eval()
        dim_t = torch.export.Dim("T", min=1, max=1024)
        with torch.no_grad(), plugin_node_export():
            program = torch.onnx.export(
                layer,
                (torch.randn(576, 5, 128),),
                dynamo=True,
                opset_version=17,
                input_names=["tokens"],
                output_names=["attended"],
                dynamic_shapes=({1: dim_t},),
                custom_translation_table=plugin_translation_table(aot=aot),
            )
        engine = build_engine(trt, program.model_proto.SerializeToString())
        for classes in (1, 17, 459):
            tokens = torch.randn(576, classes, 128)
            with torch.no_grad():
                expected = layer(tokens)
            got = run_engine(engine, tokens.cuda()).cpu()
            error = ((got - expected).abs().max() / expected.abs().max()).item()
            assert error < 1e-4, f"T={classes}: relative error {error:.2e} (seed={seed})"


def build_engine(trt, onnx_bytes: bytes):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        raise AssertionError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # float32 projections, so the comparison is tight
    profile = builder.create_optimization_profile()
    profile.set_shape("tokens", (576, 1, 128), (576, 64, 128), (576, 512, 128))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None, "engine build failed"
    return trt.Runtime(logger).deserialize_cuda_engine(serialized)


def run_engine(engine, tokens: torch.Tensor) -> torch.Tensor:
    context = engine.create_execution_context()
    context.set_input_shape("tokens", tuple(tokens.shape))
    out = torch.empty(tuple(context.get_tensor_shape("attended")), device="cuda")
    context.set_tensor_address("tokens", tokens.data_ptr())
    context.set_tensor_address("attended", out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out


class TestScratchParams:
    """Triton's hidden trailing parameters, by version (measured: none <= 3.2, one in 3.3-3.4, two from
    3.5). 641d8cd always cut two, which removes a real parameter on 3.3/3.4 and fails on <= 3.2."""

    @pytest.mark.parametrize("fields,count", [((), 0), (("global_scratch_size",), 1),
                                              (("global_scratch_size", "profile_scratch_size"), 2)],
                             ids=["3.2", "3.4", "3.5"])
    def test_counted_from_the_metadata(self, fields, count):
        from types import SimpleNamespace

        metadata = SimpleNamespace(name="k", shared=0, **dict.fromkeys(fields, 0))
        assert trt_plugin.scratch_param_count(metadata) == count

    def test_installed_triton_matches_its_ptx(self):
        triton = pytest.importorskip("triton", reason="needs triton (the kernels extra)")
        target = triton.backends.compiler.GPUTarget("cuda", 87, 32)
        compiled, _ = trt_plugin.compile_aot_kernel(8, False, 1e-6, target=target, ptx_version=85)
        entry = re.search(r"\.entry\s+\w+\s*\(([^)]*)\)", compiled.asm["ptx"]).group(1)
        assert len(entry.split(",")) == 14 + trt_plugin.scratch_param_count(compiled.metadata)

    def test_old_triton_is_refused_in_one_line(self, monkeypatch):
        triton = pytest.importorskip("triton", reason="needs triton (the kernels extra)")
        monkeypatch.setattr(triton, "__version__", "3.2.0")
        with pytest.raises(MissingDependencyError, match=r"needs triton >= 3.3 .* this is 3.2.0"):
            trt_plugin.compile_aot_kernel(8, False, 1e-6)
