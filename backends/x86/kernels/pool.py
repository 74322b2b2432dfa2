"""x86 lowerings: pool (to be filled in)."""
