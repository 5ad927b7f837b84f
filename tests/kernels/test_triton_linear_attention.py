"""The Triton kernel against the reference under Triton's CPU interpreter (in a child process), its
argument checks, the reference against a naive formula, and the model's class attention on CUDA (gpu)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sed_deploy.kernels.checks import KernelInputError
from sed_deploy.kernels.reference import linear_class_attention_reference

CLASS_COUNTS = (1, 2, 7, 17, 150, 459)
HEAD_DIMS = (8, 16, 32)
LARGE_CLASS_COUNT = 1031  # past 1024 and not a multiple of any block
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def model_layout_qkv(seqs, heads, classes, head_dim, dtype, generator):
    """q, k, v as the model passes them: [S,H,T,d] views of [S,T,H*d] projections (not contiguous)."""
    tensors = []
    for _ in range(3):
        tokens = torch.randn(seqs, classes, heads * head_dim, generator=generator).to(dtype)
        tensors.append(tokens.reshape(seqs, classes, heads, head_dim).transpose(1, 2))
    return tensors


def naive_linear_attention(q, k, v, eps=1e-6):
    """The formula of spec 7 written out in float64, without the reference's 1/T and T scaling."""
    q, k, v = q.double(), k.double(), v.double()
    phi_q = torch.where(q > 0, q + 1, torch.exp(q))
    phi_k = torch.where(k > 0, k + 1, torch.exp(k))
    similarity = torch.einsum("shld,shtd->shlt", phi_q, phi_k)
    numerator = torch.einsum("shlt,shtd->shld", similarity, v)
    normaliser = torch.einsum("shld,shd->shl", phi_q, phi_k.sum(dim=2)) + eps
    return numerator / normaliser[..., None]


@pytest.fixture(scope="module")
def interpreter_results(new_seed) -> tuple[int, dict]:
    """Every interpreter case, run once in a child process with TRITON_INTERPRET=1 (see
    `interpreter_cases.py` for why); returns (seed, results by case name)."""
    pytest.importorskip("triton", reason="needs triton (the kernels extra)")
    seed = new_seed()
    cases = [[name, d, t] for name in ("fp32", "fp16") for d in HEAD_DIMS for t in CLASS_COUNTS]
    cases += [[name, 32, LARGE_CLASS_COUNT] for name in ("fp32", "fp16")]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    script = Path(__file__).with_name("interpreter_cases.py")
    request = json.dumps({"seed": seed, "cases": cases})
    done = subprocess.run(
        [sys.executable, str(script), request], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"interpreter run failed (seed={seed}, rc={done.returncode}):\n{done.stderr[-4000:]}")
    return seed, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize(
    ("head_dim", "classes"),
    [(d, t) for d in HEAD_DIMS for t in CLASS_COUNTS] + [(32, LARGE_CLASS_COUNT)],
)
def test_kernel_matches_reference_in_interpreter(interpreter_results, dtype, head_dim, classes):
    seed, results = interpreter_results
    result = results[f"{dtype}-{head_dim}-{classes}"]

    assert result["returned_out"], f"the kernel did not return the given out (seed={seed})"
    assert result["all_written"], f"unwritten or non-finite output elements (seed={seed})"
    tolerance = TOLERANCE[torch.float32 if dtype == "fp32" else torch.float16]
    assert result["error"] < tolerance, f"relative error {result['error']:.2e} (seed={seed})"


def test_kernel_allocates_output_like_q_in_interpreter(interpreter_results):
    seed, results = interpreter_results
    result = results["default_output"]

    assert result["same_layout"], f"output shape, dtype or strides differ from q (seed={seed})"
    assert result["error"] < 1e-5, f"relative error {result['error']:.2e} (seed={seed})"


class TestKernelArguments:
    def test_rejects_mismatched_shapes(self):
        from sed_deploy.kernels.triton_linear_attention import linear_class_attention

        q = torch.zeros(2, 2, 5, 8)
        with pytest.raises(KernelInputError, match=r"expected q, k, v of one shape, got \[2, 2, 5, 8\]"):
            linear_class_attention(q, q, torch.zeros(2, 2, 6, 8))

    def test_rejects_large_head_dim(self):
        from sed_deploy.kernels.triton_linear_attention import linear_class_attention

        q = torch.zeros(1, 1, 3, 128)
        with pytest.raises(KernelInputError, match="expected a head dim d in 1..64, got 128"):
            linear_class_attention(q, q, q)

    def test_rejects_other_dtypes(self):
        from sed_deploy.kernels.triton_linear_attention import linear_class_attention

        q = torch.zeros(1, 1, 3, 8, dtype=torch.float64)
        with pytest.raises(KernelInputError, match="expected q, k, v all float32 or all float16, got torch.float64"):
            linear_class_attention(q, q, q)

    def test_rejects_cpu_tensors_without_interpreter(self, monkeypatch):
        pytest.importorskip("triton")
        from sed_deploy.kernels.triton_linear_attention import linear_class_attention

        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        q = torch.zeros(1, 1, 3, 8)
        with pytest.raises(KernelInputError, match="expected CUDA tensors .* got tensors on cpu"):
            linear_class_attention(q, q, q)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("classes", (1, 7, 150))
def test_reference_matches_naive_formula(generator, seed, dtype, classes):
    q, k, v = (torch.randn(4, 2, classes, 16, generator=generator).to(dtype) for _ in range(3))

    out = linear_class_attention_reference(q, k, v)

    assert out.dtype == dtype
    error = relative_error(out, naive_linear_attention(q, k, v))
    assert error < TOLERANCE[dtype], f"relative error {error:.2e} (seed={seed})"


def test_dispatch_uses_reference_on_cpu(generator):
    from sed_deploy.kernels.dispatch import class_attention

    q, k, v = model_layout_qkv(2, 4, 9, 8, torch.float32, generator)
    assert torch.equal(class_attention(q, k, v), linear_class_attention_reference(q, k, v))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    ("dim", "seqs"), [(128, 576), (64, 2304), (32, 9216)], ids=["decoder1", "decoder2", "decoder3"]
)
def test_model_class_attention_on_cuda_uses_kernel(monkeypatch, seed, dtype, dim, seqs, torch_cuda):
    pytest.importorskip("triton", reason="needs triton (the kernels extra)")
    from sed_deploy.kernels import dispatch
    from sed_deploy.model.decoder import LinearAttentionLayer

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert dispatch.triton_available()
    torch.manual_seed(seed)
    layer = LinearAttentionLayer(dim, num_heads=4).cuda().to(dtype)
    x = torch.randn(seqs, 459, dim, device="cuda", dtype=dtype)
    calls = []
    original = dispatch.linear_class_attention_reference

    def counting_reference(*args):
        calls.append(1)
        return original(*args)

    with torch.no_grad():
        kernel_out = layer(x)
        monkeypatch.setattr(dispatch, "linear_class_attention_reference", counting_reference)
        monkeypatch.setattr(dispatch, "triton_available", lambda: False)
        reference_out = layer(x)

    assert calls, "the second call should have taken the reference path"
    error = relative_error(kernel_out, reference_out)
    assert error < TOLERANCE[dtype], f"relative error {error:.2e} (seed={seed})"
