"""Measurements of sed-deploy, by what they measure: `latency` (sed-bench), `accuracy` (sed-eval), `studies`.

Committed results live in `benchmarks/results/`.
"""
