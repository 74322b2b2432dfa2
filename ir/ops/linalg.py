"""linalg ops (to be filled in)."""
