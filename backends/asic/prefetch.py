"""Weight prefetch: the weights of a batch-1 fully connected layer (the classifier, squeeze-excite's fc
layers) are copied from DRAM into the buffer's resident region while earlier layers leave DRAM idle,
so the layer reads them at ``act_buffer_gbps`` instead of waiting for DRAM.

Such a layer does a handful of MACs per weight byte, so on its own it is bound by its weights' DRAM
time (MobileNetV3-large: 4.5 MB in its fc layers, 0.33 ms at 13.6 GB/s). The compute-bound conv layers
before it leave DRAM bandwidth unused. ``WeightPrefetcher`` plans, in program order: a range of the
resident region is reserved for the layer's weights from up to ``LOOKAHEAD`` layers before it until
it has read them (from the top of a free range, leaving room for the activations made meanwhile; the
first part of the weights if only that fits), and ``prefetch`` instructions (their own queue) copy
them there in chunks. The DRAM channel serves them last: the timing books a prefetch only when a load
first waits for it, in the gaps the transfers issued before that point left, so a prefetch delays no
transfer of the layers before its reader (docs/asic.md). A layer without a range, or with a host op
between, loads from DRAM as before. ``prefetch_weights: false`` in the config turns this off.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nnc.ir import Op

from .codegen import weight_blocks
from .config import AsicConfig
from .emitter import DramImage, Emitter
from .isa import ACT_BASE
from .partition import Layer
from .residency import ResidentActivations
from .tiling import choose_gemm_tiles

LOOKAHEAD = 10          # layers before its reader a prefetch may start
CHUNK = 4096            # bytes per prefetch instruction
MIN_BYTES = 32768       # a partial prefetch smaller than this is not worth a range


def fc_weights(layer: Layer) -> tuple[int, np.ndarray] | None:
    """(K, the [K, M] weight matrix) of a batch-1 product on one group (P = 1), else None."""
    sp = layer.spec
    op = sp.get("op") if layer.kind == "gemm" else None
    if op is None:
        return None
    w = sp["w"]
    if op.opname == "qconv":
        if op.attrs["group"] != 1 or int(np.prod(op.results[0].type.shape[2:])) * op.results[0].type.shape[0] != 1:
            return None
        mat = w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
    elif int(np.prod(layer.inputs[0].type.shape[:-1])) == 1:
        mat = w
    else:
        return None
    return mat.shape[0], np.ascontiguousarray(mat)


@dataclasses.dataclass
class _Plan:
    reader: int                 # schedule index of the layer that reads the weights
    blocks: list[list[int]]     # DRAM addresses of the weight blocks, as that layer lays them out
    base: int                   # first DRAM byte of the blocks
    nbytes: int                 # bytes prefetched: the first ``nbytes`` of the blocks (all, if they fit)
    offset: int                 # where they go in the resident region
    over: list[Any]             # keys of the values that were in that range (the copy waits for their reads)

    @property
    def key(self) -> tuple[str, int]:
        """The whole range: its readers, so that a value placed over it later waits for them."""
        return ("prefetch", self.reader)

    def chunk_key(self, off: int) -> tuple[str, int, int]:
        """The chunk of the range holding byte ``off``: what a weight load of those bytes waits for."""
        return ("prefetch", self.reader, off // CHUNK)

    def locate(self, addr: int, nbytes: int) -> tuple[int, list[Any]]:
        """Where a weight load of ``nbytes`` at DRAM ``addr`` reads (the region when the prefetch holds
        all of them, else DRAM) and the keys it waits for."""
        o = addr - self.base
        if o + nbytes > self.nbytes:
            return addr, []
        chunks = range(o // CHUNK, (o + nbytes - 1) // CHUNK + 1)
        return ACT_BASE + self.offset + o, [self.key] + [self.chunk_key(c * CHUNK) for c in chunks]


class WeightPrefetcher:
    def __init__(self, cfg: AsicConfig, items: list[tuple[str, Any]]):
        self.cfg = cfg
        self.items = items
        on = cfg.prefetch_weights and not cfg.ideal_bandwidth
        self.candidates = [i for i, (_, it) in enumerate(items)
                           if on and isinstance(it, Layer) and fc_weights(it) is not None]
        # the index of each chip layer (what a prefetch's ``layer`` names: the layer that reads it)
        self.layer_of = {i: n for n, i in enumerate(i for i, (_, it) in enumerate(items) if isinstance(it, Layer))}
        self.active: dict[int, _Plan] = {}
        self.bytes = 0
        self.layers = 0

    def after(self, idx: int, em: Emitter, dram: DramImage, resident: ResidentActivations) -> None:
        """After the layer at ``idx``: reserve ranges for the next readers within reach and emit their
        copies (the timing books them in the DRAM time the other transfers leave)."""
        for j in self.candidates:
            if j <= idx or j in self.active or j - idx > LOOKAHEAD:
                continue
            if any(isinstance(it, Op) for _, it in self.items[idx + 1:j]):
                continue  # a host op in between ends the chip segment
            self._start(j, idx, em, dram, resident)

    def before(self, idx: int) -> tuple[list[list[int]], Any] | None:
        """For the layer at ``idx``: (its weight blocks' DRAM addresses, ``_Plan.locate``), or None when
        nothing of its weights was prefetched."""
        plan = self.active.pop(idx, None)
        if plan is None:
            return None
        self.layers += 1
        return plan.blocks, plan.locate

    def _start(self, j: int, idx: int, em: Emitter, dram: DramImage, resident: ResidentActivations) -> None:
        layer = self.items[j][1]
        K, mat = fc_weights(layer)  # type: ignore[misc]
        tiles = choose_gemm_tiles(self.cfg, 1, K, mat.shape[1], "residual" in layer.spec, layer.name)
        # the blocks' bytes as weight_blocks lays them out (each put is aligned)
        total = sum(-(-K * min(tiles.mb, mat.shape[1] - m0) // dram.align) * dram.align
                    for m0 in range(0, mat.shape[1], tiles.mb))
        # leave room for the activations made meanwhile (a layer's input and output at most)
        outs = [int(np.prod(it.output.type.shape)) * it.output.type.dtype.itemsize
                for _, it in self.items[idx + 1:j] if isinstance(it, Layer) and it.output.type.shape is not None]
        spot = resident.reserve(total, idx, j, ("prefetch", j), least=min(total, MIN_BYTES),
                                keep=2 * max(outs, default=0))
        if spot is None:
            return
        base = dram.size
        blocks = weight_blocks(dram, [mat], tiles.mb)
        assert dram.size - base == total
        plan = _Plan(j, blocks, base, spot[2], spot[0], spot[1])
        self.active[j] = plan
        for off in range(0, plan.nbytes, CHUNK):
            ins = em.emit("prefetch", writes=[plan.chunk_key(off)], waits=plan.over, src=base + off,
                          dst=ACT_BASE + plan.offset + off, bytes=min(CHUNK, plan.nbytes - off))
            ins.layer = self.layer_of[j]
        self.bytes += plan.nbytes
