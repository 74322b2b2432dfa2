"""Imports every pass module so that each registers itself (see ``registry.py``)."""

from . import cse, dce, fold_constants, fold_dynamic, freeze, plan_memory  # noqa: F401
