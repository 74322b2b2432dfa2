"""x86 lowerings: vecmath (to be filled in)."""
