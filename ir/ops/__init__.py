"""Op families. Importing this package registers every op (see ``ir/registry.py``)."""

from . import (  # noqa: F401
               attention,
               bounded,
               control_flow,
               conv,
               core,
               elementwise,
               image,
               indexing,
               linalg,
               normalization,
               optim,
               pool,
               quant,
               quant_weights,
               random,
               reduce,
               sequence,
               shape,
               signal,
               tensor_sequence,
)
