"""x86 lowerings: resize (to be filled in)."""
