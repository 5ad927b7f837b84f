"""Put the CUDA and TensorRT doubles where `import tensorrt`, `cuda.bindings` and `pycuda` find them.

`doubles(version, layer)` returns the modules and the fake GPU; `install(monkeypatch, ...)` sets them
in `sys.modules` for one test and makes the runtime choose its CUDA layer afresh; `install_globally`
does the same for a subprocess script (no undo).
"""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace

from .cuda_double import FakeGpu, cudart_module, pycuda_module
from .tensorrt_double import tensorrt_modules

LAYER_ENV = {"cuda-python": "cuda-python", "pycuda": "pycuda"}


def doubles(version: str = "10.3", layer: str = "cuda-python", gpu: FakeGpu | None = None,
            dla_cores: int = 0) -> tuple[dict[str, ModuleType], SimpleNamespace]:
    gpu = gpu or FakeGpu()
    modules = tensorrt_modules(version, gpu, dla_cores)
    modules.update(cudart_module(gpu) if layer == "cuda-python" else pycuda_module(gpu))
    return modules, SimpleNamespace(gpu=gpu, trt=modules["tensorrt"], layer=layer)


def _reset() -> None:
    from sed_deploy.kernels import trt_plugin
    from sed_deploy.runtime.backends.cuda_memory import reset_cuda_api

    reset_cuda_api()
    trt_plugin._REGISTRATION.clear()


def install(monkeypatch, version: str = "10.3", layer: str = "cuda-python", gpu: FakeGpu | None = None,
            dla_cores: int = 0) -> SimpleNamespace:
    """The doubles in sys.modules for one test (monkeypatch undoes it); returns (gpu, trt, layer)."""
    modules, env = doubles(version, layer, gpu, dla_cores)
    for name in [m for m in sys.modules if m == "cuda" or m.startswith(("cuda.", "pycuda", "tensorrt"))]:
        monkeypatch.delitem(sys.modules, name)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("SED_DEPLOY_CUDA", LAYER_ENV[layer])
    _reset()
    monkeypatch.setattr("sed_deploy.runtime.backends.cuda_memory._API", {})
    return env


def install_globally(version: str = "10.3", layer: str = "cuda-python", gpu: FakeGpu | None = None) -> SimpleNamespace:
    """The doubles in sys.modules for the rest of this process (subprocess scripts)."""
    import os

    modules, env = doubles(version, layer, gpu)
    sys.modules.update(modules)
    os.environ["SED_DEPLOY_CUDA"] = LAYER_ENV[layer]
    _reset()
    return env
