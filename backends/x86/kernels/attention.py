"""x86 lowerings: attention (to be filled in)."""
