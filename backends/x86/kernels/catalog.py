"""Imports every lowering module so that each registers itself."""

import importlib

FAMILIES = ("attention", "bounded", "conv", "conv_weight_grad", "data_movement", "elementwise", "fused", "gemm",
            "image", "indexing", "linalg", "matmul_nbits", "nms", "normalization", "norm_train", "optim", "pad", "pool",
            "quant", "quant_int8", "quant_rescale", "random", "reduce", "resize", "sequence", "signal", "vecmath")

for _family in FAMILIES:
    importlib.import_module(f"{__package__}.{_family}")
