"""Reference of SED's linear attention along the class axis, in plain PyTorch.

The formula ("Transformers are RNNs", Katharopoulos et al. 2020, as SED uses it; spec section 7),
for every sequence s (a pixel) and head h, over the T class tokens:

    phi(x) = elu(x) + 1
    out_l  = sum_t (phi(q_l) . phi(k_t)) v_t / (phi(q_l) . sum_t phi(k_t) + eps)

No softmax, no 1/sqrt(d) scale. Like the original, values are divided by T before the sum and the
result multiplied by T again: the same number in exact arithmetic, but it keeps the d x d sum of
phi(k)^T v inside the float16 range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_class_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Linear attention over the class axis.

    Args:
        q: queries, [S,H,T,d] float32 or float16.
        k: keys, [S,H,T,d], same dtype.
        v: values, [S,H,T,d], same dtype.
        eps: added to the normaliser.

    Returns:
        [S,H,T,d] in the input dtype; float16 inputs are computed in float32.
    """
    dtype = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    num_classes = v.shape[-2]
    phi_q = F.elu(q) + 1.0
    phi_k = F.elu(k) + 1.0
    kv = phi_k.transpose(-1, -2) @ (v / num_classes)  # [S,H,d,d]
    normaliser = phi_q @ phi_k.sum(dim=-2).unsqueeze(-1) + eps  # [S,H,T,1]
    out = (phi_q @ kv) / normaliser * num_classes
    return out.to(dtype)
