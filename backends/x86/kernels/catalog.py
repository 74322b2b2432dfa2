"""Imports every lowering module so that each registers itself."""

from . import elementwise, linalg  # noqa: F401
