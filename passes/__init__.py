"""nnc passes."""
