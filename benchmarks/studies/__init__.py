"""One-off studies that back a claim of the README; each imports torch (or triton) and is run by hand.

| module | claim |
|---|---|
| `text_truncation` | encoding prompts truncated to the longest one is exact and faster |
| `kernel_linear_attention` | the Triton class-attention kernel against its reference, on a GPU |
"""
