"""shape ops (to be filled in)."""
