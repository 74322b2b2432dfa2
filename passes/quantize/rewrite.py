"""The float -> int8 rewrite: walk a frozen float graph in order and re-emit it with every op that
has an integer form in that form, given each activation's calibrated range.

- conv / gemm / matmul with constant weights -> ``qconv`` / ``qmatmul`` (weights symmetric per
  output channel, bias in i32 accumulator units) + ``requantize``; a ReLU or Clip that is the only
  reader becomes the requantize's clip bounds, a constant bias ``add`` after a matmul its bias.
- add of two activations -> ``qadd`` (a following ReLU/Clip folded into its clip bounds).
- relu / clip on an int8 value -> ``max`` / ``min`` with the quantized bound (exact).
- max_pool and data movement (reshape, transpose, slice, ...) run on the int8 value itself.
- global average pooling (reduce_mean over spatial axes) -> cast to i32, reduce_sum, requantize
  with 1/count folded into the multiplier; avg_pool (no padding in the divisor) -> a depthwise
  all-ones ``qconv`` + requantize.
- with ``int8_activations``: hard-swish, hard-sigmoid, sigmoid and SiLU (``x * sigmoid(x)``) of an
  int8 value -> ``qlut``, a 256-entry table holding, for every int8 input, the quantized result of
  the float graph's own ops (dequantize, the op's reference, quantize), so it rounds exactly as the
  float path with the same quantization points would; a ``mul`` of two int8 activations
  (squeeze-excite's x * gate) -> ``qmul`` with the rescaling in its multiplier.
- anything else stays f32, fed by ``dequantize`` and feeding ``quantize`` where an int8 consumer
  follows; graph inputs are quantized where their first integer consumer reads them and outputs
  are dequantized.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from nnc.ir import Builder, DType, Graph, Module, Op, Value, const_value

from .scheme import (
    QMAX,
    QMIN,
    QParams,
    activation_params,
    qadd_params,
    quantize_bias,
    quantize_multiplier,
    quantize_weights,
    requant_shift_pair,
    weight_scales,
)

# ops that move int8 data without arithmetic: operand 0 is the data, any others are constants
PASS_THROUGH = frozenset({"expand", "identity", "reshape", "slice", "squeeze", "tile", "transpose", "unsqueeze",
                          "split"})
CONV_ATTRS = ("strides", "pads", "dilations", "group", "auto_pad")


def _bias_fits(bias: np.ndarray | None, acc_scale: np.ndarray) -> bool:
    """Whether the bias in accumulator units leaves the i32 accumulator headroom for the products
    (|bias| < 2**30). Tiny activations with a large bias do not: the op then stays f32."""
    return bias is None or bool(np.all(np.abs(bias.astype(np.float64) / acc_scale) < 2.0**30))


class QuantizeRewriter:
    """Rewrites ``module``'s main graph in place (a new Graph replaces it)."""

    def __init__(self, module: Module, ranges: dict[str, tuple[float, float]], per_channel: bool = True,
                 symmetric: bool = True, fixed: dict[str, QParams] | None = None, int8_activations: bool = False):
        self.m = module
        self.int8_activations = int8_activations
        self.fixed = fixed  # imported QDQ models: the parameters of each value, ranges unused
        self.old = module.main
        self.ranges = ranges
        self.per_channel = per_channel
        self.symmetric = symmetric
        self.g = Graph(self.old.name)
        self.b = Builder(module, self.g)
        self.fl: dict[int, Value] = {}  # old value -> its f32 value in the new graph
        self.q: dict[int, tuple[Value, QParams]] = {}  # old value -> its i8 value and parameters
        self.skip: set[int] = set()  # ops already folded into an earlier one
        self.outputs = {id(v) for v in self.old.outputs}
        self.stats: Counter[str] = Counter()
        self._scalars: dict[tuple[Any, str], Value] = {}

    # -- the walk -----------------------------------------------------------------------------
    def run(self) -> Graph:
        for p in self.old.params:
            self.fl[id(p)] = self.g.add_param(p.name, p.type, p.binding)
        for op in self.old.ops:
            if op.opname == "const" or id(op) in self.skip:
                continue
            handler = getattr(self, "_" + op.opname, None)
            if op.opname in PASS_THROUGH:
                handler = self._pass_through
            if handler is not None and handler(op):
                self.stats[f"int8 {op.opname}"] += 1
            else:
                self._float(op)
        self.g.set_outputs([self.float_of(v) for v in self.old.outputs], list(self.old.output_names))
        self.m.graphs[self.old.name] = self.g
        return self.g

    def _float(self, op: Op) -> None:
        operands = [self.float_of(v) for v in op.operands]
        new = self.b.create(op.opname, operands, dict(op.attrs), [r.name for r in op.results], len(op.results),
                            regions=op.regions, loc=op.loc)
        for r, nr in zip(op.results, new.results):
            self.fl[id(r)] = nr
        if any(r.type.dtype.is_float for r in op.results) and op.opname not in ("quantize", "dequantize"):
            self.stats[f"f32 {op.opname}"] += 1

    # -- values in either domain ----------------------------------------------------------------
    def scalar(self, value: float | int, dtype: DType) -> Value:
        key = (value, str(dtype))
        if key not in self._scalars:
            self._scalars[key] = self.b.const(np.array(value, dtype=dtype.numpy), name=f"q.{dtype}")
        return self._scalars[key]

    def params_of(self, v: Value) -> QParams | None:
        if self.fixed is not None:
            return self.fixed.get(v.name) if v.type.dtype.is_float else None
        r = self.ranges.get(v.name)
        if r is None or not v.type.dtype.is_float:
            return None
        return activation_params(r[0], r[1], self.symmetric)

    def float_of(self, v: Value) -> Value:
        if id(v) in self.fl:
            return self.fl[id(v)]
        if v.producer is not None and v.producer.opname == "const":
            nv = self.b.const_ref(v.producer.attrs["ref"], v.name)
        else:
            qv, p = self.q[id(v)]
            nv = self.b.op("dequantize", qv, self.scalar(p.scale, DType.f32), self.scalar(p.zero_point, DType.i8),
                           name=v.name)
        self.fl[id(v)] = nv
        return nv

    def quant_of(self, v: Value) -> tuple[Value, QParams] | None:
        """``v`` as int8: its integer form, or a new ``quantize`` of its float form."""
        if id(v) in self.q:
            return self.q[id(v)]
        if id(v) not in self.fl or v.type.dtype != DType.f32:
            return None
        p = self.params_of(v)
        if p is None:
            return None
        qv = self.b.op("quantize", self.fl[id(v)], self.scalar(p.scale, DType.f32), self.scalar(p.zero_point, DType.i8),
                       dtype=DType.i8, name=f"{v.name}.q")
        self.q[id(v)] = (qv, p)
        return self.q[id(v)]

    def const_of(self, v: Value) -> np.ndarray | None:
        return const_value(self.m, v)

    # -- epilogue folding -----------------------------------------------------------------------
    def _only_reader(self, v: Value, *names: str) -> Op | None:
        if len(v.uses) != 1 or id(v) in self.outputs:
            return None
        op = v.uses[0][0]
        return op if op.opname in names and v.uses[0][1] == 0 else None

    def _bounds(self, act: Op) -> tuple[float | None, float | None] | None:
        """The real [lo, hi] a relu/clip imposes, or None when a bound is not a constant."""
        if act.opname == "relu":
            return 0.0, None
        lo, hi = act.attrs.get("min"), act.attrs.get("max")
        for i, name in ((1, "min"), (2, "max")):
            if len(act.operands) > i and act.operands[i] is not None:
                c = self.const_of(act.operands[i])
                if c is None:
                    return None
                if name == "min":
                    lo = float(c)
                else:
                    hi = float(c)
        return lo, hi

    def _fused_act(self, v: Value) -> tuple[Op | None, tuple[Any, Any]]:
        act = self._only_reader(v, "relu", "clip")
        bounds = self._bounds(act) if act is not None else None
        return (act, bounds) if bounds is not None else (None, (None, None))

    @staticmethod
    def _qbound(x: float | None, p: QParams) -> int | None:
        if x is None:
            return None
        return int(np.clip(round(x / p.scale) + p.zero_point, QMIN, QMAX))

    def _requantize(self, acc: Value, real: np.ndarray, p: QParams, bounds: tuple[Any, Any], axis: int,
                    name: str) -> Value:
        real = np.asarray(real, dtype=np.float64)
        if real.ndim and np.all(real == real.flat[0]):
            real = real.reshape(-1)[0]
        mult, shift = quantize_multiplier(real)
        return self.b.op("requantize", acc, self.b.const(mult, name="q.multiplier"),
                         self.b.const(shift, name="q.shift"), axis=axis, zero_point=p.zero_point,
                         clip_min=self._qbound(bounds[0], p), clip_max=self._qbound(bounds[1], p), name=name)

    def _finish(self, op: Op, acc: Value, real_over_sy: Any, axis: int, act: Op | None,
                bounds: tuple[Any, Any]) -> bool:
        out = act.results[0] if act is not None else op.results[0]
        py = self.params_of(out)
        if py is None:
            return False
        y = self._requantize(acc, np.asarray(real_over_sy) / py.scale, py, bounds, axis, out.name)
        self.q[id(out)] = (y, py)
        if act is not None:
            self.skip.add(id(act))
        return True

    # -- handlers: return True when the op was rewritten ---------------------------------------
    def _conv(self, op: Op) -> bool:
        w = self.const_of(op.operands[1])
        bias = self.const_of(op.operands[2]) if len(op.operands) > 2 else None
        if w is None or w.dtype != np.float32 or (len(op.operands) > 2 and bias is None):
            return False
        act, bounds = self._fused_act(op.results[0])
        if self.params_of(act.results[0] if act else op.results[0]) is None:
            return False
        qx = self.quant_of(op.operands[0])
        if qx is None:
            return False
        xv, px = qx
        sw = weight_scales(w, 0, self.per_channel)
        if not _bias_fits(bias, px.scale * sw):
            self.stats["f32: bias beyond i32"] += 1
            return False
        operands = [xv, self.b.const(quantize_weights(w, sw, 0), name=f"{op.operands[1].name}.q")]
        if bias is not None:
            operands.append(self.b.const(quantize_bias(bias, px.scale * sw), name=f"{op.operands[2].name}.q"))
        acc = self.b.op("qconv", *operands, **{k: op.attrs[k] for k in CONV_ATTRS}, x_zero_point=px.zero_point,
                        name=f"{op.results[0].name}.acc")
        return self._finish(op, acc, px.scale * sw, 1, act, bounds)

    def _linear(self, op: Op, a: Value, w: np.ndarray, bias: np.ndarray | None) -> bool:
        """a @ w (+ bias) with w [K, N] constant, then requantize along the last axis."""
        out = op.results[0]
        bias_add = None
        if bias is None:  # a bias add right after a matmul folds into the accumulator
            bias_add = self._only_reader(out, "add")
            c = self.const_of(bias_add.operands[1]) if bias_add is not None else None
            if c is not None and c.size == w.shape[1] and c.dtype == np.float32:
                bias, out = c.reshape(-1), bias_add.results[0]
            else:
                bias_add = None
        act, bounds = self._fused_act(out)
        if self.params_of(act.results[0] if act else out) is None:
            return False
        qa = self.quant_of(a)
        if qa is None:
            return False
        av, pa = qa
        sw = weight_scales(w, 1, self.per_channel)
        if not _bias_fits(bias, pa.scale * sw):
            self.stats["f32: bias beyond i32"] += 1
            return False
        operands = [av, self.b.const(quantize_weights(w, sw, 1), name="q.weight")]
        if bias is not None:
            operands.append(self.b.const(quantize_bias(bias, pa.scale * sw), name="q.bias"))
        acc = self.b.op("qmatmul", *operands, a_zero_point=pa.zero_point, name=f"{op.results[0].name}.acc")
        if bias_add is not None:
            self.skip.add(id(bias_add))
            op = bias_add
        return self._finish(op, acc, pa.scale * sw, -1, act, bounds)

    def _gemm(self, op: Op) -> bool:
        a = op.operands[0]
        b = self.const_of(op.operands[1])
        c = self.const_of(op.operands[2]) if len(op.operands) > 2 else None
        if b is None or op.attrs["trans_a"] or a.type.rank != 2 or b.dtype != np.float32 \
                or (len(op.operands) > 2 and c is None):
            return False
        w = (b.T if op.attrs["trans_b"] else b).astype(np.float64) * op.attrs["alpha"]
        bias = None
        if c is not None:
            n = w.shape[1]
            if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1):
                return False
            bias = np.broadcast_to(c.reshape(-1).astype(np.float64) * op.attrs["beta"], (n,))
        return self._linear(op, a, w.astype(np.float32), bias)

    def _matmul(self, op: Op) -> bool:
        w = self.const_of(op.operands[1])
        a = op.operands[0]
        if w is None or w.ndim != 2 or w.dtype != np.float32 or a.type.rank is None or a.type.rank < 2:
            return False
        return self._linear(op, a, w, None)

    def _add(self, op: Op) -> bool:
        a, b = op.operands
        if self.const_of(a) is not None or self.const_of(b) is not None:
            return False
        act, bounds = self._fused_act(op.results[0])
        out = act.results[0] if act else op.results[0]
        py = self.params_of(out)
        qa, qb = self.quant_of(a), self.quant_of(b)
        if py is None or qa is None or qb is None:
            return False
        try:
            attrs = qadd_params(qa[1], qb[1], py)
        except ValueError:
            return False
        y = self.b.op("qadd", qa[0], qb[0], **attrs, clip_min=self._qbound(bounds[0], py),
                      clip_max=self._qbound(bounds[1], py), name=out.name)
        self.q[id(out)] = (y, py)
        if act is not None:
            self.skip.add(id(act))
        return True

    def _clamp(self, op: Op, lo: float | None, hi: float | None) -> bool:
        if id(op.operands[0]) not in self.q:
            return False
        y, p = self.q[id(op.operands[0])]
        if lo is not None:
            y = self.b.op("max", y, self.scalar(self._qbound(lo, p), DType.i8), name=op.results[0].name)
        if hi is not None:
            y = self.b.op("min", y, self.scalar(self._qbound(hi, p), DType.i8), name=op.results[0].name)
        self.q[id(op.results[0])] = (y, p)
        return True

    def _relu(self, op: Op) -> bool:
        return self._clamp(op, 0.0, None)

    def _clip(self, op: Op) -> bool:
        bounds = self._bounds(op)
        return bounds is not None and self._clamp(op, *bounds)

    def _max_pool(self, op: Op) -> bool:
        if op.attrs["with_indices"] or id(op.operands[0]) not in self.q:
            return False
        xv, p = self.q[id(op.operands[0])]
        (y,) = self.b.op("max_pool", xv, **op.attrs, name=op.results[0].name)
        self.q[id(op.results[0])] = (y, p)
        return True

    def _pass_through(self, op: Op) -> bool:
        if id(op.operands[0]) not in self.q or any(self.const_of(v) is None for v in op.operands[1:]):
            return False
        xv, p = self.q[id(op.operands[0])]
        rest = [self.float_of(v) for v in op.operands[1:]]
        new = self.b.create(op.opname, [xv, *rest], dict(op.attrs), [r.name for r in op.results], len(op.results))
        for r, nr in zip(op.results, new.results):
            self.q[id(r)] = (nr, p)
        return True

    def _concat(self, op: Op) -> bool:
        qs = [self.q.get(id(v)) for v in op.operands]
        if any(q is None for q in qs) or len({q[1] for q in qs}) != 1:
            return False
        y = self.b.op("concat", *[q[0] for q in qs], **op.attrs, name=op.results[0].name)
        self.q[id(op.results[0])] = (y, qs[0][1])
        return True

    def _reduce_mean(self, op: Op) -> bool:
        x = op.operands[0]
        shape = x.type.shape
        if id(x) not in self.q or shape is None or len(op.operands) > 1:
            return False
        axes = op.attrs["axes"]
        axes = range(len(shape)) if axes is None else [a % len(shape) for a in axes]
        dims = [shape[a] for a in axes]
        if not all(isinstance(d, int) for d in dims):
            return False
        count = int(np.prod(dims))
        xv, px = self.q[id(x)]
        acc = self.b.op("reduce_sum", self.b.op("cast", xv, to=DType.i32), axes=tuple(axes),
                        keepdims=op.attrs["keepdims"], name=f"{op.results[0].name}.acc")
        if px.zero_point:  # sum(x - zp) = sum(x) - count * zp
            acc = self.b.op("add", acc, self.scalar(-count * px.zero_point, DType.i32))
        return self._finish(op, acc, px.scale / count, 1, None, (None, None))

    def _avg_pool(self, op: Op) -> bool:
        x = op.operands[0]
        a = op.attrs
        padded = a["auto_pad"] not in ("NOTSET", "VALID") or any(a["pads"])
        if id(x) not in self.q or a["ceil_mode"] or (padded and not a["count_include_pad"]) \
                or x.type.shape is None or not isinstance(x.type.shape[1], int):
            return False
        c, k = x.type.shape[1], tuple(a["kernel_shape"])
        xv, px = self.q[id(x)]
        ones = self.b.const(np.ones((c, 1, *k), np.int8), name="q.ones")
        # padding reads the zero point, i.e. real 0, which count_include_pad=1 averages in
        acc = self.b.op("qconv", xv, ones, group=c, **{n: a[n] for n in ("strides", "pads", "dilations", "auto_pad")},
                        x_zero_point=px.zero_point, name=f"{op.results[0].name}.acc")
        return self._finish(op, acc, px.scale / float(np.prod(k)), 1, None, (None, None))

    # -- int8 activations (int8_activations=True) --------------------------------------------------
    def _table(self, px: QParams, py: QParams, ops: list[Op]) -> np.ndarray:
        """qlut's table: every int8 input dequantized as the float path does, through ``ops`` (a
        unary op, or sigmoid then the mul of SiLU) on their reference semantics, then quantized."""
        def run(op: Op, *arrays: np.ndarray) -> np.ndarray:
            return np.asarray(op.opdef.reference(*arrays, **dict(op.attrs)), dtype=np.float32)

        grid = np.arange(-128, 128, dtype=np.int64)
        x = ((grid - px.zero_point).astype(np.float32) * np.float32(px.scale)).astype(np.float32)
        y = run(ops[0], x)
        if len(ops) > 1:  # SiLU: mul(x, sigmoid(x)) in either operand order
            y = run(ops[1], x, y)
        q = np.rint(y / np.float32(py.scale)).astype(np.float64) + py.zero_point
        return np.clip(q, QMIN, QMAX).astype(np.int8)

    def _act_params(self, v: Value) -> QParams | None:
        """A table's or a product's output parameters: asymmetric over the calibrated range, since these
        outputs are lopsided (hard-swish >= -0.375, SiLU >= -0.28, gates in [0, 1]) and a symmetric
        scale would leave half the codes unused (measured: +0.4 / +1.1 dB on MobileNetV3-large /
        EfficientNet-B0 against symmetric tables, bench/ASIC.md)."""
        r = self.ranges.get(v.name) if self.fixed is None else None
        if r is None or not v.type.dtype.is_float:
            return self.params_of(v)
        return activation_params(r[0], r[1], symmetric=False)

    def _silu_mul(self, op: Op) -> Op | None:
        """The mul that makes ``op`` (a sigmoid) a SiLU: mul(x, sigmoid(x)), the sigmoid's only reader."""
        s = op.results[0]
        if len(s.uses) != 1 or id(s) in self.outputs:
            return None
        mul = s.uses[0][0]
        if mul.opname != "mul" or len(mul.operands) != 2 or op.operands[0] not in mul.operands \
                or mul.operands[0] is mul.operands[1]:
            return None
        return mul

    def _activation(self, op: Op) -> bool:
        x = op.operands[0]
        if not self.int8_activations or id(x) not in self.q or len(op.operands) != 1:
            return False
        xv, px = self.q[id(x)]
        ops, out = [op], op.results[0]
        mul = self._silu_mul(op) if op.opname == "sigmoid" else None
        if mul is not None:
            ops, out = [op, mul], mul.results[0]
        py = self._act_params(out)
        if py is None:
            return False
        table = self._table(px, py, ops)
        if mul is not None:  # the table took x as the mul's first operand: right either way (x * s == s * x)
            self.skip.add(id(mul))
            self.stats["int8 silu"] += 1
        y = self.b.op("qlut", xv, self.b.const(table, name="q.table"), name=out.name)
        self.q[id(out)] = (y, py)
        return True

    _hard_swish = _hard_sigmoid = _sigmoid = _activation

    def _mul(self, op: Op) -> bool:
        a, b = op.operands
        if not self.int8_activations or id(a) not in self.q or id(b) not in self.q:
            return False
        py = self._act_params(op.results[0])
        if py is None:
            return False
        (av, pa), (bv, pb) = self.q[id(a)], self.q[id(b)]
        mult, shift = requant_shift_pair(pa.scale * pb.scale / py.scale)
        y = self.b.op("qmul", av, bv, a_zero_point=pa.zero_point, b_zero_point=pb.zero_point, multiplier=mult,
                      shift=shift, zero_point=py.zero_point, name=op.results[0].name)
        self.q[id(op.results[0])] = (y, py)
        return True
