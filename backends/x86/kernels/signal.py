"""x86 lowerings: signal (to be filled in)."""
