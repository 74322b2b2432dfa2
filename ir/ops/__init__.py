"""Op families. Importing this package registers every op (see ``ir/registry.py``)."""

from . import (attention, conv, core, elementwise, image, indexing, linalg, normalization, pool,  # noqa: F401
               quant, random, reduce, sequence, shape, signal)
