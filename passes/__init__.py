"""Passes that transform nnc IR, and the pass manager that runs them as pipelines."""

from .manager import PassManager, PassRecord, count_ops
from .pipeline import parse_pipeline
from .registry import Pass, PassError, all_passes, make_pass, register_pass

__all__ = ["PassManager", "PassRecord", "count_ops", "parse_pipeline", "Pass", "PassError", "all_passes",
           "make_pass", "register_pass"]
