"""The functional layer of the simulator: executes instructions on explicit DRAM and SRAM arrays.

Memories are plain numpy arrays (DRAM bytes, int8 scratchpads and buffer, int32 accumulator); every
access is bounds-checked and a GEMM runs as one matrix product over whole tiles (exact: int8
products summed in float64 stay below 2**53, then wrap to int32 as the hardware's adder does).
Requantization and the residual add use the same int64 round-half-to-even arithmetic as the IR ops.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nnc.ir import NncError

from ..config import AsicConfig
from ..isa import ACT_BASE, LUT_BYTES, LUT_ENTRIES, Instr


class SimError(NncError):
    """An out-of-bounds access, a malformed instruction, or unbalanced tokens."""


def rounding_shift(p: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round_half_to_even(p / 2**shift) for int64 p, shift in [0, 62]."""
    s = np.asarray(shift, dtype=np.int64)
    q = p >> s
    r = p - (q << s)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 1)
    up = (r > half) | ((r == half) & ((q & 1) == 1))
    return q + (up & (s > 0))


class Machine:
    def __init__(self, cfg: AsicConfig, dram: np.ndarray):
        sizes = cfg.sizes()
        self.cfg = cfg
        self.dram = dram  # uint8, written in place
        self.mem = {"ispad": np.zeros(sizes["ispad"], np.int8), "wspad": np.zeros(sizes["wspad"], np.int8),
                    "buf": np.zeros(sizes["buf"], np.int8), "acc": np.zeros(sizes["acc"] // 4, np.int32),
                    "lut": np.zeros(LUT_BYTES, np.int8)}
        self.act = np.zeros(sizes["act"], np.uint8)  # the buffer's resident activations (DMA addresses >= ACT_BASE)

    # -- memory access --------------------------------------------------------------------------
    def tile(self, mem: str, addr: int, rows: int, cols: int, stride: int) -> np.ndarray:
        a = self.mem[mem]
        if rows <= 0 or cols <= 0:
            return a[:0].reshape(0, 0)
        end = addr + (rows - 1) * stride + cols
        if addr < 0 or end > a.size or stride < 0 or (rows > 1 and stride < cols):
            raise SimError(f"{mem}: tile at {addr} ({rows}x{cols}, stride {stride}) is out of bounds "
                           f"(size {a.size}) or overlaps itself")
        return as_strided(a[addr:], shape=(rows, cols), strides=(stride * a.itemsize, a.itemsize))

    def dram_tile(self, addr: int, rows: int, row_bytes: int, stride: int) -> np.ndarray:
        mem, name = (self.act, "act") if addr >= ACT_BASE else (self.dram, "dram")
        addr -= ACT_BASE if mem is self.act else 0
        end = addr + (rows - 1) * stride + row_bytes
        if addr < 0 or stride < 0 or end > mem.size:
            raise SimError(f"{name}: {rows}x{row_bytes} bytes at {addr} (stride {stride}) are out of bounds "
                           f"(size {mem.size})")
        return as_strided(mem[addr:], shape=(rows, row_bytes), strides=(stride, 1))

    # -- execution ------------------------------------------------------------------------------
    def run(self, instrs: list[Instr]) -> None:
        for ins in instrs:
            self.execute(ins)

    def execute(self, ins: Instr) -> None:
        a = ins.args
        op = ins.op
        if op == "load":
            self._load(a)
        elif op == "store":
            itemsize = self.mem[a["mem"]].itemsize
            src = self.tile(a["mem"], a["src"], a["rows"], a["cols"], a["src_stride"])
            if a["dst_stride"] < a["cols"] * itemsize and a["rows"] > 1:
                raise SimError("store: destination rows overlap")
            dst = self.dram_tile(a["dst"], a["rows"], a["cols"] * itemsize, a["dst_stride"])
            dst[...] = np.ascontiguousarray(src).view(np.uint8).reshape(dst.shape)
        elif op == "gemm":
            self._gemm(a)
        elif op == "prefetch":
            if a["src"] >= ACT_BASE or a["dst"] < ACT_BASE:
                raise SimError("prefetch: copies DRAM to the resident region")
            n = a["bytes"]
            self.dram_tile(a["dst"], 1, n, n)[...] = self.dram_tile(a["src"], 1, n, n)
        elif op == "dwconv":
            self._dwconv(a)
        elif op.startswith("vec."):
            self._vec(op[4:], a)
        elif op in ("config", "finish"):
            pass
        else:
            raise SimError(f"unknown instruction {op}")

    def _load(self, a: dict) -> None:
        mem = self.mem[a["mem"]]
        rows, pb, pa = a["rows"], a["pad_before"], a["pad_after"]
        dst = self.tile(a["mem"], a["dst"], pb + rows + pa, a["cols"], a["dst_stride"])
        if pb:
            dst[:pb] = a["pad"]
        if pa:
            dst[pb + rows:] = a["pad"]
        if rows:
            src = self.dram_tile(a["src"], rows, a["cols"] * mem.itemsize, a["src_stride"])
            dst[pb:pb + rows] = np.ascontiguousarray(src).view(mem.dtype)

    def _gemm(self, a: dict) -> None:
        t, k, m = a["t"], a["k"], a["m"]
        x = self.tile("ispad", a["a"], t, k, a["a_stride"])
        w = self.tile("wspad", a["w"], k, m, a["w_stride"])
        acc = self.tile("acc", a["acc"], t, m, a["acc_stride"])
        prod = (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
        if a["accumulate"]:
            prod += acc
        elif a["bias"] >= 0:
            prod += self.tile("acc", a["bias"], 1, m, m)
        acc[...] = prod.astype(np.int32)  # wraps modulo 2**32 like a 32-bit adder

    def _quant(self, a: dict) -> None:
        """FP32 -> int8 as the IR's quantize: x / scale in FP32, round half to even, + zp, saturate."""
        rows, cols = a["rows"], a["cols"]
        if self.mem[a["src_mem"]].dtype != np.int8 or self.mem[a["dst_mem"]].dtype != np.int8:
            raise SimError(f"vec.quant reads FP32 bytes from and writes int8 to byte memories, not "
                           f"{a['src_mem']} -> {a['dst_mem']}")
        raw = self.tile(a["src_mem"], a["src"], rows, 4 * cols, a["src_stride"])
        x = np.ascontiguousarray(raw).view("<f4")
        scale = np.array([a["scale_bits"]], np.uint32).view(np.float32)[0]
        q = np.rint(x / scale).astype(np.float64) + a["zp"]
        dst = self.tile(a["dst_mem"], a["dst"], rows, cols, a["dst_stride"])
        dst[...] = np.clip(np.nan_to_num(q), -128, 127).astype(np.int8)

    def _dwconv(self, a: dict) -> None:
        rows, ow, cols, kw = a["rows"], a["ow"], a["cols"], a["kw"]
        acc = self.tile("acc", a["acc"], rows * ow, cols, cols).reshape(rows, ow, cols)
        total = np.broadcast_to(self.tile("acc", a["bias"], 1, cols, cols).astype(np.int64), acc.shape).copy()
        isp = self.mem["ispad"]
        rs, ps = a["sh"] * a["row_step"], a["sw"] * cols
        for tap in range(a["kh"] * kw):
            i, j = divmod(tap, kw)
            base = a["a"] + i * a["dh"] * a["row_step"] + j * a["dw"] * cols
            last = base + (rows - 1) * rs + (ow - 1) * ps + cols
            if base < 0 or last > isp.size:
                raise SimError(f"dwconv: ispad window at {base} ({rows}x{ow}x{cols}, row step {a['row_step']}) "
                               f"is out of bounds (size {isp.size})")
            x = as_strided(isp[base:], shape=(rows, ow, cols), strides=(rs, ps, 1))
            w = self.tile("wspad", a["w"] + tap * cols, 1, cols, cols)[0]
            total += (x.astype(np.int64) - a["zp"]) * w.astype(np.int64)
        acc[...] = total.astype(np.int32)  # wraps like the adder

    def _vec(self, kind: str, a: dict) -> None:
        rows, cols = a["rows"], a["cols"]
        if kind == "gemv":
            x = self.tile(a["src_mem"], a["src"], 1, rows, max(rows, a["src_stride"]))
            w = self.tile("wspad", a["w"], rows, cols, a["w_stride"])
            out = self.tile(a["dst_mem"], a["dst"], 1, cols, a["dst_stride"])
            y = x.astype(np.int64) @ w.astype(np.int64)
            out[...] = (y + out if a["accumulate"] else y).astype(np.int32)  # wraps like the adder
            return
        if kind == "quant":
            self._quant(a)
            return
        dst = self.tile(a["dst_mem"], a["dst"], rows if kind != "sum" else 1, cols, a["dst_stride"])
        src = self.tile(a["src_mem"], a["src"], rows, cols, a["src_stride"])
        if kind == "requant":
            par = self.tile("acc", a["par"], 2, cols, cols)
            y = rounding_shift(src.astype(np.int64) * par[0].astype(np.int64), par[1]) + a["zp"]
            dst[...] = np.clip(y, a["lo"], a["hi"])
        elif kind == "qadd":
            acc = (dst.astype(np.int64) - a["a_zp"]) * a["a_mul"] + (src.astype(np.int64) - a["b_zp"]) * a["b_mul"]
            dst[...] = np.clip(rounding_shift(acc, np.int64(a["shift"])) + a["zp"], a["lo"], a["hi"])
        elif kind == "qmul":
            row = self.tile("wspad", a["row"], 1, cols, cols)
            p = (src.astype(np.int64) - a["a_zp"]) * (row.astype(np.int64) - a["b_zp"]) * a["mult"]
            dst[...] = np.clip(rounding_shift(p, np.int64(a["shift"])) + a["zp"], a["lo"], a["hi"])
        elif kind == "lut":
            if src.dtype != np.int8:
                raise SimError(f"vec.lut reads int8 memory, not {a['src_mem']}")
            table = self.tile("lut", a["table"], 1, LUT_ENTRIES, LUT_ENTRIES)[0]
            dst[...] = table[src.astype(np.int64) + 128]
        elif kind == "max":
            dst[...] = src if a["init"] else np.maximum(dst, src)
        elif kind == "mac":
            w = self.tile("wspad", a["w"], 1, cols, cols)
            dst[...] = (dst.astype(np.int64) + (src.astype(np.int64) - a["zp"]) * w.astype(np.int64)).astype(np.int32)
        elif kind == "sum":
            s = src.astype(np.int64).sum(axis=0, keepdims=True)
            if a["accumulate"]:
                s += dst
            dst[...] = s.astype(np.int32)
        elif kind == "add":
            dst[...] = (dst.astype(np.int64) + src).astype(np.int32)
        elif kind == "min":
            dst[...] = np.minimum(dst, src)
        elif kind == "mul":
            dst[...] = (src.astype(np.int64) * a["imm"]).astype(np.int32)
        elif kind == "shift":
            dst[...] = rounding_shift(src.astype(np.int64), np.int64(a["imm"])).astype(np.int32)
        elif kind == "clip":
            dst[...] = np.clip(src, a["lo"], a["hi"])
        else:
            raise SimError(f"unknown vector op {kind}")
