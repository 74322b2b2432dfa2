"""ONNX op converters, one module per op family. Importing this package registers them all."""

from . import (  # noqa: F401
               attention,
               control_flow,
               conv,
               elementwise,
               image,
               indexing,
               linalg,
               matmul_nbits,
               normalization,
               optional,
               pool,
               quant,
               random,
               reduce,
               sequence,
               shape,
               signal,
               tensor_sequence,
               training,
)
