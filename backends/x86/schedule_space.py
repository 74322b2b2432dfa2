"""The candidate schedules of a kernel (what ``nnc tune`` may measure) and the GEMM shape behind a
kernel signature (what the learned cost model reads).

GEMM-based kernels (conv through implicit im2col, matmul, gemm): register tiles that fit the vector
registers (``mr`` rows x ``nv`` vectors of accumulators, plus the B vectors and a broadcast: at most
31 of 32 zmm registers, 15 of 16 ymm), the target's vector width and, on AVX-512, 256-bit vectors;
KC, MC and NC around the default's; both macro-kernel loop orders; the task grid of the cost model
or one of the even splits over the threads. The depthwise conv: direct loops or the zero-padded
copy, where the plane fits its buffer. A conv on the channel-vector path (kind ``chanvec``): every
plan that path can run for it (``chanvec_space``), and the other GEMM's schedules too; a conv
the path can run whose default is the other GEMM, some of those plans too. A 3x3 stride-1 conv the
Winograd path can run (kind ``winograd``): that path's plans (``winograd_space``) besides the
others', whichever is its default. Every candidate computes the same result on the tuner's small
integers (Winograd's F(2x2, 3x3) is exact there); only the order of the additions of a sum changes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from types import SimpleNamespace
from typing import Any, Mapping

from nnc.ir.ops.conv import fill, resolve_pads

from .kernels import conv_channel_vectors as cv
from .kernels import conv_winograd as wg
from .kernels.conv_channel_vectors import chunks, plan_from_schedule
from .kernels.gemm import blocking
from .schedule import CHANVEC_LANES, ORDERS, Schedule, ScheduleError, gemm_default

FLAT_LIMIT = 8192  # elements of the depthwise kernel's padded-plane buffer (kernels/conv.py)


def gemm_dims(sig: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(batch, M, N, K) of the product a GEMM-based kernel computes."""
    (_, ashape, _), (_, bshape, _) = sig["inputs"][:2]
    out = sig["outputs"][0][1]
    if sig["op"] == "conv":
        g = int(sig["attrs"].get("group", 1))
        return ashape[0] * g, bshape[0] // g, math.prod(out[2:]), (ashape[1] // g) * math.prod(bshape[2:])
    if sig["op"] == "gemm":
        k = ashape[0] if sig["attrs"].get("trans_a") else ashape[1]
        return 1, out[0], out[1], k
    batch = math.prod(out[:-2]) if len(out) > 2 else 1
    return batch, (out[-2] if len(out) > 1 else 1), out[-1], ashape[-1]


def depthwise_flat_allowed(sig: Mapping[str, Any]) -> bool:
    xshape, wshape = sig["inputs"][0][1], sig["inputs"][1][1]
    ks = tuple(wshape[2:])
    n = len(ks)
    a = sig["attrs"]
    s = fill(a.get("strides") or [], n, 1)
    d = fill(a.get("dilations") or [], n, 1)
    p = resolve_pads(a.get("auto_pad", "NOTSET"), tuple(xshape[2:]), ks, s, d, a.get("pads") or [])
    return tuple(s) == (1, 1) and (xshape[2] + p[0] + p[2]) * (xshape[3] + p[1] + p[3]) <= FLAT_LIMIT


