"""ONNX op converters, one module per op family. Importing this package registers them all."""

from . import (attention, conv, elementwise, image, indexing, linalg, normalization, pool,  # noqa: F401
               quant, random, reduce, sequence, shape, signal)
