"""The TensorRT plugin `sed::linear_class_attention`: the Triton kernel inside TensorRT engines.

A "quickly deployable" Python plugin (`tensorrt.plugin`, TensorRT >= 10.6), registered by
`register_plugin()`; importing this module imports nothing of TensorRT, torch or triton.

- `register`: one output like q ([S,H,T,d], T symbolic), attribute `eps` (float).
- `autotune`: q, k, v and the output all float32 or all float16, linear layout.
- `impl` (JIT): the engine calls back into Python; the Triton kernel runs on TensorRT's stream
  through torch. Needs torch and triton at run time.
- `aot_impl` (TensorRT >= 10.9): the same Triton kernel compiled to PTX at build time and baked into
  the engine, so running it needs neither Python packages nor this module (trtexec and C++ can run
  the engine); building it needs triton. The ONNX node picks one with its `aot` attribute
  (`onnx_plugin`).

How the AOT kernel is called: TensorRT launches it with (input pointers, extra int32 scalars, output
pointers), so the kernel's parameters are in that order and eps is a compile-time constant. The
inputs TensorRT hands a plugin are contiguous, so the t and d strides are constants too and the
scalars are H, T and the s and h strides of q, k, v and out. Triton appends hidden scratch pointers
to every kernel's parameters, which TensorRT does not pass: none up to 3.2, `global_scratch` from
3.3, `profile_scratch` too from 3.5 (measured by compiling one kernel with each release). Their
number is read from the compiled kernel's metadata (`scratch_param_count`), never from a version
string; this kernel uses neither (the build checks that their sizes are 0), so they are cut from
the PTX entry, and the parameter list is exactly what TensorRT passes. The AOT build needs Triton
>= 3.3 (`ASTSource(constexprs=...)`). Set SED_DEPLOY_PTX_VERSION (e.g. 85) when the
driver is older than the PTX ISA of Triton's bundled ptxas (CUDA 12.6 drivers read up to 8.5).
The engine-level tests (`tests/kernels/test_trt_plugin.py`, marked gpu) build and run both.

Do not add `from __future__ import annotations`: `tensorrt.plugin` inspects real annotations.
"""

import os
import re
from dataclasses import dataclass
from typing import Any

from sed_deploy.core.errors import MissingDependencyError
from sed_deploy.core.optional import require
from sed_deploy.core.tensorrt_api import AOT_TENSORRT, PLUGIN_TENSORRT, require_tensorrt, version_tuple

from .checks import MAX_HEAD_DIM, KernelInputError
from .onnx_plugin import PLUGIN_ID

_FEATURE = "the attention plugin"
MIN_TRITON = (3, 3)
_REGISTRATION: list["PluginRegistration"] = []


@dataclass(frozen=True)
class PluginRegistration:
    """What `register_plugin` registered: the plugin id, and whether the ahead-of-time implementation
    exists besides the JIT one (always registered)."""

    plugin_id: str
    aot: bool


def register_plugin(require_aot: bool = False) -> PluginRegistration:
    """Register `sed::linear_class_attention` with TensorRT's plugin registry (once per process).

    Call before parsing an ONNX file that holds the plugin node and before deserializing an engine
    built with the JIT implementation.

    Args:
        require_aot: the graph asks for the ahead-of-time kernel (sed-export writes `aot=1`), which
            needs TensorRT >= 10.9.

    Returns:
        The registration: `aot` is False on TensorRT 10.6 to 10.8, which have no `aot_impl`.

    Raises:
        MissingDependencyError: in one line: tensorrt is missing, or older than 10.6 (no
            `tensorrt.plugin`: JetPack 6's 10.3), or older than 10.9 when `require_aot`.
    """
    trt = require_tensorrt(_FEATURE, PLUGIN_TENSORRT)
    if require_aot and version_tuple(trt.__version__) < AOT_TENSORRT:
        have = ".".join(str(x) for x in version_tuple(trt.__version__))
        raise MissingDependencyError(f"the attention plugin's ahead-of-time kernel (sed-export --attention plugin) "
                                     f"needs TensorRT >= 10.9; this is {have}")
    if _REGISTRATION:
        return _REGISTRATION[0]
    trtp = require("tensorrt.plugin", _FEATURE)
    _define_plugin(trtp)
    aot = hasattr(trtp, "aot_impl")
    if aot:
        _define_aot_impl(trt, trtp)
    _REGISTRATION.append(PluginRegistration(plugin_id=PLUGIN_ID, aot=aot))
    return _REGISTRATION[0]


