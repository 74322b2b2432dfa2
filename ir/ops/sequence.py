"""sequence ops (to be filled in)."""
