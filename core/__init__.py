"""The bottom layer of sed-deploy: what every other layer shares, and nothing else.

The stage contract as data (`contract`), the manifest of an artifacts folder and its schema
(`manifest`, `manifest_schema`), the errors (`errors`), optional imports (`optional`), atomic
writes and locks (`fileio`), progress bars (`progress`), machine facts (`machine`), the TensorRT
version floor (`tensorrt_api`) and the command-line error boundary (`cli`). It imports no other
layer of sed-deploy, and nothing heavier than numpy: an edge device installs it with one backend.
"""
