"""Stage backend on OpenVINO's CPU plugin: the same stage graphs as onnxruntime, in fp32 or bf16.

Precision is a compile hint, not a graph: `bf16` compiles the fp32 graphs with OpenVINO's
`INFERENCE_PRECISION_HINT` bf16 (matmuls and convolutions in bfloat16, accumulations and the
rest as the plugin decides), only where the CPU has BF16 (AVX512-BF16 or AMX). Every other
precision is compiled with the hint f32, always explicit: on CPUs with BF16 the plugin's default
is bf16. Reduced-precision graph variants (fp16, ...) are read as exported and run under that hint.

The class axis: the decoder graphs compile with their class axes dynamic (one compiled model per
stage; see `model.decoder._class_tokens` for the export pattern that once prevented it). Graphs
that do not (artifacts exported before that fix) fall back to one compiled model per input shape,
kept in a bounded LRU cache (`static_shapes` entries), with a warning. A static cache can also be
asked for on purpose (`OpenvinoBackend.static_shapes`). benchmarks/studies/openvino_class_axis.py
measured both over a real CER sequence (benchmarks/results/openvino_class_axis_tiny.json): compiling
per class count cost 2.7x the decoder time of the dynamic graphs, so dynamic is the default.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sed_deploy.core.errors import ConfigError
from sed_deploy.core.manifest import Manifest, StageSpec
from sed_deploy.core.optional import available, require

from ..qdq import for_openvino
from .base import BackendError, StageBackend
from .options import BackendOptions, OpenvinoOptions

# what the plugin must report in OPTIMIZATION_CAPABILITIES for a precision hint
CAPABILITY_OF = {"bf16": "BF16"}
HINT_OF = {"bf16": "bf16"}  # precision -> INFERENCE_PRECISION_HINT; anything else "f32"
FALLBACK_CACHE = 8  # compiled shapes kept per stage when a graph does not compile dynamically

_core = None
_core_lock = threading.Lock()


def core():
    """The process's `openvino.Core` (one per process: it owns the plugin and its thread pools)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = require("openvino", "the openvino backend").Core()
        return _core


