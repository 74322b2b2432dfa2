"""x86 lowerings: normalization (to be filled in)."""
