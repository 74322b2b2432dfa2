"""conv ops (to be filled in)."""
