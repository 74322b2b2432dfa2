"""x86 lowerings: random (to be filled in)."""
