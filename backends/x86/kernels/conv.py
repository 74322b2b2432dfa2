"""x86 lowerings: conv (to be filled in)."""
