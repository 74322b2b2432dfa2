"""pool ops (to be filled in)."""
