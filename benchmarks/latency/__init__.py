"""`sed-bench`: latency of the staged pipeline per stage and end to end, backends side by side (torch-free)."""
