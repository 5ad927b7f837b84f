"""Strict doubles of TensorRT's Python API: 10.3 (JetPack 6), 10.13 and 11.x.

`tensorrt_modules(version, gpu)` builds a `tensorrt` module (and `tensorrt.plugin` where that version
has it) for `sys.modules`. It has only the names the real version has, so a removed name raises
`AttributeError`, and it enforces the documented rules below, failing the way TensorRT fails
(a `None` engine or a `False` with an error logged, or an exception where the binding raises).
Engines it "builds" are JSON naming the ONNX graph; executing one reads the inputs from the fake
GPU's memory at the addresses set, runs the graph in ONNX Runtime on the host, and writes the
outputs back at the output addresses, so a pipeline on the double can be compared with ONNX Runtime.

Sources. `T@tag:` is NVIDIA/TensorRT at that git tag; RT.h = include/NvInferRuntime.h, I.h =
include/NvInfer.h, pyCore = python/src/infer/pyCore.cpp, pyGraph = python/src/infer/pyGraph.cpp.
The research notes (/work/research/trt/REPORT.md, sections 1 and 2) hold the full table.

- R1 strong typing: "Setting layer precision and layer output types is not allowed" (I.h
  kSTRONGLY_TYPED, T@v10.3.0:I.h:661,736); a precision builder flag makes build_serialized_network
  return None after "Error Code 3: API Usage Error (Parameter check failed, condition:
  !config.getFlag(BuilderFlag::kFP16). )" (NVIDIA/TensorRT issues 4228, 4253). On 11.x the flags and
  ILayer.precision do not exist (T@v11.1:pyCore:1599, pyGraph:425-439) and every network is
  strongly typed (STRONGLY_TYPED "ignored", pyCoreDoc 1262).
- R2 shapes: set_input_shape returns False outside the active profile's [min, max] (RT.h:2154,
  pyCore:1050; "condition: satisfyProfile", issue 4011) and for a static dimension that differs
  (RT.h:3741); unset runtime dimensions read -1 (RT.h:3758-3777).
- R3 addresses: "each input must have a non-null address and each output must have a non-null
  address" before enqueueV3, which returns False otherwise (RT.h:3988); "at least 256-byte
  alignment" (RT.h:4003).
- R4 profiles: a new context is on profile 0 (RT.h:2613); set_optimization_profile_async raises
  RuntimeError("Error in set optimization profile async.") for a bad index (pyCore:326-332) and
  invalidates the dynamic input shapes (pyCoreDoc :401).
- R5 enqueue failure is a False (RT.h:4256); deserialize_cuda_engine and build_serialized_network
  return None.
- R6 USER_MANAGED memory: set_device_memory before enqueue, "large enough for performing inference
  with the given network inputs"; the per-profile size is the upper bound
  (T@v10.3.0:RT.h setDeviceMemoryV2 doc, 3676-3680).
- R8 10.13 deprecations: the ILayer.precision setter, set_output_type, the v1 device-memory getters
  and create_execution_context_without_device_memory warn (T@v10.13.0:pyGraph:374-383,
  python/src/utils.cpp:35-41).
- tensorrt.plugin: absent before 10.6 (bindings_wheel/tensorrt/plugin/ first at v10.6.0); aot_impl
  from 10.9 (_lib.py:522).
- DLA: min, opt and max must be equal ("DLA does not support dynamic dimensions",
  dla-layer-restrictions); FP16 or INT8 only; unsupported layers need GPU_FALLBACK; the runtime's
  DLA core is set before deserialising (trtexec, T@v10.3.0:samples/common/sampleEngines.cpp:117-119,
  1123-1146); DLA is not supported on 11.0-11.3 (11.1 "work with DLA" page).
"""

from __future__ import annotations

import enum
import importlib.machinery
import json
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

from .cuda_double import ALIGN, FakeGpu, GpuFault

VERSIONS = {"10.3": "10.3.0.30", "10.13": "10.13.3.9", "11": "11.1.0.106"}
PRECISION_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4")
DLA_LAYERS = {"CONVOLUTION", "DECONVOLUTION", "ACTIVATION", "POOLING", "SCALE", "ELEMENTWISE", "CONCATENATION",
              "RESIZE", "SOFTMAX"}