def _define_plugin(trtp: Any) -> None:
    @trtp.register(PLUGIN_ID)
    def _describe(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, eps: float) -> trtp.TensorDesc:
        if q.ndim != 4:
            raise KernelInputError(f"expected q of rank 4 [S,H,T,d], got rank {q.ndim}")
        return q.like()

    @trtp.autotune(PLUGIN_ID)
    def _formats(q, k, v, outputs) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.impl(PLUGIN_ID)
    def _run(q, k, v, eps: float, outputs: tuple[trtp.Tensor], stream: int) -> None:
        torch = require("torch", "the JIT implementation of " + _FEATURE)
        from .triton_linear_attention import linear_class_attention

        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            q_t, k_t, v_t = (torch.as_tensor(t, device="cuda") for t in (q, k, v))
            linear_class_attention(q_t, k_t, v_t, eps, out=torch.as_tensor(outputs[0], device="cuda"))


def _define_aot_impl(trt: Any, trtp: Any) -> None:
    from typing import Union  # older tensorrt.plugin validators accept only typing.Union here

    @trtp.aot_impl(PLUGIN_ID)
    def _compile(
        q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, eps: float, outputs: tuple[trtp.TensorDesc], tactic
    ) -> tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:  # noqa: UP007
        shape = q.shape_expr
        if not shape[3].is_constant or not 1 <= shape[3].constant_value <= MAX_HEAD_DIM:
            raise KernelInputError(f"expected a static head dim d in 1..{MAX_HEAD_DIM}, got {shape[3]}")
        fp16 = q.dtype == trt.float16
        compiled, config = compile_aot_kernel(shape[3].constant_value, fp16, eps, ptx_version=_ptx_version())
        ptx = drop_unused_trailing_params(compiled.asm["ptx"], compiled.metadata.name,
                                          count=scratch_param_count(compiled.metadata))

        launch = trtp.KernelLaunchParams()
        launch.grid_x = shape[0] * shape[1]
        launch.block_x = config.num_warps * 32
        launch.shared_mem = compiled.metadata.shared
        heads, classes, head_dim = shape[1], shape[2], shape[3]
        seq_stride, head_stride = heads * classes * head_dim, classes * head_dim
        scalars = [heads, classes] + [seq_stride, head_stride] * 4  # q, k, v, out
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in scalars])
        return compiled.metadata.name.encode(), ptx.encode(), launch, extra


