"""Imports every lowering module so that each registers itself."""

from . import (attention, conv, data_movement, elementwise, fused, gemm, image, indexing, linalg,  # noqa: F401
               normalization, pool, quant, random, reduce, resize, sequence, signal, vecmath)
