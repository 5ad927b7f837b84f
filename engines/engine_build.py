"""One TensorRT engine from one graph, in small named steps, on the API common to TensorRT 10.x and 11.x.

    network_from_onnx -> config_from_options -> engine_bytes_from_network

`create_network(0)` (explicit batch on both), the ONNX parser with its errors surfaced line by
line, a workspace limit, a timing cache loaded and saved, one optimization profile per bucket of
the plan. Precision comes one of two ways, never both: a strongly typed network takes it from the
graph (the fp16 graphs of `sed-export --precision fp16`) and gets no precision flag and no layer
precision, which TensorRT refuses on strongly typed networks; a weakly typed network (10.x only)
computes fp16 through the FP16 builder flag, normalisation, reduction and softmax layers pinned to
float32. Weakly typed fp32 builds turn TF32 off, so they can be checked at fp32 tolerances.

DLA (Orin, TensorRT 10.x): `dla_core` builds for that DLA core with GPU fallback (layers the DLA
cannot run go to the GPU). DLA layers are FP16 or INT8 only and TensorRT 10.x's DLA path is weakly
typed, so a DLA build is the fp32 graph with the FP16 flag, never a strongly typed network; and
the DLA has no dynamic shapes, so only static stages qualify (`artifacts_build.stage_build`).

TensorRT's errors are kept by a capturing logger, so a failed build names its cause in one line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sed_deploy.core import tensorrt_api
from sed_deploy.core.errors import InternalError, SedDeployError

if TYPE_CHECKING:
    import tensorrt as trt


class EngineBuildError(SedDeployError):
    """TensorRT rejected a graph or could not build it; `details` holds every parser message."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


@dataclass(frozen=True)
class BuildSettings:
    """How to build one engine.

    Attributes:
        workspace_mb: the builder's workspace limit.
        optimization_level: TensorRT's builder optimisation level 0-5 (None: TensorRT's default, 3).
        strongly_typed: precision from the graph; no precision flags or layer precisions.
        fp16_flag: TensorRT 10.x's FP16 builder flag on a weakly typed network.
        dla_core: build for this DLA core, GPU fallback on (needs fp16_flag); None: the GPU.
    """

    workspace_mb: int = 4096
    optimization_level: int | None = None
    strongly_typed: bool = False
    fp16_flag: bool = False
    dla_core: int | None = None

    def __post_init__(self) -> None:
        if self.strongly_typed and self.fp16_flag:
            raise InternalError("a strongly typed network takes no precision flag")
        if self.dla_core is not None and not self.fp16_flag:
            raise InternalError("a DLA build needs the FP16 flag (DLA layers are FP16 or INT8 only)")


def require_tensorrt() -> Any:
    """The tensorrt module; `MissingDependencyError` in one line unless TensorRT >= 10.3 is installed."""
    return tensorrt_api.require_tensorrt("building engines (sed-build)")


# The functions below import tensorrt where they use it, so that mypy checks every call against
# the tensorrt-stubs (10.13 API) while importing this module needs no TensorRT.


def weak_fp16_supported() -> bool:
    """True on TensorRT 10.x, where fp16 is a builder flag; False on 11.x (strongly typed only)."""
    import tensorrt as trt

    return hasattr(trt.BuilderFlag, "FP16")


def network_from_onnx(
    builder: trt.Builder, logger: trt.ILogger, path: Path, strongly_typed: bool
) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """Parse an ONNX file into a new network. Returns (network, parser): keep the parser alive."""
    import tensorrt as trt

    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        details = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = details[0] if details else "no message"
        raise EngineBuildError(
            f"TensorRT's ONNX parser rejected {path.name} ({len(details)} error(s)); first: {first}", details
        )
    return network, parser