def aot_signature(head_dim: int, fp16: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """Triton signature and the stride constants of the kernel as TensorRT calls it (contiguous I/O).

    Returns:
        (signature, constants): argument name -> Triton type ("*fp16", "i32" or "constexpr"), and the
        values of the stride arguments that are constants (t stride d, d stride 1).
    """
    pointer = "*fp16" if fp16 else "*fp32"
    constants: dict[str, Any] = {}
    signature = {"q_ptr": pointer, "k_ptr": pointer, "v_ptr": pointer, "num_heads": "i32", "num_classes": "i32"}
    for tensor in ("q", "k", "v", "o"):
        signature[f"stride_{tensor}s"] = "i32"
        signature[f"stride_{tensor}h"] = "i32"
        constants[f"stride_{tensor}t"] = head_dim
        constants[f"stride_{tensor}d"] = 1
    signature["out_ptr"] = pointer
    return signature, constants


def compile_aot_kernel(
    head_dim: int, fp16: bool, eps: float, target: Any = None, ptx_version: int | None = None
) -> tuple[Any, Any]:
    """Compile the kernel for TensorRT's AOT launch (PTX); for this process's GPU unless `target`.

    Args:
        head_dim: d.
        fp16: float16 I/O (else float32).
        eps: added to the normaliser (a compile-time constant).
        target: a `triton.backends.compiler.GPUTarget`; None is the current GPU.
        ptx_version: PTX ISA to emit (e.g. 85); None is Triton's default.

    Returns:
        (compiled kernel, LaunchConfig). Raises `KernelInputError` if the compile needs scratch memory,
        which TensorRT does not provide.
    """
    triton = require("triton", "building the AOT implementation of " + _FEATURE)
    if version_tuple(triton.__version__) < MIN_TRITON:
        raise MissingDependencyError(f"the AOT build of {_FEATURE} needs triton >= 3.3 (ASTSource constexprs); "
                                     f"this is {triton.__version__}: pip install 'triton>=3.3'")
    from .launch import jit_kernel, launch_config

    config = launch_config(head_dim, None, fp16, eps)
    signature, constants = aot_signature(head_dim, fp16)
    constants.update(config.constexprs())
    for name in constants:
        signature[name] = "constexpr"
    kernel = jit_kernel(compiled=True)
    # The signature must list every parameter in the kernel's order.
    signature = {name: signature[name] for name in kernel.arg_names}
    aligned = {
        (kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in ("q_ptr", "k_ptr", "v_ptr", "out_ptr")
    }
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=aligned)
    options: dict[str, Any] = {"num_warps": config.num_warps}
    if ptx_version is not None:
        options["ptx_version"] = ptx_version
    compiled = triton.compile(source, target=target, options=options)
    for scratch in ("global_scratch_size", "profile_scratch_size"):
        if getattr(compiled.metadata, scratch, 0):
            raise KernelInputError(f"expected a kernel without {scratch}, got {getattr(compiled.metadata, scratch)}")
    return compiled, config


def scratch_param_count(metadata: Any) -> int:
    """How many hidden scratch pointers Triton appended to the kernel: 0 (<= 3.2), 1 (3.3, 3.4), 2 (>= 3.5).

    Read from the compiled kernel's metadata: `global_scratch_size` exists from 3.3 and
    `profile_scratch_size` from 3.5, each with one trailing pointer parameter.
    """
    return sum(hasattr(metadata, field) for field in ("global_scratch_size", "profile_scratch_size"))


def drop_unused_trailing_params(ptx: str, kernel_name: str, count: int) -> str:
    """Remove the last `count` parameters of PTX entry `kernel_name`; they must be unused in the PTX.

    Raises:
        KernelInputError: the entry is missing, has fewer parameters, or uses one of them.
    """
    entry = re.search(rf"\.entry\s+{re.escape(kernel_name)}\s*\(([^)]*)\)", ptx)
    if entry is None:
        raise KernelInputError(f"expected a PTX entry named {kernel_name}, got none")
    params = entry.group(1).split(",")
    if len(params) < count:
        raise KernelInputError(f"expected at least {count} parameters in {kernel_name}, got {len(params)}")
    for param in params[len(params) - count :]:
        name = param.split()[-1]
        if len(re.findall(rf"\b{re.escape(name)}\b", ptx)) != 1:
            raise KernelInputError(f"expected PTX parameter {name} unused, got uses in the kernel body")
    kept = ",".join(params[: len(params) - count]).rstrip() + "\n"
    return ptx[: entry.start(1)] + kept + ptx[entry.end(1) :]


def _ptx_version() -> int | None:
    value = os.environ.get("SED_DEPLOY_PTX_VERSION", "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise KernelInputError(f"expected SED_DEPLOY_PTX_VERSION an integer such as 85, got {value!r}")
    return int(value)
