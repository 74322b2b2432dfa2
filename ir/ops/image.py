"""image ops (to be filled in)."""
