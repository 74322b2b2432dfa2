"""nnc frontends."""
