"""x86 lowerings: image (to be filled in)."""
