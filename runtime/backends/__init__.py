"""Stage backends: onnxruntime, torch and tensorrt behind one interface."""
