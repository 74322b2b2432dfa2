"""nnc backends."""
