"""quant ops (to be filled in)."""
