"""x86 lowerings: data_movement (to be filled in)."""
