"""The torch-free bottom layer: what an edge device installs (numpy, Pillow, and a backend).

Errors, optional imports, pre- and post-processing, prompts, the embedding cache, pictures; the stage
backends and the pipeline build on these.
"""
