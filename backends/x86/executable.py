"""The compiled model as a callable: one foreign call per run.

The arena is allocated once per executable and reused across calls; outputs are fresh numpy arrays
(the caller owns them). ``run`` checks the feeds with the same rules as the interpreter.
"""

from __future__ import annotations

import ctypes
from typing import Any, Mapping

import numpy as np

from nnc.ir import Graph, Module
from nnc.ir.interpreter import check_feeds

from .storage import StorageMap

_ENTRY_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class X86Executable:
    target = "x86"

    def __init__(self, module: Module, graph: Graph, storage: StorageMap, entry_address: int, keepalive: Any):
        self.module = module
        self.graph = graph
        self.storage = storage
        self._keepalive = keepalive  # the JIT engine owning the code
        self._entry = _ENTRY_T(entry_address)
        self._arena = np.zeros(max(storage.arena_bytes, 64) + 64, dtype=np.uint8)
        self._arena_ptr = _aligned_ptr(self._arena)
        self._weights = storage.weights
        self._out_types = [v.type for v in graph.outputs]
        self._in_ptrs = (ctypes.c_void_p * max(len(graph.params), 1))()
        self._out_ptrs = (ctypes.c_void_p * max(len(graph.outputs), 1))()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        args = check_feeds(self.graph, feeds, self.module)
        keep = []
        for i, a in enumerate(args):
            a = np.ascontiguousarray(a)
            keep.append(a)
            self._in_ptrs[i] = a.ctypes.data
        outs = []
        for j, t in enumerate(self._out_types):
            o = np.empty(t.shape, dtype=t.dtype.numpy)
            outs.append(o)
            self._out_ptrs[j] = o.ctypes.data
        self._entry(ctypes.addressof(self._in_ptrs), ctypes.addressof(self._out_ptrs), self._arena_ptr,
                    self._weights.ctypes.data)
        return dict(zip(self.graph.output_names, outs))


def _aligned_ptr(buf: np.ndarray) -> int:
    addr = buf.ctypes.data
    return (addr + 63) // 64 * 64
