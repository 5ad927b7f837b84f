"""Linear attention along the class axis as one fused Triton kernel: the torch-facing launch.

`linear_class_attention(q, k, v)` computes what `reference.linear_class_attention_reference`
computes, for [S,H,T,d] float32 or float16 tensors, in one launch of S*H programs: each program
reads its k and v rows once (accumulating phi(k)^T v and sum phi(k) in float32 registers), then its
q rows once, and writes its output rows once. Any strides are accepted (the model passes views of
[S,T,H,d] memory), so no copy is made. Bytes moved, the bandwidth floor and how to time it are in
`kernels/README.md`.

Triton and the kernel source are imported on first use (`launch`), so this module imports without
triton. On
CUDA tensors the kernel is compiled; on CPU tensors it runs only under `TRITON_INTERPRET=1` (Triton's
interpreter, used by the tests).
"""

from __future__ import annotations

import torch

from .checks import KernelInputError, check_eps, check_qkv_shapes
from .launch import interpreting, jit_kernel, launch_config

SUPPORTED_DTYPES = (torch.float32, torch.float16)


def linear_class_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Linear attention over the class axis with the fused Triton kernel.

    Args:
        q: queries, [S,H,T,d] float32 or float16, any strides, 1 <= d <= 64.
        k: keys, [S,H,T,d], same dtype and device.
        v: values, [S,H,T,d], same dtype and device.
        eps: added to the normaliser.
        out: optional [S,H,T,d] tensor of the input dtype to write into (the tests pass a
            NaN-filled one so that an element the kernel misses is caught).

    Returns:
        [S,H,T,d] in the input dtype (`out` when given); accumulation is float32.
    """
    _check_tensors(q, k, v, eps)
    if out is None:
        out = torch.empty_like(q)  # keeps q's strides, so [S,T,H,d] memory stays [S,T,H,d]
    elif out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
        raise KernelInputError(
            f"expected out {list(q.shape)} {q.dtype} on {q.device}, got {list(out.shape)} {out.dtype} on {out.device}"
        )
    seqs, heads, classes, head_dim = q.shape
    if seqs * heads * classes == 0:
        return out
    config = launch_config(head_dim, classes, fp16=q.dtype == torch.float16, eps=eps)
    jit_kernel()[(seqs * heads,)](
        q,
        k,
        v,
        heads,
        classes,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *out.stride(),
        out,
        **config.constexprs(),
        num_warps=config.num_warps,
    )
    return out


def _check_tensors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> None:
    check_qkv_shapes(q.shape, k.shape, v.shape)
    check_eps(eps)
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise KernelInputError(f"expected q, k, v all float32 or all float16, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise KernelInputError(f"expected q, k, v on one device, got {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and not interpreting():
        raise KernelInputError(
            f"expected CUDA tensors (or TRITON_INTERPRET=1 for Triton's CPU interpreter), got tensors on {q.device}"
        )
