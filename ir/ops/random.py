"""random ops (to be filled in)."""
