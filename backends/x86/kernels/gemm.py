"""x86 lowerings: gemm (to be filled in)."""
