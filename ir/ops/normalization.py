"""normalization ops (to be filled in)."""
