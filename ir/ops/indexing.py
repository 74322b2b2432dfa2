"""indexing ops (to be filled in)."""
