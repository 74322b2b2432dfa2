"""Imports every pass module so that each registers itself (see ``registry.py``)."""

from . import (  # noqa: F401  # noqa: F401
    batchnorm_affine,
    bound_kv_reads,
    cse,
    dce,
    fold_batchnorm,
    fold_constants,
    fold_dynamic,
    fold_symbolic_shapes,
    freeze,
    fuse,
    plan_memory,
    quantize,
    reparameterize,
    simplify,
)
from .training import remat  # noqa: F401,E402
