"""Stage backend on ONNX Runtime: CPU here; CUDA and TensorRT execution providers with onnxruntime-gpu."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sed_deploy.core.errors import first_line
from sed_deploy.core.manifest import Manifest, StageSpec
from sed_deploy.core.optional import available, require

from ..qdq import for_onnxruntime
from .base import BackendError, StageBackend
from .options import BackendOptions, OrtOptions

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def available_providers() -> list[str]:
    return list(require("onnxruntime", "the onnxruntime backend").get_available_providers())


def resolve_providers(names: Sequence[str] | None) -> list[str]:
    """Full provider names for short ones ("cpu", "cuda", "tensorrt"); None = the best available.

    The best available is CUDA then CPU: the TensorRT execution provider is only used when asked
    for, because it builds engines on first use (minutes).
    """
    present = available_providers()
    if names is None:
        wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in present]
    else:
        wanted = [PROVIDER_ALIASES.get(n.lower(), n) for n in names]
        missing = [p for p in wanted if p not in present]
        if missing:
            raise BackendError(f"onnxruntime provider(s) {missing} not available here; available: {present}")
        if "CPUExecutionProvider" not in wanted:
            wanted.append("CPUExecutionProvider")
    return wanted


def session_options(spec: StageSpec, threads: int | None = None, float16: bool = False):
    """`onnxruntime.SessionOptions` for one stage graph.

    Args:
        spec: the stage (its plugin nodes need onnxruntime-extensions' custom op).
        threads: intra-op threads (default: one per core).
        float16: the graph computes in float16 (ONNX Runtime 1.32's layout optimisations crash on
            float16 attention graphs: optimise one level below).
    """
    ort = require("onnxruntime", "the onnxruntime backend")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Each stage is its own session; with the CPU arena every session would keep a pool at its
    # own peak and the pools add up (PC-459 on B: over 20 GB). Without it, peaks don't stack.
    options.enable_cpu_mem_arena = False
    if threads:
        options.intra_op_num_threads = threads
    if float16:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if spec.plugins:  # the class-attention plugin node, as an onnxruntime-extensions op
        from sed_deploy.kernels.ort_plugin import ort_session_options

        options = ort_session_options(options)
    return options


class OrtBackend(StageBackend):
    """A stage on an `onnxruntime.InferenceSession`, created once at load.

    Reads `options.providers` (in order of preference; default CUDA if present, then CPU) and
    `options.threads` (default: ONNX Runtime's choice, one per core).
    """

    name = "ort"
    Options = OrtOptions
    options: OrtOptions  # made by the base class from whatever options were given

    def __init__(self, spec: StageSpec, folder: str | Path, manifest: Manifest, options: BackendOptions) -> None:
        super().__init__(spec, folder, manifest, options)
        self.providers = resolve_providers(self.options.providers)
        self.threads = self.options.threads
        self.session = None

    def _load(self) -> None:
        ort = require("onnxruntime", "the onnxruntime backend")
        computes = self.spec.runs_at(self.options.precision)
        options = session_options(self.spec, self.threads, computes == "fp16")
        path = self.graph_path
        try:
            self.session = ort.InferenceSession(self._graph(path, computes), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"stage {self.spec.name}: onnxruntime cannot load {path}: {first_line(exc)}") from None

    @staticmethod
    def _graph(path: Path, computes: str) -> str | bytes:
        """What the session loads: the file, or for int8 graphs their uint8-activation form (exact, and
        the form ONNX Runtime fuses into QLinearConv on x86; `qdq`), which needs the onnx package."""
        if computes == "int8":
            if available("onnx"):
                return for_onnxruntime(path)
            warnings.warn(f"{path.name} runs as written, slower than its rewritten form: install onnx "
                          "(pip install 'sed-deploy[int8]') for ONNX Runtime's fused int8 kernels", stacklevel=2)
        return str(path)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [t.name for t in self.spec.outputs]
        try:
            outputs = self.session.run(names, dict(feeds))
        except Exception as exc:
            raise BackendError(f"stage {self.spec.name}: onnxruntime failed: {first_line(exc)}") from None
        return dict(zip(names, outputs, strict=True))

    def _close(self) -> None:
        self.session = None

    def describe(self) -> str:
        """"ort int8", or "ort fp32" for a stage whose int8 (fp16) variant is its fp32 graph."""
        return f"{self.name} {self.spec.runs_at(self.options.precision)}"