def cpu_capabilities() -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU plugin ("FP32", "BF16", "INT8", ...)."""
    return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def precision_unavailable_reason(precision: str | None, capabilities: list[str] | None = None) -> str | None:
    """Why OpenVINO cannot run `precision` on this CPU (None if it can)."""
    needed = CAPABILITY_OF.get(precision or "fp32")
    if needed is None:
        return None
    capabilities = cpu_capabilities() if capabilities is None else capabilities
    if needed in capabilities:
        return None
    return (f"{precision} needs a CPU with {needed} support (AVX512-BF16 or AMX) and this one has only "
            f"{', '.join(capabilities) or 'none'} in OpenVINO's capabilities; use --precision fp32")


def ov_reason(exc: BaseException) -> str:
    """OpenVINO's message without its "Exception from <file>:<line>:" trail: the lines that say something."""
    lines = [line.strip() for line in str(exc).splitlines()]
    said = [line for line in lines if line and not line.startswith("Exception from")]
    text = " ".join(said) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def compile_config(precision: str | None, threads: int | None) -> dict[str, Any]:
    """Compile properties of a stage: latency hint, one stream, the precision hint, threads."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                              "INFERENCE_PRECISION_HINT": HINT_OF.get(precision or "fp32", "f32")}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


class OpenvinoBackend(StageBackend):
    """A stage compiled by OpenVINO for the CPU.

    Reads `options.precision` (fp32 default, bf16 where the CPU has it, or an exported graph
    variant) and `options.threads` (INFERENCE_NUM_THREADS; default: the plugin's, one per core).

    Outputs are numpy views of the infer request's own tensors (no copy of the large decoder
    features), valid until the stage runs again: hence `serial_runs`.
    """

    name = "openvino"
    Options = OpenvinoOptions
    options: OpenvinoOptions  # made by the base class from whatever options were given
    serial_runs = True
    # 0: one compiled model with dynamic axes; N > 0: one per input shape, the N last used kept
    static_shapes = 0

    def __init__(self, spec: StageSpec, folder: str | Path, manifest: Manifest, options: BackendOptions) -> None:
        super().__init__(spec, folder, manifest, options)
        self.model = None
        self.config = compile_config(self.options.precision, self.options.threads)
        self.compiled: OrderedDict[Any, tuple[Any, Any]] = OrderedDict()
        self.cache_size = self.static_shapes
        self.compile_seconds = 0.0
        self.compiles = 0

    @classmethod
    def for_artifacts(cls, manifest: Manifest, folder: str | Path, options: BackendOptions) -> dict[str, StageBackend]:
        reason = precision_unavailable_reason(options.precision)
        if reason is not None:
            raise ConfigError(f"the openvino backend cannot run {options.precision} here: {reason}")
        return super().for_artifacts(manifest, folder, options)

    @property
    def dynamic(self) -> bool:
        return any(isinstance(d, str) for t in self.spec.inputs for d in t.shape)

    def _load(self) -> None:
        path = self.graph_path
        int8 = self.spec.runs_at(self.options.precision) == "int8"
        if int8 and not available("onnx"):
            raise BackendError(f"stage {self.spec.name}: openvino runs int8 graphs only after a load-time rewrite "
                               "that needs the onnx package (OpenVINO computes their int8-activation form wrongly): "
                               "pip install 'sed-deploy[openvino]'")
        try:  # int8: output Q/DQ stripped, uint8 activations (`runtime.qdq`: exact in the Q/DQ arithmetic)
            self.model = (core().read_model(model=for_openvino(path), weights=b"") if int8
                          else core().read_model(str(path)))
        except Exception as exc:  # openvino raises RuntimeError subclasses of its own
            raise BackendError(f"stage {self.spec.name}: openvino cannot read {path}: {ov_reason(exc)}") from None
        if self.cache_size and self.dynamic:
            return  # compiled per shape on first use
        try:
            self._compiled(None)
        except BackendError as exc:
            if not self.dynamic:
                raise
            self.cache_size = self.cache_size or FALLBACK_CACHE
            warnings.warn(f"{exc}; compiling it per class count instead (slower when counts change; re-export the "
                          "artifacts with this sed-deploy to compile it once)", stacklevel=2)

    def _compiled(self, shapes: tuple | None):
        """(compiled model, infer request) for these input shapes (None: the model as read)."""
        hit = self.compiled.get(shapes)
        if hit is not None:
            self.compiled.move_to_end(shapes)
            return hit
        ov = require("openvino", "the openvino backend")
        model = self.model
        if shapes is not None:
            model = self.model.clone()
            model.reshape({name: ov.PartialShape(list(shape)) for name, shape in shapes})
        start = time.perf_counter()
        try:
            compiled = core().compile_model(model, "CPU", self.config)
        except Exception as exc:
            where = "with dynamic axes" if shapes is None else f"for shapes {dict(shapes)}"
            raise BackendError(f"stage {self.spec.name}: openvino cannot compile {self.graph_path.name} {where}: "
                               f"{ov_reason(exc)}") from None
        self.compile_seconds += time.perf_counter() - start
        self.compiles += 1
        entry = (compiled, compiled.create_infer_request())
        self.compiled[shapes] = entry
        if shapes is not None:
            while len(self.compiled) > self.cache_size:
                self.compiled.popitem(last=False)
        return entry

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        shapes = None
        if self.cache_size and self.dynamic:
            shapes = tuple((t.name, tuple(feeds[t.name].shape)) for t in self.spec.inputs)
        compiled, request = self._compiled(shapes)
        inputs = {name: np.ascontiguousarray(value) for name, value in feeds.items()}
        try:
            results = request.infer(inputs, share_inputs=True, share_outputs=True)
        except Exception as exc:
            raise BackendError(f"stage {self.spec.name}: openvino failed: {ov_reason(exc)}") from None
        return {t.name: results[compiled.output(t.name)] for t in self.spec.outputs}

    def to_host(self, value) -> np.ndarray:
        return np.array(value)  # a copy: `value` is the request's buffer, rewritten by the next run

    def describe(self) -> str:
        hint = self.config["INFERENCE_PRECISION_HINT"]
        shapes = f", per-shape cache of {self.cache_size}" if self.cache_size and self.dynamic else ""
        computes = self.spec.runs_at(self.options.precision)  # a stage kept fp32 at export says fp32
        return f"{self.name} {computes} (hint {hint}{shapes})"

    def _close(self) -> None:
        self.compiled.clear()
        self.model = None
