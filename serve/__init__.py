"""`sed-serve`: the SED `Pipeline` behind NVIDIA Triton Inference Server (PyTriton), and a model
repository with a Python-backend (BLS) model for NVIDIA's Triton container. See README.md."""
