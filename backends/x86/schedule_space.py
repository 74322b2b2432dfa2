"""The candidate schedules of a kernel (what ``nnc tune`` may measure) and the GEMM shape behind a
kernel signature (what the learned cost model reads).

GEMM-based kernels (conv through implicit im2col, matmul, gemm): register tiles that fit the vector
registers (``mr`` rows x ``nv`` vectors of accumulators, plus the B vectors and a broadcast: at most
31 of 32 zmm registers, 15 of 16 ymm), the target's vector width and, on AVX-512, 256-bit vectors;
KC, MC and NC around the default's; both macro-kernel loop orders; the task grid of the cost model
or one of the even splits over the threads. The depthwise conv: direct loops or the zero-padded
copy, where the plane fits its buffer. A conv on the channel-vector path (kind ``chanvec``): every
plan that path can run for it (``chanvec_space``), and the other GEMM's schedules too; a conv
the path can run whose default is the other GEMM, some of those plans too. Every
candidate computes the same result; only the order of the additions of a sum changes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from typing import Any, Mapping

from nnc.ir.ops.conv import fill, resolve_pads

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
    if default.kind == "chanvec":
        _, M, N, _ = gemm_dims(sig)
        other = gemm_default(blocking(target_bits, False, M, N))
        mine = _sample(chanvec_space(sig, default), default, limit - limit // 3, seed)
        return mine + [other] + _sample(_gemm_space(sig, other, target_bits), other, limit // 3 - 1, seed)
    plans = chanvec_space(sig) if chanvec_runs(sig, target_bits) else []
    share = min(len(plans), limit // 3)
    return _sample(_gemm_space(sig, default, target_bits), default, limit - share, seed) + \
        _sample(plans, None, share, seed)


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
