"""signal ops (to be filled in)."""
