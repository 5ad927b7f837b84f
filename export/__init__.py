"""Stage graphs of SED: stage wrappers, ONNX export, graph checks, validation against PyTorch, the manifest."""
