"""x86 lowerings: quant (to be filled in)."""
