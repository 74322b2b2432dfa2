"""From a partitioned integer graph to a Program: DRAM placement of every chip tensor, the instruction
stream (one segment per run of consecutive chip layers, ended by ``finish``), the host ops between
segments, and the transfers between host and chip memory.

Layouts: a rank-4 activation is NHWC in DRAM, anything else row-major; ``to_dram``/``from_dram``
convert when a tensor crosses between host and chip.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from nnc.ir import Module, Op, Value
from nnc.ir.ops.conv import fill, resolve_pads

from . import codegen, codegen_depthwise, codegen_quantize, codegen_vector
from .config import AsicConfig
from .emitter import DramImage, Emitter
from .isa import ACT_BASE, Instr
from .partition import Layer, match_layers
from .prefetch import WeightPrefetcher
from .residency import ResidentActivations


@dataclasses.dataclass
class Placement:
    addr: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def to_dram(a: np.ndarray) -> bytes:
    a = np.asarray(a)
    if a.ndim == 4:
        a = a.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(a).tobytes()


def from_dram(dram: np.ndarray, p: Placement) -> np.ndarray:
    raw = dram[p.addr:p.addr + p.nbytes].view(p.dtype)
    if len(p.shape) == 4:
        n, c, h, w = p.shape
        return raw.reshape(n, h, w, c).transpose(0, 3, 1, 2).copy()
    return raw.reshape(p.shape).copy()


@dataclasses.dataclass
class Segment:
    start: int      # first instruction
    end: int        # one past the finish


@dataclasses.dataclass
class Program:
    cfg: AsicConfig
    instrs: list[Instr]
    dram: DramImage
    layers: list[Layer]
    layer_info: list[dict[str, Any]]
    schedule: list[tuple[str, Any]]        # ("host", op) | ("chip", segment index)
    segments: list[Segment]
    placement: dict[int, Placement]         # value id -> DRAM placement
    imports: dict[int, list[Value]]         # segment -> host values written to DRAM before it
    exports: list[Value]                    # chip values the host reads (after their segment)
    alias: dict[int, Value]
    resident: dict[str, int] = dataclasses.field(default_factory=dict)   # values, peak_bytes, capacity_bytes
    # FP32 graph inputs the chip reads from its own DRAM (the input quantize on the chip): written there
    # before the run, by whatever produces the input, not sent over the host link
    dram_inputs: list[Value] = dataclasses.field(default_factory=list)

    def transfer_bytes(self) -> int:
        vals = [v for vs in self.imports.values() for v in vs] + self.exports
        return sum(self.placement[id(self.resolve(v))].nbytes for v in vals)

    def resolve(self, v: Value) -> Value:
        return self.alias.get(id(v), v)


def _macs(layer: Layer) -> int:
    out = layer.spec.get("op")
    if layer.kind not in ("gemm", "dw") or out is None:
        return 0
    r = out.results[0].type.shape
    w = out.operands[1].type.shape
    return int(np.prod(r)) * int(np.prod(w[1:])) if out.opname == "qconv" else int(np.prod(r)) * int(w[0])


def build_program(module: Module, cfg: AsicConfig) -> Program:
    items, alias = match_layers(module, input_quantize=cfg.input_quantize == "chip")
    dram = DramImage()
    em = Emitter()
    placement: dict[int, Placement] = {}
    keys: dict[int, tuple] = {}
    layers: list[Layer] = []
    info: list[dict[str, Any]] = []
    schedule: list[tuple[str, Any]] = []
    segments: list[Segment] = []
    imports: dict[int, list[Value]] = {}
    exports: list[Value] = []
    dram_inputs: list[Value] = []
    produced_on_chip: set[int] = set()
    seg_start = None

    def place(v: Value) -> Placement:
        v = alias.get(id(v), v)
        if id(v) not in placement:
            dt = np.dtype(v.type.dtype.numpy)
            shape = tuple(int(d) for d in v.type.shape)
            placement[id(v)] = Placement(dram.alloc(int(np.prod(shape)) * dt.itemsize), shape, dt)
            keys[id(v)] = ("dram", id(v))
        return placement[id(v)]

    resident = ResidentActivations(cfg.sizes()["act"], items, alias, list(module.main.outputs))
    prefetcher = WeightPrefetcher(cfg, items)
    exported: set[int] = set()
    for idx, (_, item) in enumerate(items):
        if isinstance(item, Op):
            if seg_start is not None:
                em.finish()
                segments.append(Segment(seg_start, len(em.instrs)))
                seg_start = None
            for v in item.operands:
                r = alias.get(id(v), v)
                if id(r) in produced_on_chip and id(r) not in exported:
                    exported.add(id(r))
                    exports.append(r)
            schedule.append(("host", item))
            continue
        layer = item
        if seg_start is None:
            seg_start = len(em.instrs)
            schedule.append(("chip", len(segments)))
        em.layer = len(layers)
        for v in layer.inputs:
            r = alias.get(id(v), v)
            if id(r) not in produced_on_chip and id(r) not in placement:
                if layer.kind == "quant":
                    dram_inputs.append(r)
                else:
                    imports.setdefault(len(segments), []).append(r)
            place(r)
        out_key = ("dram", id(layer.output))
        spot = resident.place(layer, idx, out_key)
        if spot is not None:
            dt = np.dtype(layer.output.type.dtype.numpy)
            placement[id(layer.output)] = Placement(ACT_BASE + spot[0], tuple(int(d) for d in layer.output.type.shape),
                                                    dt)
            keys[id(layer.output)] = out_key
            em.also_writes[out_key] = spot[1]
        first = len(em.instrs)
        extra = _emit(em, cfg, dram, layer, place, keys, alias, prefetcher.before(idx))
        prefetcher.after(idx, em, dram, resident)
        produced_on_chip.add(id(layer.output))
        layers.append(layer)
        out = layer.output
        info.append({"name": layer.name, "kind": layer.kind, "op": "+".join(o.opname for o in layer.ops),
                     "shape": [int(d) for d in out.type.shape], "macs": _macs(layer),
                     "instrs": [first, len(em.instrs)], **extra})
    if seg_start is not None:
        em.finish()
        segments.append(Segment(seg_start, len(em.instrs)))
    g = module.main
    for v in g.outputs:
        r = alias.get(id(v), v)
        if id(r) in produced_on_chip and id(r) not in exported:
            exported.add(id(r))
            exports.append(r)
    on_chip = {"values": sum(1 for p in placement.values() if p.addr >= ACT_BASE), "peak_bytes": resident.peak,
               "capacity_bytes": resident.size, "prefetched_layers": prefetcher.layers,
               "prefetched_bytes": prefetcher.bytes}
    return Program(cfg, em.instrs, dram, layers, info, schedule, segments, placement, imports, exports, alias,
                   on_chip, dram_inputs)


def _window(x: Placement, op: Op, cg: int, c0: int) -> codegen.Window:
    n, c, h, w = x.shape
    k = op.operands[1].type.shape[2:] if op.opname == "qconv" else tuple(op.attrs["kernel_shape"])
    a = op.attrs
    s, d = fill(a["strides"], 2, 1), fill(a["dilations"], 2, 1)
    p = resolve_pads(a["auto_pad"], (h, w), k, s, d, a["pads"])
    oh, ow = op.results[0].type.shape[2:]
    return codegen.Window(x.addr, n, h, w, c, c0, cg, k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1],
                          int(oh), int(ow))


def _emit(em: Emitter, cfg: AsicConfig, dram: DramImage, layer: Layer, place, keys, alias,
          prefetched: tuple[list[list[int]], Any] | None = None) -> dict[str, Any]:
    sp = layer.spec
    out = place(layer.output)
    out_key = keys[id(layer.output)]
    x = place(layer.inputs[0])
    in_key = keys[id(alias.get(id(layer.inputs[0]), layer.inputs[0]))]
    name = layer.name
    if layer.kind in ("gemm", "dw"):
        op, w, epi = sp["op"], sp["w"], sp["epi"]
        zp = op.attrs.get("x_zero_point", op.attrs.get("a_zero_point", 0))
        res = None
        if "residual" in sp:
            rv = place(sp["residual_value"])
            res = {**sp["residual"], "addr": rv.addr, "out": out.addr,
                   "key": keys[id(alias.get(id(sp["residual_value"]), sp["residual_value"]))]}
        if layer.kind == "dw":
            C = w.shape[0]
            taps = int(np.prod(w.shape[2:]))
            win = _window(x, op, C, 0)
            return codegen_depthwise.emit_dw_layer(em, cfg, dram, name=name, win=win, out=out.addr, in_key=in_key,
                                          out_key=out_key, pad=zp, weights=w.reshape(C, taps).T.copy(),
                                          bias=sp["bias"], mult=epi["mult"], shift=epi["shift"], zp=epi["zp"],
                                          lo=epi["lo"], hi=epi["hi"], lut=sp.get("lut"))
        if op.opname == "qconv":
            G = op.attrs["group"]
            M, cg = w.shape[0], w.shape[1]
            mg = M // G
            mats = [w[g * mg:(g + 1) * mg].transpose(2, 3, 1, 0).reshape(-1, mg) for g in range(G)]
            wins = [_window(x, op, cg, g * cg) for g in range(G)]
            P, K = wins[0].P, mats[0].shape[0]
            a_addr = 0
        else:
            mats = [w]
            wins = None
            K = w.shape[0]
            P = int(np.prod(layer.inputs[0].type.shape[:-1]))  # x may be the placement of an aliased 4-D value
            a_addr = x.addr
        bias = sp["bias"]
        if zp:  # sum((x - zp) * w) = sum(x * w) - zp * sum(w): the gathered padding holds zp
            corr = np.concatenate([zp * m.astype(np.int64).sum(axis=0) for m in mats])
            bias = (np.zeros(corr.shape, np.int64) if bias is None else bias.astype(np.int64)) - corr
            bias = bias.astype(np.int32)  # wraps like the accumulator
        return codegen.emit_gemm_layer(em, cfg, dram, name=name, wins=wins, a_addr=a_addr, P=P, K=K,
                                       weights=[np.ascontiguousarray(m) for m in mats], bias=bias,
                                       mult=epi["mult"], shift=epi["shift"], epi_zp=epi["zp"], lo=epi["lo"],
                                       hi=epi["hi"], pad=zp, out=out.addr, in_key=in_key, out_key=out_key,
                                       residual=res, lut=sp.get("lut"), prefetched=prefetched)
    if layer.kind == "maxpool":
        win = _window(x, sp["op"], x.shape[1], 0)
        return codegen.emit_tap_layer(em, cfg, dram, name=name, win=win, kind="max", out=out.addr, in_key=in_key,
                                      out_key=out_key, pad=-128)
    if layer.kind == "gap":
        n, c, h, w_ = x.shape
        e = sp["epi"]
        return codegen.emit_gap_layer(em, cfg, dram, x=x.addr, N=n, HW=h * w_, C=c, offset=sp["offset"],
                                      mult=e["mult"], shift=e["shift"], zp=e["zp"], lo=e["lo"], hi=e["hi"],
                                      out=out.addr, in_key=in_key, out_key=out_key)
    if layer.kind == "lut":
        return codegen_vector.emit_lut_layer(em, cfg, dram, x=x.addr, n=math.prod(x.shape), out=out.addr,
                                             in_key=in_key, out_key=out_key, lut=sp["lut"])
    if layer.kind == "quant":
        return codegen_quantize.emit_quant_layer(em, cfg, x=x.addr, n=math.prod(x.shape), out=out.addr,
                                                 in_key=in_key, out_key=out_key, scale=sp["scale"], zp=sp["zp"])
    if layer.kind == "qmul":
        s = place(layer.inputs[1])
        skey = keys[id(alias.get(id(layer.inputs[1]), layer.inputs[1]))]
        n, c, h, w_ = x.shape
        return codegen_vector.emit_qmul_layer(em, cfg, dram, x=x.addr, scale=s.addr, N=n, HW=h * w_, C=c,
                                              scale_per_image=s.shape[0] == n and n > 1, out=out.addr,
                                              keys=(in_key, skey, out_key), attrs=sp["attrs"])
    if layer.kind == "qadd":
        b = place(layer.inputs[1])
        bkey = keys[id(alias.get(id(layer.inputs[1]), layer.inputs[1]))]
        return codegen.emit_qadd_layer(em, cfg, a=x.addr, b=b.addr, n=math.prod(x.shape), out=out.addr,
                                       keys=(in_key, bkey, out_key), attrs=sp["residual"])
    raise AssertionError(layer.kind)
