"""x86 lowerings: sequence (to be filled in)."""
