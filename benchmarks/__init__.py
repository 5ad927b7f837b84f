"""Measurements: sed-bench, report writers, and small studies; results under benchmarks/results/."""
