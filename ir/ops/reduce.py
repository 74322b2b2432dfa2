"""reduce ops (to be filled in)."""
