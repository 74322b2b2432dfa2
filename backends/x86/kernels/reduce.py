"""x86 lowerings: reduce (to be filled in)."""