def pin_float32_layers(network: trt.INetworkDefinition) -> int:
    """On weakly typed fp16 builds, keep normalisation, reduction and softmax layers in float32."""
    import tensorrt as trt

    kinds = {getattr(trt.LayerType, k) for k in ("NORMALIZATION", "REDUCE", "SOFTMAX") if hasattr(trt.LayerType, k)}
    pinned = 0
    with warnings.catch_warnings():  # 10.13 deprecates the setter (strong typing supersedes it); 10.x still obeys it
        warnings.simplefilter("ignore", DeprecationWarning)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type in kinds and hasattr(layer, "precision"):
                layer.precision = trt.float32
                pinned += 1
    return pinned


def config_from_options(builder: trt.Builder, network: trt.INetworkDefinition,
                        plan: list[dict[str, list[list[int]]]], settings: BuildSettings,
                        timing_cache: bytes) -> tuple[trt.IBuilderConfig, trt.ITimingCache]:
    """Builder config with the workspace limit, precision, timing cache and profiles.

    Returns (config, timing cache object).
    """
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if settings.optimization_level is not None:
        config.builder_optimization_level = settings.optimization_level
    if settings.fp16_flag:
        if not weak_fp16_supported():
            raise EngineBuildError("this TensorRT has no FP16 builder flag (11.x): build from an fp16 graph "
                                   "(sed-export --precision fp16)")
        config.set_flag(trt.BuilderFlag.FP16)
        if pin_float32_layers(network) and hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"):
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    elif not settings.strongly_typed and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if settings.dla_core is not None:
        use_dla(builder, config, settings.dla_core)
    cache = config.create_timing_cache(timing_cache)
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # from another GPU or TensorRT: start afresh
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    for profile_shapes in plan:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profile_shapes.items():
            profile.set_shape(name, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
        config.add_optimization_profile(profile)
    return config, cache


def use_dla(builder: trt.Builder, config: trt.IBuilderConfig, core: int) -> None:
    """Build for DLA core `core` with GPU fallback (what trtexec --useDLACore --allowGPUFallback sets)."""
    import tensorrt as trt

    if core >= builder.num_DLA_cores:
        raise EngineBuildError(f"--dla-core {core}: this device has {builder.num_DLA_cores} DLA core(s) "
                               "(Jetson AGX Orin and Orin NX have 2, Orin Nano none)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def engine_bytes_from_network(builder: trt.Builder, network: trt.INetworkDefinition,
                              config: trt.IBuilderConfig, stage: str, logger: Any = None) -> bytes:
    """Build and serialise; a `None` from TensorRT becomes an error naming the stage and TensorRT's reason."""
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        reason = logger.reason() if logger is not None else "see the TensorRT log above"
        hint = " (out of memory: lower --workspace or --max-classes)" if "memory" in reason.lower() else ""
        raise EngineBuildError(f"stage {stage}: TensorRT could not build the engine: {reason}{hint}")
    return bytes(serialized)


def build_engine_bytes(graph: Path, plan: list[dict[str, list[list[int]]]], settings: BuildSettings,
                       timing_cache: bytes, stage: str) -> tuple[bytes, bytes]:
    """One stage, start to end. Returns (engine bytes, updated timing cache bytes)."""
    trt = require_tensorrt()
    logger = tensorrt_api.capturing_logger(trt)
    try:  # without a GPU TensorRT raises a TypeError from its factory instead of returning None
        builder = trt.Builder(logger)
    except Exception as exc:
        raise EngineBuildError(f"TensorRT could not create a builder (no CUDA GPU or driver?): {exc}") from None
    if builder is None:
        raise EngineBuildError("TensorRT could not create a builder (no CUDA GPU or driver?)")
    try:
        network, _parser = network_from_onnx(builder, logger, graph, settings.strongly_typed)
    except EngineBuildError as exc:
        raise EngineBuildError(f"stage {stage}: {exc}", exc.details) from None
    config, cache = config_from_options(builder, network, plan, settings, timing_cache)
    engine = engine_bytes_from_network(builder, network, config, stage, logger)
    return engine, bytes(cache.serialize())
