"""The ASIC's instruction set, and its text assembler/disassembler.

An instruction is a mnemonic, integer fields, the dependency tokens it waits for (``pop``: the
queues whose tokens it consumes) and sends (``push``), and the index of the layer it belongs to.
Each mnemonic runs on one of five in-order engine queues:

    load   DRAM -> SRAM, 2-D strided with rows of padding     fields: mem dst dst_stride src src_stride
                                                                      rows cols pad_before pad_after pad
    store  SRAM -> DRAM, 2-D strided                           fields: mem src src_stride dst dst_stride rows cols
    gemm   acc[t,m] (+)= ispad[t,k] @ wspad[k,m]               fields: a a_stride w w_stride acc acc_stride t k m
                                                                      accumulate bias
    dwconv acc[p,c] = bias[c] + sum over taps of ispad[window of p, c] * wspad[tap, c]: the array's
           depthwise mode (channels across columns)        fields: a row_step w acc bias rows ow cols
                                                                      kh kw sh sw dh dw zp
    vec.*  the vector unit: requant, qadd, qmul, lut, gemv, max, mac, sum, add, mul, min, shift, clip, quant
    prefetch DRAM -> the buffer's resident region (weights a later layer reads), on its own queue
                                                               fields: src dst bytes
    config / finish

On-chip addresses and strides count elements of the memory (``ispad``, ``wspad``, ``buf`` hold int8;
``acc`` holds int32); DRAM addresses and strides count bytes. Tokens are counters per ordered pair
of queues: ``push=compute`` on a load adds one token to the load->compute FIFO and ``pop=load`` on a
gemm waits for (and removes) the oldest one. The text form is one instruction per line:

    load mem=ispad dst=0 dst_stride=64 src=4096 src_stride=64 rows=56 cols=64 pad_before=0 pad_after=0 pad=0
         layer=3 push=compute      (on one line)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from nnc.ir import NncError

QUEUES = ("load", "compute", "vector", "store", "prefetch")
MEMS = ("ispad", "wspad", "acc", "buf", "lut")
VEC_OPS = ("requant", "qadd", "qmul", "lut", "gemv", "max", "mac", "sum", "add", "mul", "min", "shift", "clip",
           "quant")
# vec.quant's lane operations per element: an FP32 divide by the scale, round half to even, add the zero
# point, saturate (the timing charges ceil(elements x this / lanes) cycles; docs/asic.md)
QUANT_LANE_OPS = 4
# The DMA address space: DRAM from 0, the buffer's resident-activation region from ACT_BASE
ACT_BASE = 1 << 40
# the vector unit's table memory: two 256-entry int8 tables (one loads while the other is read)
LUT_ENTRIES = 256
LUT_BYTES = 2 * LUT_ENTRIES

# mnemonic -> (queue, field names in print order)
_LOAD = ("mem", "dst", "dst_stride", "src", "src_stride", "rows", "cols", "pad_before", "pad_after", "pad")
_STORE = ("mem", "src", "src_stride", "dst", "dst_stride", "rows", "cols")
# gemm: with accumulate=0 and bias >= 0 the array's columns start from the bias row acc[bias, :m] instead of 0
_GEMM = ("a", "a_stride", "w", "w_stride", "acc", "acc_stride", "t", "k", "m", "accumulate", "bias")
# vector ops: dst/src operands are (mem, addr, stride); rows x cols elements
# dwconv: rows x ow output pixels of ``cols`` channels; acc[acc + (r*ow + o)*cols + c] = acc[bias + c] (the bias
# row the columns start from) + the sum over taps (i, j) of (ispad[a + (r*sh + i*dh)*row_step + (o*sw + j*dw)*cols
# + c] - zp) * wspad[w + (i*kw + j)*cols + c]
_DW = ("a", "row_step", "w", "acc", "bias", "rows", "ow", "cols", "kh", "kw", "sh", "sw", "dh", "dw", "zp")
_VEC = ("dst_mem", "dst", "dst_stride", "src_mem", "src", "src_stride", "rows", "cols")
SCHEMA: dict[str, tuple[str, tuple[str, ...]]] = {
    "config": ("compute", ("dataflow",)),
    "load": ("load", _LOAD),
    "store": ("store", _STORE),
    "gemm": ("compute", _GEMM),
    # prefetch: ``bytes`` from DRAM at ``src`` to the resident region at ``dst`` (>= ACT_BASE)
    "prefetch": ("prefetch", ("src", "dst", "bytes")),
    "dwconv": ("compute", _DW),
    # requant: dst(buf i8) = clamp(rne(src(acc) * mult / 2**shift) + zp); par = acc addr of [mult row; shift row]
    "vec.requant": ("vector", _VEC + ("par", "zp", "lo", "hi")),
    # qadd: dst(buf) = clamp(rne(((dst - a_zp) * a_mul + (src - b_zp) * b_mul) / 2**shift) + zp)
    "vec.qadd": ("vector", _VEC + ("a_zp", "b_zp", "a_mul", "b_mul", "shift", "zp", "lo", "hi")),
    # qmul: dst(buf i8) = clamp(rne((src - a_zp) * (row - b_zp) * mult / 2**shift) + zp), row = wspad [1, cols] at
    # ``row`` broadcast over the rows (squeeze-excite: a per-channel scale)
    "vec.qmul": ("vector", _VEC + ("row", "a_zp", "b_zp", "mult", "shift", "zp", "lo", "hi")),
    # gemv: dst(acc [1, cols]) (+)= sum over r < rows of src[r] * wspad[w + r * w_stride, :cols]; src = ispad
    # [1, rows]: a matrix-vector product (batch-1 fully connected) on the vector unit's MAC lanes
    "vec.gemv": ("vector", _VEC + ("w", "w_stride", "accumulate")),
    # lut: dst(i8) = lut[table + src + 128] for int8 src (buf or ispad); any int8 -> int8 activation
    "vec.lut": ("vector", _VEC + ("table",)),
    # max: dst(buf i8) = src (init=1) or max(dst, src)
    "vec.max": ("vector", _VEC + ("init",)),
    # mac: dst(acc) += (src(ispad) - zp) * w-row (wspad at w, broadcast over rows); depthwise conv
    "vec.mac": ("vector", _VEC + ("w", "zp")),
    # sum: dst(acc row) (+)= sum over the rows of src (ispad i8); global pooling
    "vec.sum": ("vector", _VEC + ("accumulate",)),
    # integer ALU on acc tiles: dst = dst OP src (add, min) or dst OP imm (mul, shift, clip)
    "vec.add": ("vector", _VEC),
    "vec.min": ("vector", _VEC),
    "vec.mul": ("vector", _VEC + ("imm",)),
    "vec.shift": ("vector", _VEC + ("imm",)),
    "vec.clip": ("vector", _VEC + ("lo", "hi")),
    # quant: dst(i8 [rows, cols]) = clamp(rne(f32 src / scale) + zp, -128, 127), src = rows x 4*cols bytes of
    # little-endian FP32 (buf; src_stride in bytes), scale = the FP32 whose bit pattern is scale_bits: the
    # model's input quantize, as the IR's quantize rounds it
    "vec.quant": ("vector", _VEC + ("scale_bits", "zp")),
    "finish": ("store", ()),
}
_STR_FIELDS = {"mem", "dst_mem", "src_mem", "dataflow"}


class AsmError(NncError):
    """A malformed instruction or assembly text."""


@dataclasses.dataclass(slots=True)
class Instr:
    op: str
    args: dict[str, Any]
    pop: tuple[str, ...] = ()
    push: tuple[str, ...] = ()
    layer: int = -1

    @property
    def queue(self) -> str:
        return SCHEMA[self.op][0]

    def text(self) -> str:
        fields = SCHEMA[self.op][1]
        parts = [self.op] + [f"{f}={self.args[f]}" for f in fields]
        if self.layer >= 0:
            parts.append(f"layer={self.layer}")
        if self.pop:
            parts.append("pop=" + ",".join(self.pop))
        if self.push:
            parts.append("push=" + ",".join(self.push))
        return " ".join(parts)


def make(op: str, layer: int = -1, **args: Any) -> Instr:
    """An instruction, its fields checked against the schema."""
    if op not in SCHEMA:
        raise AsmError(f"unknown instruction {op!r}")
    fields = SCHEMA[op][1]
    missing = [f for f in fields if f not in args]
    extra = [f for f in args if f not in fields]
    if missing or extra:
        raise AsmError(f"{op}: missing fields {missing}, unknown fields {extra}")
    for f in fields:
        v = args[f]
        if f in _STR_FIELDS:
            if f != "dataflow" and v not in MEMS:
                raise AsmError(f"{op}: {f}={v!r} is not a memory ({', '.join(MEMS)})")
        elif not isinstance(v, int):
            args[f] = int(v)
    return Instr(op, args, layer=layer)


def parse_line(line: str) -> Instr | None:
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    head, *rest = text.split()
    kv: dict[str, Any] = {}
    pop: tuple[str, ...] = ()
    push: tuple[str, ...] = ()
    layer = -1
    for tok in rest:
        if "=" not in tok:
            raise AsmError(f"expected key=value, got {tok!r} in: {line.strip()}")
        k, v = tok.split("=", 1)
        if k in ("pop", "push"):
            qs = tuple(q for q in v.split(",") if q)
            bad = [q for q in qs if q not in QUEUES]
            if bad:
                raise AsmError(f"unknown queue(s) {bad} in: {line.strip()}")
            if k == "pop":
                pop = qs
            else:
                push = qs
        elif k == "layer":
            layer = int(v)
        elif k in _STR_FIELDS:
            kv[k] = v
        else:
            try:
                kv[k] = int(v)
            except ValueError:
                raise AsmError(f"field {k} needs an integer, got {v!r} in: {line.strip()}") from None
    ins = make(head, layer, **kv)
    ins.pop, ins.push = pop, push
    return ins


def assemble(text: str) -> list[Instr]:
    """Assembly text -> instructions (comments start with '#')."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            ins = parse_line(line)
        except AsmError as e:
            raise AsmError(f"line {n}: {e}") from None
        if ins is not None:
            out.append(ins)
    return out


def disassemble(instrs: Iterable[Instr], header: Iterable[str] = ()) -> str:
    """Instructions -> assembly text, with optional '#' comment lines first."""
    lines = [f"# {h}" for h in header]
    lines += [i.text() for i in instrs]
    return "\n".join(lines) + "\n"
