"""`sed-eval`: mIoU on labelled folders, dataset converters, and the noisy class-name study (torch-free)."""