def candidates(sig: Mapping[str, Any], default: Schedule, target_bits: int, limit: int = 300,
               seed: int = 0) -> list[Schedule]:
    """Up to ``limit`` distinct schedules other than ``default`` (a seeded sample of the space).

    A conv whose default is the channel-vector path gets that path's variants (two thirds of the
    sample) and the other GEMM's: its default blocking and variants (a schedule's kind picks the path).
    A conv whose default is the other GEMM gets up to a third of channel-vector plans where that path
    can run it."""
    if default.kind == "dwconv":
        flats = [0, 1] if depthwise_flat_allowed(sig) else [0]
        return [Schedule("dwconv", flat=f) for f in flats if f != default.flat]
    wino = winograd_space(sig) if winograd_runs(sig, target_bits) else []
    if default.kind == "winograd":
        _, M, N, _ = gemm_dims(sig)
        mine = _sample(winograd_space(sig, default), default, limit // 2, seed)
        cvp = chanvec_default(sig, M, N)
        plans = ([cvp] if cvp else []) + _sample(chanvec_space(sig), cvp, limit // 4 - 1, seed)
        other = gemm_default(blocking(target_bits, False, M, N))
        rest = limit - len(mine) - len(plans) - 1
        return mine + plans + [other] + _sample(_gemm_space(sig, other, target_bits), other, rest, seed)
    wshare = min(len(wino), limit // 6)
    if default.kind == "chanvec":
        _, M, N, _ = gemm_dims(sig)
        other = gemm_default(blocking(target_bits, False, M, N))
        mine = _sample(chanvec_space(sig, default), default, limit - limit // 3, seed)
        return mine + [other] + _sample(_gemm_space(sig, other, target_bits), other, limit // 3 - 1 - wshare,
                                        seed) + _sample(wino, None, wshare, seed)
    plans = chanvec_space(sig) if chanvec_runs(sig, target_bits) else []
    share = min(len(plans), limit // 3)
    return _sample(_gemm_space(sig, default, target_bits), default, limit - share - wshare, seed) + \
        _sample(plans, None, share, seed) + _sample(wino, None, wshare, seed)


def chanvec_default(sig: Mapping[str, Any], M: int, P: int) -> Schedule | None:
    """The channel-vector path's own plan for the conv of ``sig``, if it has one."""
    (_, xshape, _), (_, wshape, _) = sig["inputs"][:2]
    KK = math.prod(wshape[2:])
    OW = sig["outputs"][0][1][-1]
    stride = tuple(fill(sig["attrs"].get("strides") or [], 2, 1))
    p = cv.plan(SimpleNamespace(vector_bits=512), int(sig.get("threads", 1)), M, xshape[1] * KK, KK, P, OW, stride)
    return cv.schedule_of(p) if p else None


def winograd_runs(sig: Mapping[str, Any], target_bits: int) -> bool:
    """Whether the Winograd path can run the conv of ``sig`` (conv.py's conditions)."""
    if not chanvec_runs(sig, target_bits):
        return False
    a = sig["attrs"]
    wshape = sig["inputs"][1][1]
    return (tuple(wshape[2:]) == (3, 3) and tuple(fill(a.get("strides") or [], 2, 1)) == (1, 1)
            and tuple(fill(a.get("dilations") or [], 2, 1)) == (1, 1))


def winograd_space(sig: Mapping[str, Any], default: Schedule | None = None) -> list[Schedule]:
    """Every Winograd plan of the conv: tiles of 4-14 2x2 tiles x 1-4 channel vectors in the
    registers (past one vector only while it holds channels), and the default's; ``kc`` in {64, 128,
    256, the default} capped by C; ``tb`` in {1, 2, 3, 4, 6, a task's tile rows, the default's};
    the task splits of ``chanvec_space``."""
    batch, M, _, _ = gemm_dims(sig)
    C = sig["inputs"][0][1][1]
    OH, OW = sig["outputs"][0][1][2:]
    TH, _ = wg.tiles(OH, OW)
    threads = int(sig.get("threads", 1))
    mine = [default] if default else []
    splits = [(d.tn, d.tp) for d in mine] + ([(1, 1)] if threads == 1 or batch >= threads else [])
    if threads > 1:
        splits += [(a, t // a) for t in (threads, 2 * threads) for a in range(1, t + 1) if t % a == 0]
    tiles = {(mr, nv) for mr in (4, 6, 8, 10, 12, 14) for nv in (1, 2, 3, 4)} | {(d.mr, d.nv) for d in mine}
    kcs = {min(kc, C) for kc in (64, 128, 256, *(d.kc for d in mine))}
    out = []
    for (mr, nv), (tn, tp) in itertools.product(sorted(tiles), dict.fromkeys(splits)):
        if nv > 1 and (nv - 1) * CHANVEC_LANES >= M:
            continue
        tchunk = wg.chunks(M, TH, nv, tn, tp)[1]
        for kc, tb in itertools.product(sorted(kcs), sorted({1, 2, 3, 4, 6, tchunk, *(d.tb for d in mine)})):
            s = Schedule("winograd", mr, nv, kc, tn=tn, tp=tp, tb=tb)
            try:
                Schedule.from_json(s.to_json())
                wg.plan_from_schedule(s, M, C, OH, OW, "candidate")
            except ScheduleError:
                continue
            out.append(s)
    return out


def chanvec_runs(sig: Mapping[str, Any], target_bits: int) -> bool:
    """Whether the channel-vector path can run the conv of ``sig`` (conv.py's conditions; whether a
    given plan fits is ``plan_from_schedule``'s)."""
    if sig["op"] != "conv" or sig.get("kind") != "gemm" or target_bits != 512:
        return False
    (xdt, xshape, _), (_, _, wconst) = sig["inputs"][:2]
    return xdt == sig["outputs"][0][0] == "f32" and len(xshape) == 4 and wconst and sig["attrs"].get("group", 1) == 1


def _sample(space: list[Schedule], default: Schedule | None, limit: int, seed: int) -> list[Schedule]:
    out = [s for s in dict.fromkeys(space)
           if default is None or (s != default and s != dataclasses.replace(default, tm=0, tn=0))]
    if len(out) > limit:
        out = random.Random(seed).sample(out, limit)
    return out


def _gemm_space(sig: Mapping[str, Any], default: Schedule, target_bits: int) -> list[Schedule]:
    batch, M, N, K = gemm_dims(sig)
    threads = int(sig.get("threads", 1))
    out: list[Schedule] = []
    for bits in sorted({target_bits, 256} if target_bits == 512 else {target_bits}, reverse=True):
        lanes = bits // 32
        regs = 32 if bits == 512 else 16
        for mr, nv in itertools.product((1, 2, 4, 6, 8, 10, 12, 14, 16), (1, 2, 3, 4)):
            if mr * nv + nv + 1 > regs or mr > max(1, M) or (nv > 1 and (nv - 1) * lanes >= N):
                continue
            nr = nv * lanes
            for kc in sorted({default.kc, 128, 256, 384, 512}):
                if kc > 2 * max(K, 1) and kc != default.kc:
                    continue
                for mc_rows in (96, 192, 384):
                    mc = max(mr, mc_rows // mr * mr)
                    for nc_cols in (512, 1024, 2048):
                        nc = max(nr, nc_cols // nr * nr)
                        for order in ORDERS:
                            for tm, tn in _grids(threads, M, N, mr, nr):
                                out.append(Schedule("gemm", mr, nv, kc, mc, nc, bits, order, tm, tn))
    return out


def chanvec_space(sig: Mapping[str, Any], default: Schedule | None = None) -> list[Schedule]:
    """Every channel-vector plan the conv can run: tiles of 4-16 pixels dividing the output row (and
    the default's) x 1-4 vectors in the registers, past a single vector only while it holds
    channels; ``kc`` in {64, 128, 256, 512, the default} capped by K; ``mc`` around 64/128/256 pixels,
    the whole task, the default's; ``tn`` x ``tp`` tasks per image: the default's, one (with a batch
    of at least the threads) and every split into the threads or twice as many tasks."""
    batch, M, P, K = gemm_dims(sig)
    OW = sig["outputs"][0][1][-1]
    stride = fill(sig["attrs"].get("strides") or [], 2, 1)
    threads = int(sig.get("threads", 1))
    splits = ([(default.tn, default.tp)] if default else []) + ([(1, 1)] if threads == 1 or batch >= threads else [])
    if threads > 1:
        splits += [(a, t // a) for t in (threads, 2 * threads) for a in range(1, t + 1) if t % a == 0]
    splits = list(dict.fromkeys(splits))
    mine = [default] if default else []
    mrs = sorted({r for r in range(4, CHANVEC_LANES + 1) if OW % r == 0} | {d.mr for d in mine})
    kcs = sorted({min(kc, K) for kc in (64, 128, 256, 512, *(d.kc for d in mine))})
    out = []
    for mr, nv, (tn, tp) in itertools.product(mrs, (1, 2, 3, 4), splits):
        if nv > 1 and (nv - 1) * CHANVEC_LANES >= M:
            continue
        pchunk = chunks(M, P, mr, nv, tn, tp)[1]
        mcs = {min(pchunk, max(mr, px // mr * mr)) for px in (64, 128, 256)} | {pchunk, *(d.mc for d in mine)}
        for kc, mc in itertools.product(kcs, sorted(mcs)):
            s = Schedule("chanvec", mr, nv, kc, mc, tn=tn, tp=tp)
            try:
                Schedule.from_json(s.to_json())
                plan_from_schedule(s, 512, M, K, P, OW, stride, "candidate")
            except ScheduleError:
                continue
            out.append(s)
    return out


def _grids(threads: int, M: int, N: int, mr: int, nr: int) -> list[tuple[int, int]]:
    """The task grids tried: the cost model's (0, 0), and when there are several threads the even
    splits along M, along N, and over both."""
    grids = [(0, 0)]
    if threads > 1:
        mt, nt = -(-M // mr), -(-N // nr)
        for tm, tn in ((threads, 1), (1, threads), (2 * threads, 1), (1, 2 * threads), (threads, 2)):
            if tm <= mt and tn <= nt:
                grids.append((tm, tn))
    return grids
