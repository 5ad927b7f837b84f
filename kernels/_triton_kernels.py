"""The Triton source of linear attention along the class axis (plain functions, jitted on demand).

Owns only the kernel body. The functions here are deliberately NOT decorated with `@triton.jit`:
Triton decides between the compiler and the CPU interpreter (`TRITON_INTERPRET=1`) at decoration
time, so `triton_linear_attention.jit_kernel` decorates them when first needed, once per mode. This
module imports triton at the top and is only ever imported after `require("triton")` succeeded.

Parameter order is inputs, scalars, output, compile-time constants: TensorRT's AOT plugins launch a
kernel with (input pointers, extra int32 scalars, output pointers), and eps is a constexpr because
those extra scalars can only be integers. Do not add `from __future__ import annotations` here:
Triton reads the `tl.constexpr` annotations.
"""

import triton.language as tl


def linear_class_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    num_heads,
    num_classes,
    stride_qs,
    stride_qh,
    stride_qt,
    stride_qd,
    stride_ks,
    stride_kh,
    stride_kt,
    stride_kd,
    stride_vs,
    stride_vh,
    stride_vt,
    stride_vd,
    stride_os,
    stride_oh,
    stride_ot,
    stride_od,
    out_ptr,
    EPS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_T: tl.constexpr,
    FP16_DOT: tl.constexpr,
):
    """One program per (sequence s, head h) of [S,H,T,d] q, k, v; writes out[s, h, :, :].

    Pass 1 streams k and v once, accumulating kv = phi(k)^T v ([d,d]) and k_sum = sum_t phi(k_t)
    ([d]) in float32 registers. Pass 2 streams q once and writes
    out_t = (phi(q_t) @ kv / T) * T / (phi(q_t) . k_sum + eps).
    BLOCK_D >= 16 pads small head dims for tl.dot; padded lanes load zeros and are never stored.
    """
    pid = tl.program_id(0)
    seq = (pid // num_heads).to(tl.int64)
    head = (pid % num_heads).to(tl.int64)
    q_base = q_ptr + seq * stride_qs + head * stride_qh
    k_base = k_ptr + seq * stride_ks + head * stride_kh
    v_base = v_ptr + seq * stride_vs + head * stride_vh
    out_base = out_ptr + seq * stride_os + head * stride_oh

    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < HEAD_DIM

    kv = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    k_sum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for t_start in range(0, num_classes, BLOCK_T):
        t = t_start + offs_t
        valid = (t < num_classes)[:, None] & d_valid[None, :]
        k = tl.load(k_base + t[:, None] * stride_kt + offs_d[None, :] * stride_kd, mask=valid, other=0.0)
        v = tl.load(v_base + t[:, None] * stride_vt + offs_d[None, :] * stride_vd, mask=valid, other=0.0)
        k = k.to(tl.float32)
        # elu(x) + 1 written as the reference computes it, so both round alike; exp(0) = 1 on padded
        # lanes, hence the explicit zeroing.
        phi_k = tl.where(valid, tl.where(k > 0.0, k, tl.exp(k) - 1.0) + 1.0, 0.0)
        if FP16_DOT:
            kv += tl.dot(tl.trans(phi_k.to(tl.float16)), v.to(tl.float16), out_dtype=tl.float32)
        else:
            kv += tl.dot(tl.trans(phi_k), v.to(tl.float32), input_precision="ieee")
        k_sum += tl.sum(phi_k, axis=0)

    # Like the reference: the mean over classes (kv / T) keeps the fp16 operand of pass 2 in range.
    kv_mean = kv / num_classes
    for t_start in range(0, num_classes, BLOCK_T):
        t = t_start + offs_t
        valid = (t < num_classes)[:, None] & d_valid[None, :]
        q = tl.load(q_base + t[:, None] * stride_qt + offs_d[None, :] * stride_qd, mask=valid, other=0.0)
        q = q.to(tl.float32)
        phi_q = tl.where(valid, tl.where(q > 0.0, q, tl.exp(q) - 1.0) + 1.0, 0.0)
        if FP16_DOT:
            numerator = tl.dot(phi_q.to(tl.float16), kv_mean.to(tl.float16), out_dtype=tl.float32)
        else:
            numerator = tl.dot(phi_q, kv_mean, input_precision="ieee")
        normaliser = tl.sum(phi_q * k_sum[None, :], axis=1) + EPS
        out = numerator / normaliser[:, None] * num_classes
        tl.store(
            out_base + t[:, None] * stride_ot + offs_d[None, :] * stride_od,
            out.to(out_ptr.dtype.element_ty),
            mask=valid,
        )