ONNX_LAYER = {"Conv": "CONVOLUTION", "ConvTranspose": "DECONVOLUTION", "MatMul": "MATRIX_MULTIPLY",
              "Gemm": "MATRIX_MULTIPLY", "LayerNormalization": "NORMALIZATION",
              "InstanceNormalization": "NORMALIZATION", "ReduceSum": "REDUCE", "ReduceMean": "REDUCE",
              "Softmax": "SOFTMAX", "TopK": "TOPK", "Gather": "GATHER", "Reshape": "SHUFFLE",
              "Transpose": "SHUFFLE", "Cast": "CAST", "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION",
              "Resize": "RESIZE", "Concat": "CONCATENATION", "Slice": "SLICE", "MaxPool": "POOLING",
              "AveragePool": "POOLING", "Constant": "CONSTANT", "QuantizeLinear": "QUANTIZE",
              "DequantizeLinear": "DEQUANTIZE"}
NP_OF = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_,
         "INT8": np.int8, "UINT8": np.uint8}
ONNX_TYPE = {1: "FLOAT", 10: "HALF", 6: "INT32", 7: "INT64", 9: "BOOL", 3: "INT8", 2: "UINT8"}
R1_TEXT = ("IBuilder::buildSerializedNetwork: Error Code 3: API Usage Error (Parameter check failed, condition: "
           "!config.getFlag(BuilderFlag::k{flag}). )")


