"""Imports every pass module so that each registers itself (see ``registry.py``)."""

from . import cse, dce, fold_batchnorm, fold_constants, fold_dynamic, freeze, plan_memory, reparameterize, simplify  # noqa: F401
