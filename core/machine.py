"""What a benchmark ran on: CPU, threads, GPU, library versions, the command. Recorded in every result.

Nothing here imports torch: GPU facts come from torch only when it is already imported, else from
NVML (pynvml) or `nvidia-smi` when present; TensorRT's version from its package metadata, or from the
module where it is installed outside pip (JetPack).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone

PACKAGES = (
    "sed-deploy", "numpy", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "open_clip_torch", "timm",
    "tensorrt", "cuda-bindings", "pycuda", "polygraphy", "triton", "matplotlib",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int | None:
    """CPUs this process may run on (affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def tensorrt_version() -> str | None:
    """TensorRT's version from pip metadata, or from the module (system installs); None if absent."""
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt
    except ImportError:
        return None
    return getattr(tensorrt, "__version__", None)


def _gpus_from_torch() -> list[dict] | None:
    torch = sys.modules.get("torch")  # only when the caller already imported it
    if torch is None or not torch.cuda.is_available():
        return None
    return [{"name": torch.cuda.get_device_name(i),
             "memory_mb": round(torch.cuda.get_device_properties(i).total_memory / 2**20),
             "cuda_runtime": torch.version.cuda} for i in range(torch.cuda.device_count())]


def _gpus_from_nvml() -> list[dict] | None:
    if importlib.util.find_spec("pynvml") is None:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append({"name": name.decode() if isinstance(name, bytes) else name,
                         "memory_mb": round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20),
                         "driver": driver.decode() if isinstance(driver, bytes) else driver,
                         "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}"})
        pynvml.nvmlShutdown()
        return gpus
    except Exception:  # noqa: BLE001  (NVML raises its own errors; no GPU facts is an answer)
        return None


def _gpus_from_smi() -> list[dict] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "memory_mb": int(float(parts[1])) if parts[1].isdigit() else parts[1],
                         "driver": parts[2]})
    return gpus or None


def gpu_info() -> list[dict]:
    """NVIDIA GPUs with name, memory and driver/CUDA versions where known; [] without a GPU."""
    gpus = _gpus_from_nvml() or _gpus_from_smi() or []
    from_torch = _gpus_from_torch()
    if from_torch:
        for i, extra in enumerate(from_torch):
            if i < len(gpus):
                gpus[i] = {**extra, **gpus[i], "cuda_runtime": extra["cuda_runtime"]}
            else:
                gpus.append(extra)
    return gpus


def machine_info() -> dict:
    """CPU model and counts, GPUs, OS, Python, package versions, time and command line."""
    found = versions()
    trt = tensorrt_version()
    if trt is not None:
        found["tensorrt"] = trt
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "gpus": gpu_info(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": found,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
    }