def _module(name: str) -> ModuleType:
    module = ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def tensorrt_modules(version: str, gpu: FakeGpu, dla_cores: int = 0) -> dict[str, ModuleType]:
    """The `tensorrt` double of `version` ("10.3", "10.13", "11") on `gpu` (see the module docstring)."""
    full = VERSIONS.get(version, f"{version}.0.0")
    v = tuple(int(x) for x in full.split(".")[:2])
    weak = v < (11, 0)  # precision flags, ILayer.precision, EXPLICIT_BATCH, v1 memory getters
    deprecating = (10, 12) <= v < (11, 0)
    trt = _module("tensorrt")
    trt.__version__ = full
    trt.log_records = []  # (severity name, text) of everything logged, for tests
    trt.plugin_registry = {}  # plugin id -> {"register": fn, "impl": fn, "aot_impl": fn}
    trt.sessions = {}  # graph path -> onnxruntime session

    def deprecated(what: str) -> None:
        if deprecating:
            warnings.warn(f"Use Deprecated in TensorRT 10.12. Superseded by {what}. instead.", DeprecationWarning,
                          stacklevel=3)

    # enums ------------------------------------------------------------------------------------
    flags = ["TF32", "GPU_FALLBACK", "REFIT", "DEBUG", "DIRECT_IO", "SPARSE_WEIGHTS", "STRIP_PLAN"]
    if weak:
        flags += ["FP16", "BF16", "INT8", "FP8", "INT4", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags, start=0)
    creation = ["STRONGLY_TYPED"] + (["EXPLICIT_BATCH"] if weak else [])
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation, start=0)
    data_types = list(NP_OF)
    trt.DataType = enum.Enum("DataType", data_types)
    trt.float32, trt.float16, trt.int32, trt.int64 = (trt.DataType[n] for n in ("FLOAT", "HALF", "INT32", "INT64"))
    trt.int8, trt.bool = trt.DataType.INT8, trt.DataType.BOOL
    trt.nptype = lambda dtype: NP_OF[dtype.name]
    trt.TensorIOMode = enum.Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    trt.ExecutionContextAllocationStrategy = enum.Enum("ExecutionContextAllocationStrategy",
                                                       ["STATIC", "ON_PROFILE_CHANGE", "USER_MANAGED"])
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                                      "DLA_GLOBAL_DRAM", "TACTIC_DRAM"])
    trt.DeviceType = enum.Enum("DeviceType", ["GPU", "DLA"])
    trt.LayerType = enum.Enum("LayerType", sorted({*ONNX_LAYER.values(), "PLUGIN_V3", "UNARY", "ELEMENTWISE",
                                                   "SCALE", "IDENTITY"}))

    class Dims(tuple):
        def __new__(cls, values=()):
            return super().__new__(cls, (int(x) for x in values))

    trt.Dims = Dims

    # logging ----------------------------------------------------------------------------------
    class ILogger:
        Severity = enum.IntEnum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"], start=0)

        def __init__(self) -> None:
            pass

        def log(self, severity, msg: str) -> None:
            raise NotImplementedError

    class Logger(ILogger):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = ILogger.Severity

        def __init__(self, min_severity=ILogger.Severity.WARNING) -> None:
            super().__init__()
            self.min_severity = min_severity

        def log(self, severity, msg: str) -> None:
            pass

    trt.ILogger, trt.Logger = ILogger, Logger

    def log(logger, text: str, severity=ILogger.Severity.ERROR) -> None:
        trt.log_records.append((severity.name, text))
        logger.log(severity, text)

    # network ----------------------------------------------------------------------------------
    class ITensor:
        def __init__(self, name: str, dtype, shape: tuple[int, ...], symbols: tuple) -> None:
            self.name, self.dtype, self.shape, self.symbols = name, dtype, Dims(shape), symbols

    class ILayer:
        def __init__(self, network, name: str, kind) -> None:
            self.network, self.name, self.type = network, name, kind
            self._precision = None

    if weak:
        def get_precision(self):
            return self._precision or trt.float32

        def set_precision(self, value) -> None:
            deprecated("strong typing")  # the 10.13 setter warns first
            if self.network.strongly_typed:  # R1; the exact log text is unverified (report R1)
                log(self.network.logger, f"{self.name}: setPrecision is not allowed on a strongly typed network")
                return
            self._precision = value

        def set_output_type(self, index: int, dtype) -> None:
            deprecated("strong typing")
            if self.network.strongly_typed:
                log(self.network.logger, f"{self.name}: setOutputType is not allowed on a strongly typed network")

        ILayer.precision = property(get_precision, set_precision)
        ILayer.precision_is_set = property(lambda self: self._precision is not None)
        ILayer.set_output_type = set_output_type

    class INetworkDefinition:
        def __init__(self, builder, flags: int) -> None:
            self.logger = builder.logger
            typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            self.strongly_typed = (not weak) or bool(flags & typed)  # 11.x: always strongly typed
            self.layers: list[ILayer] = []
            self.inputs: list[ITensor] = []
            self.outputs: list[ITensor] = []
            self.graph: str | None = None
            self.plugins: list[str] = []

        num_layers = property(lambda self: len(self.layers))
        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_layer(self, i: int) -> ILayer:
            return self.layers[i]

        def get_input(self, i: int) -> ITensor:
            return self.inputs[i]

        def get_output(self, i: int) -> ITensor:
            return self.outputs[i]

    class ParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def desc(self) -> str:
            return self.text

        def __str__(self) -> str:
            return self.text

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger) -> None:
            self.network, self.logger, self.errors = network, logger, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            import onnx

            try:
                model = onnx.load(path, load_external_data=False)
            except Exception as exc:
                self.errors.append(ParserError(f"ModelImporter.cpp: Failed to parse ONNX model from {path}: {exc}"))
                return False
            network = self.network

            def tensor(value) -> ITensor:
                kind = value.type.tensor_type
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
                symbols = tuple(d.dim_param if d.HasField("dim_param") else None for d in kind.shape.dim)
                return ITensor(value.name, trt.DataType[ONNX_TYPE[kind.elem_type]], tuple(dims), symbols)

            initializers = {i.name for i in model.graph.initializer}
            problem = _quantization_problem(model)
            if problem is not None:
                self.errors.append(ParserError(problem))
                return False
            network.inputs = [tensor(v) for v in model.graph.input if v.name not in initializers]
            network.outputs = [tensor(v) for v in model.graph.output]
            for i, node in enumerate(model.graph.node):
                if node.domain not in ("", "ai.onnx"):
                    plugin = f"{node.domain}::{node.op_type}"
                    if plugin not in trt.plugin_registry:
                        self.errors.append(ParserError(f"node {node.name} ({node.op_type}): No importer registered "
                                                       f"for op: {node.op_type}. Plugin not found: {plugin}"))
                        return False
                    network.plugins.append(plugin)
                    kind = trt.LayerType.PLUGIN_V3
                else:
                    kind = trt.LayerType[ONNX_LAYER.get(node.op_type, "ELEMENTWISE")]
                network.layers.append(ILayer(network, node.name or f"node{i}", kind))
            network.graph = str(Path(path).resolve())
            return True

    def _quantization_problem(model) -> str | None:
        """R-Q: onnx-tensorrt imports QuantizeLinear/DequantizeLinear only with zero points of 0 (its
        operator table: symmetric quantization only; int8 research report, section 4); a uint8 or
        non-zero zero point is refused at parse time. The exact parser text is unverified."""
        from onnx import numpy_helper

        zeros = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
                zero = zeros.get(node.input[2])
                if zero is None or zero.dtype != np.int8 or zero.any():
                    return (f"node {node.name} ({node.op_type}): TensorRT supports symmetric quantization only "
                            "(an int8 zero point of 0)")
        return None

    trt.INetworkDefinition, trt.ILayer, trt.OnnxParser = INetworkDefinition, ILayer, OnnxParser

    # builder ----------------------------------------------------------------------------------
    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, min, opt, max) -> None:  # noqa: A002 - the binding's names
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

        def get_shape(self, name: str):
            return [Dims(s) for s in self.shapes[name]]

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return json.dumps({"version": full, "gpu": gpu.name}).encode()

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: set = set()
            self.pools: dict = {}
            self.profiles: list[IOptimizationProfile] = []
            self.builder_optimization_level = 3
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.timing_cache: ITimingCache | None = None

        def set_flag(self, flag) -> None:
            self.flags.add(trt.BuilderFlag(flag))

        def clear_flag(self, flag) -> None:
            self.flags.discard(trt.BuilderFlag(flag))

        def get_flag(self, flag) -> bool:
            return trt.BuilderFlag(flag) in self.flags

        def set_memory_pool_limit(self, pool, size: int) -> None:
            self.pools[pool] = int(size)

        def create_timing_cache(self, data: bytes) -> ITimingCache:
            return ITimingCache(bytes(data))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if cache.data:
                saved = json.loads(cache.data)
                if saved != {"version": full, "gpu": gpu.name} and not ignore_mismatch:
                    return False
            self.timing_cache = cache
            return True

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def can_run_on_DLA(self, layer: ILayer) -> bool:  # noqa: N802 - the binding's name
            return layer.type.name in DLA_LAYERS

    class Builder:
        def __init__(self, logger) -> None:
            self.logger = logger
            self.num_DLA_cores = dla_cores if v < (11, 0) else 0  # 11.0-11.3: no DLA

        if weak:
            platform_has_fast_fp16 = True

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(self, int(flags))

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
            problem = _build_problem(network, config, self)
            if problem is not None:
                log(self.logger, problem)
                return None
            profiles = [{t.name: [list(s) for s in p.shapes[t.name]] for t in network.inputs if -1 in t.shape}
                        for p in config.profiles]
            plan = {"double": "tensorrt", "version": full, "graph": network.graph, "profiles": profiles,
                    "inputs": [_tensor_json(t) for t in network.inputs],
                    "outputs": [_tensor_json(t) for t in network.outputs],
                    "strongly_typed": network.strongly_typed, "flags": sorted(f.name for f in config.flags),
                    "dla_core": config.DLA_core if config.default_device_type == trt.DeviceType.DLA else None,
                    "plugins": network.plugins}
            return bytearray(json.dumps(plan).encode())

    def _build_problem(network, config, builder) -> str | None:
        if network.graph is None:
            return "Network must have at least one output"
        set_precisions = [f for f in PRECISION_FLAGS if weak and config.get_flag(getattr(trt.BuilderFlag, f))]
        if network.strongly_typed and set_precisions:  # R1
            return R1_TEXT.format(flag=set_precisions[0])
        dynamic = [t for t in network.inputs if -1 in t.shape]
        if dynamic and not config.profiles:
            return "Network has dynamic or shape inputs, but no optimization profile has been defined."
        for k, profile in enumerate(config.profiles):
            for t in dynamic:
                if t.name not in profile.shapes:
                    return f"Optimization profile {k} does not define the shape of input {t.name}"
                low, opt, high = profile.shapes[t.name]
                for dims in (low, opt, high):
                    if len(dims) != len(t.shape) or any(s not in (-1, d) for s, d in zip(t.shape, dims, strict=False)):
                        return f"profile {k}: shape {list(dims)} of {t.name} does not match the network {list(t.shape)}"
                if not all(lo <= op <= hi for lo, op, hi in zip(low, opt, high, strict=False)):
                    return f"profile {k}: {t.name} needs min <= opt <= max, got {low} {opt} {high}"
        if config.default_device_type == trt.DeviceType.DLA:
            if not 0 <= config.DLA_core < builder.num_DLA_cores:
                return f"DLA core {config.DLA_core} requested, this platform has {builder.num_DLA_cores}"
            if any(len({p.shapes[t.name][0], p.shapes[t.name][2]}) > 1 for p in config.profiles for t in dynamic):
                return "DLA does not support dynamic dimensions: min, opt and max must be equal"
            if not (weak and (config.get_flag(trt.BuilderFlag.FP16) or config.get_flag(trt.BuilderFlag.INT8))):
                return "DLA runs FP16 or INT8 layers only: set BuilderFlag.FP16"
            off_dla = [layer.name for layer in network.layers if not config.can_run_on_DLA(layer)]
            if off_dla and not config.get_flag(trt.BuilderFlag.GPU_FALLBACK):
                return f"Layer {off_dla[0]} is not supported on DLA and GPU fallback is not enabled"
        return None

    trt.Builder, trt.IBuilderConfig, trt.IOptimizationProfile = Builder, IBuilderConfig, IOptimizationProfile

    # runtime ----------------------------------------------------------------------------------
    class Runtime:
        def __init__(self, logger) -> None:
            self.logger, self.DLA_core = logger, -1

        def deserialize_cuda_engine(self, data: bytes):
            try:
                plan = json.loads(bytes(data))
                assert plan.get("double") == "tensorrt"
            except Exception:
                log(self.logger, "IRuntime::deserializeCudaEngine: Error Code 1: Serialization assertion "
                                 "magicTagRead == kMAGIC_TAG failed.Magic tag does not match")
                return None
            if plan["version"] != full:
                log(self.logger, "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan "
                                 f"file is not compatible with this version of TensorRT, expecting library version "
                                 f"{full} got {plan['version']})")
                return None
            missing = [p for p in plan["plugins"] if p not in trt.plugin_registry]
            if missing:
                log(self.logger, f"getPluginCreator could not find plugin {missing[0]}")
                return None
            if plan["dla_core"] is not None and self.DLA_core != plan["dla_core"]:
                log(self.logger, f"engine built for DLA core {plan['dla_core']}, runtime DLA core is {self.DLA_core}")
                return None
            return ICudaEngine(plan, self.logger)

    class ICudaEngine:
        def __init__(self, plan: dict, logger) -> None:
            self.plan, self.logger = plan, logger
            self.tensors = {t["name"]: t for t in plan["inputs"] + plan["outputs"]}
            self.input_names = [t["name"] for t in plan["inputs"]]

        num_io_tensors = property(lambda self: len(self.tensors))
        num_optimization_profiles = property(lambda self: max(1, len(self.plan["profiles"])))

        def get_tensor_name(self, i: int) -> str:
            return list(self.tensors)[i]

        def get_tensor_mode(self, name: str):
            if name not in self.tensors:
                return trt.TensorIOMode.NONE
            return trt.TensorIOMode.INPUT if name in self.input_names else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str):
            return trt.DataType[self.tensors[name]["dtype"]]

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self.tensors[name]["shape"])

        def get_tensor_profile_shape(self, name: str, k: int) -> list:
            return [Dims(s) for s in self.plan["profiles"][k][name]]

        def get_device_memory_size_for_profile_v2(self, k: int) -> int:
            if not 0 <= k < self.num_optimization_profiles:
                raise RuntimeError(f"profile index {k} out of range")
            high = {n: s[2] for n, s in self.plan["profiles"][k].items()} if self.plan["profiles"] else {}
            return 4096 + 2 * sum(_nbytes(t, _resolve(t, self, high)) for t in self.plan["outputs"])

        device_memory_size_v2 = property(lambda self: max(self.get_device_memory_size_for_profile_v2(k)
                                                          for k in range(self.num_optimization_profiles)))

        if weak:
            def get_device_memory_size_for_profile(self, k: int) -> int:
                deprecated("get_device_memory_size_for_profile_v2")
                return self.get_device_memory_size_for_profile_v2(k)

            def create_execution_context_without_device_memory(self):
                deprecated("create_execution_context(USER_MANAGED)")
                return IExecutionContext(self, trt.ExecutionContextAllocationStrategy.USER_MANAGED)

        def create_execution_context(self, strategy=None):
            return IExecutionContext(self, strategy or trt.ExecutionContextAllocationStrategy.STATIC)

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine, strategy) -> None:
            self.engine, self.strategy = engine, strategy
            self.profile = 0  # R4: a new context is on profile 0
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}
            self.memory: tuple[int, int] | None = None
            if strategy != trt.ExecutionContextAllocationStrategy.USER_MANAGED:
                address = gpu.malloc(engine.device_memory_size_v2)
                if address is None:
                    log(engine.logger, "Requested amount of GPU memory could not be allocated")
                    raise RuntimeError("out of memory")  # the binding returns None; tests never get here
                self.memory = (address, engine.device_memory_size_v2)

        active_optimization_profile = property(lambda self: self.profile)

        def set_optimization_profile_async(self, k: int, stream: int) -> bool:
            if not 0 <= k < self.engine.num_optimization_profiles:  # R4: the binding raises
                raise RuntimeError("Error in set optimization profile async.")
            self.profile = k
            for name in self.engine.input_names:  # switching invalidates the dynamic shapes
                if -1 in self.engine.tensors[name]["shape"]:
                    self.shapes.pop(name, None)
            return True

        def set_input_shape(self, name: str, shape) -> bool:
            spec = self.engine.tensors.get(name)
            if spec is None or name not in self.engine.input_names:
                log(self.engine.logger, f"IExecutionContext::setInputShape: Error Code 3: {name} is not an input")
                return False
            dims = tuple(int(d) for d in shape)
            static = spec["shape"]
            if len(dims) != len(static) or any(s != -1 and s != d for s, d in zip(static, dims, strict=False)):  # R2
                log(self.engine.logger, f"IExecutionContext::setInputShape: Error Code 3: {name} {list(dims)} does "
                                        f"not agree with the network dimensions {static}")
                return False
            profiles = self.engine.plan["profiles"]
            if profiles and name in profiles[self.profile]:
                low, _, high = profiles[self.profile][name]
                if not all(lo <= d <= hi for lo, d, hi in zip(low, dims, high, strict=False)):
                    log(self.engine.logger, "IExecutionContext::setInputShape: Error Code 3: API Usage Error "
                                            "(Parameter check failed, condition: satisfyProfile Runtime dimension "
                                            "does not satisfy any optimization profile.)")
                    return False
            self.shapes[name] = dims
            return True

        def get_tensor_shape(self, name: str) -> Dims:
            spec = self.engine.tensors[name]
            if name in self.engine.input_names:
                return Dims(self.shapes.get(name, spec["shape"]))
            return Dims(_resolve(spec, self.engine, self.shapes))

        def infer_shapes(self) -> list[str]:
            return [n for n in self.engine.input_names if -1 in self.get_tensor_shape(n)]

        def set_tensor_address(self, name: str, address: int) -> bool:
            if name not in self.engine.tensors:
                log(self.engine.logger, f"IExecutionContext::setTensorAddress: Error Code 3: no tensor named {name}")
                return False
            if int(address) % ALIGN:  # R3: 256-byte alignment
                log(self.engine.logger, f"IExecutionContext::setTensorAddress: Error Code 3: {name} address "
                                        f"{int(address):#x} is not 256-byte aligned")
                return False
            self.addresses[name] = int(address)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self.addresses.get(name, 0)

        def set_device_memory(self, memory: int, size: int) -> None:
            self.memory = (int(memory), int(size))

        def execute_async_v3(self, stream_handle: int) -> bool:
            engine, logger = self.engine, self.engine.logger
            unset = self.infer_shapes()
            if unset:
                log(logger, f"IExecutionContext::enqueueV3: Error Code 3: input shape not set for {unset[0]}")
                return False
            for name in engine.tensors:  # R3
                if not self.addresses.get(name):
                    kind = "input" if name in engine.input_names else "output"
                    log(logger, "IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check "
                                f"failed, condition: Address is not set for {kind} tensor {name}. Call "
                                "setInputTensorAddress or setTensorAddress before enqueue/execute.)")
                    return False
            needed = engine.get_device_memory_size_for_profile_v2(self.profile)
            if self.memory is None or self.memory[1] < needed:  # R6
                log(logger, f"IExecutionContext::enqueueV3: Error Code 3: device memory of {needed} bytes needed for "
                            f"profile {self.profile}, got {self.memory}")
                return False
            frozen = (dict(self.shapes), dict(self.addresses), self.memory, needed)  # what a graph captures
            gpu.enqueue(stream_handle, lambda: _execute(engine, *frozen))
            return True

    def _execute(engine: ICudaEngine, shapes: dict, addresses: dict, memory: tuple, needed: int) -> None:
        gpu.view(memory[0], needed)  # the scratch must still be allocated and big enough
        feeds = {n: gpu.read(addresses[n], shapes[n], NP_OF[engine.tensors[n]["dtype"]]) for n in engine.input_names}
        session = trt.sessions.get(engine.plan["graph"])
        if session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.enable_cpu_mem_arena = False
            if ".fp16." in engine.plan["graph"]:  # as the onnxruntime backend runs fp16 graphs, for exact parity
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            session = onnxruntime.InferenceSession(engine.plan["graph"], options, providers=["CPUExecutionProvider"])
            trt.sessions[engine.plan["graph"]] = session
        results = session.run(None, feeds)
        for spec, value in zip(engine.plan["outputs"], results, strict=False):
            want = tuple(_resolve(spec, engine, shapes))
            if tuple(value.shape) != want:
                raise GpuFault(f"{spec['name']}: the graph made {value.shape}, the engine promised {want}")
            gpu.write(addresses[spec["name"]], value.astype(NP_OF[spec["dtype"]], copy=False))

    trt.Runtime, trt.ICudaEngine, trt.IExecutionContext = Runtime, ICudaEngine, IExecutionContext
    modules = {"tensorrt": trt}
    if v >= (10, 6):
        modules["tensorrt.plugin"] = _plugin_module(trt, aot=v >= (10, 9))
        trt.plugin = modules["tensorrt.plugin"]
    return modules


