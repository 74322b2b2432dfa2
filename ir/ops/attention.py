"""attention ops (to be filled in)."""
