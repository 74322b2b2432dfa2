"""PyTorch frontend: ``torch.export`` (core ATen) programs lowered straight to nnc IR.

torch is optional: nothing here imports it at module import time.
"""