def _tensor_json(t) -> dict:
    return {"name": t.name, "dtype": t.dtype.name, "shape": list(t.shape), "symbols": list(t.symbols)}


def _resolve(spec: dict, engine, shapes: dict) -> list[int]:
    """An output's shape from its symbolic dims and the input shapes set (-1 where unknown)."""
    sizes = {}
    for name in engine.input_names:
        tensor = engine.tensors[name]
        for symbol, value in zip(tensor["symbols"], shapes.get(name, tensor["shape"]), strict=False):
            if symbol is not None and value != -1:
                sizes[symbol] = value
    return [d if d != -1 else sizes.get(s, -1) for d, s in zip(spec["shape"], spec["symbols"], strict=False)]


def _nbytes(spec: dict, shape: list[int]) -> int:
    return int(np.prod([max(d, 1) for d in shape], dtype=np.int64)) * np.dtype(NP_OF[spec["dtype"]]).itemsize


def _plugin_module(trt: ModuleType, aot: bool) -> ModuleType:
    """`tensorrt.plugin` (10.6+): decorators that record the plugin's functions in the double's registry."""
    trtp = _module("tensorrt.plugin")

    def decorator(kind: str):
        def named(plugin_id: str):
            def record(fn):
                entry = trt.plugin_registry.setdefault(plugin_id, {})
                if kind in entry:
                    raise ValueError(f"plugin {plugin_id} already has a {kind} function")
                entry[kind] = fn
                return fn
            return record
        return named

    trtp.register, trtp.impl, trtp.autotune = decorator("register"), decorator("impl"), decorator("autotune")
    for name in ("TensorDesc", "Tensor", "AutoTuneCombination"):
        setattr(trtp, name, type(name, (), {"__init__": lambda self, *args, **kwargs: None}))
    if aot:
        trtp.aot_impl = decorator("aot_impl")
        for name in ("KernelLaunchParams", "SymInt32", "SymIntExprs"):
            setattr(trtp, name, type(name, (), {"__init__": lambda self, *args, **kwargs: None}))
    return trtp
