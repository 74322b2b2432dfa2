"""x86 kernel lowerings, one module per op family (see ``registry.py``)."""
