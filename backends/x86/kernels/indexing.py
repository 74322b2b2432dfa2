"""x86 lowerings: indexing (to be filled in)."""
