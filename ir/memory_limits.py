"""The memory bound every executor checks a tensor or arena against before allocating it.

A model whose intermediate needs terabytes should fail with a typed error naming that value and its
size, not with a ``MemoryError`` deep inside numpy, an allocation the kernel's overcommit grants and
the OOM killer later collects, or a crash. The bound is the machine's physical memory
(``SC_PHYS_PAGES * SC_PAGE_SIZE``): a request above it cannot be served without swapping the run
to a halt. It is the total, not ``MemAvailable``, so that whether a model runs does not depend on
what the neighbours happen to use at that moment. ``$NNC_MEMORY_LIMIT`` (bytes; suffixes K, M, G, T
accepted) lowers it, for a container or a test.
"""

from __future__ import annotations

import functools
import os

from .errors import NncError

ENV = "NNC_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@functools.lru_cache(maxsize=1)
def physical_memory_bytes() -> int | None:
    """Total physical memory, or None where the platform does not say."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def memory_limit() -> int | None:
    """The largest allocation a run may make: ``$NNC_MEMORY_LIMIT`` if set, else physical memory
    (None: no bound known)."""
    text = os.environ.get(ENV, "").strip().upper().removesuffix("B").removesuffix("I")
    if text:
        unit = text[-1] if text[-1] in _UNITS else ""
        try:
            return int(float(text[:len(text) - len(unit)]) * _UNITS[unit])
        except ValueError:
            pass  # a malformed override is ignored rather than failing every run
    return physical_memory_bytes()


def format_bytes(n: int) -> str:
    """``3.6 TiB (3,958,241,859,584 bytes)``: readable, and exact for the curious."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            break
        value /= 1024
    short = f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
    return f"{short} ({n:,} bytes)"


def check_allocation(nbytes: int, what: str, error: type[NncError]) -> None:
    """Raise ``error`` when ``nbytes`` (for ``what``, e.g. ``"%x (f32[...])"``) exceeds the bound."""
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        source = f"${ENV}" if os.environ.get(ENV, "").strip() else "physical memory"
        raise error(f"{what} needs {format_bytes(nbytes)}, more than this machine can give "
                    f"({format_bytes(limit)} of {source})")
