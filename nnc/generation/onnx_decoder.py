"""An ONNX decoder with past key/values as a decoder step on a preallocated cache (docs/generation.md).

The input is the layout ``transformers``/optimum exports use: inputs ``input_ids`` [batch, seq],
``attention_mask`` [batch, past + seq], optionally ``position_ids`` [batch, seq], and
``past_key_values.{i}.key`` / ``.value`` [batch, kv_heads, past, head_dim]; outputs ``logits`` and
``present.{i}.key`` / ``.value`` = ``Concat(past, new)`` on the sequence axis. Run as it is, every
step copies each cache into a new, one row longer present.

``decoder_step_from_onnx`` rewrites it into the decoder step ``Decoder`` compiles: each past
becomes a cache input of ``max_length`` positions, each ``Concat(past, new)`` an ``index_copy`` of
the new rows at ``position .. position + seq - 1`` (in place at run time), and each layer's
attention, written out with matmuls by the exporter (``written_attention.py``), one ``attention``
op over the cache: causal, with queries at ``position + i``, reading the rows written so far
(``nonpad_kv_seqlen = position + seq``). The past length the model reads from the past's shape
becomes the ``position`` input; ``position_ids`` become ``position + arange(seq)``; the logits are
computed for the last position only.

Replacing the model's mask by the causal one is checked, not assumed: the model's own mask is
evaluated (reference interpreter) for a few past and new lengths with an all-ones
``attention_mask`` and must be exactly the causal mask (0 where allowed, very negative elsewhere).
Like every ``Decoder``, the step then takes no attention mask (no padded batches).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from nnc.ir import DType, Module, NncError, TensorType, Value
from nnc.ir.builder import Builder, const_value
from nnc.ir.specialize import reinfer
from nnc.passes import PassManager

from .errors import NotADecoderError
from .written_attention import WrittenAttention, find_attention

PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)$")
INPUTS = ("input_ids", "attention_mask", "position_ids")
LAYOUT = ("an ONNX decoder with past key/values: inputs input_ids [batch, seq], attention_mask, optional "
          "position_ids, past_key_values.{i}.key/.value [batch, kv_heads, past, head_dim]; outputs logits and "
          "present.{i}.key/.value = Concat(past, new) on axis 2")


def _fail(why: str) -> NotADecoderError:
    return NotADecoderError(f"not a decoder with past key/values: {why} (expected {LAYOUT}; "
                            f"see docs/generation.md)")


def is_onnx_decoder(module: Module) -> bool:
    """Whether ``module``'s inputs name past key/values and it is not a decoder step already (which
    keeps those names for its caches and has a ``position`` input): then it should be converted,
    or refused."""
    names = [p.name for p in module.main.params]
    return any(PAST.match(n) for n in names) and "position" not in names


def _signature(module: Module) -> tuple[dict[str, Value], list[tuple[Value, Value]], list[tuple[Value, Value]]]:
    """(the named inputs, the (key, value) pasts per layer, the (key, value) concats per layer)."""
    g = module.main
    named: dict[str, Value] = {}
    pasts: dict[tuple[int, str], Value] = {}
    for p in g.params:
        if p.binding is not None:
            continue
        m = PAST.match(p.name)
        if m:
            pasts[int(m.group(1)), m.group(2)] = p
        elif p.name in INPUTS:
            named[p.name] = p
        else:
            raise _fail(f"it has an input {p.name!r}")
    ids = named.get("input_ids")
    if ids is None or ids.type.rank != 2 or isinstance(ids.shape[1], int):
        raise _fail("it has no input 'input_ids' [batch, seq] with a symbolic seq" if ids is None else
                    f"input 'input_ids' is {ids.type}, not [batch, seq] with a symbolic seq")
    layers = len(pasts) // 2
    if not pasts or set(pasts) != {(i, kv) for i in range(layers) for kv in ("key", "value")}:
        raise _fail(f"its past inputs are {sorted(p.name for p in pasts.values())}, not one key and one value "
                    f"for layers 0..n-1")
    outs = dict(zip(g.output_names, g.outputs))
    if "logits" not in outs:
        raise _fail(f"it has no output 'logits' (outputs: {', '.join(g.output_names)})")
    past_list, concats = [], []
    for i in range(layers):
        pair, written = [], []
        for kv in ("key", "value"):
            past = pasts[i, kv]
            t = past.type
            if t.rank != 4 or not isinstance(t.shape[1], int) or not isinstance(t.shape[3], int) \
                    or isinstance(t.shape[2], int) or t.dtype not in (DType.f32, DType.f16, DType.bf16):
                raise _fail(f"input {past.name!r} is {t}, not a float cache [batch, kv_heads, past, head_dim] "
                            f"with static heads and head size and a symbolic past length")
            name = f"present.{i}.{kv}"
            out = outs.get(name)
            op = None if out is None else out.producer
            if op is None or op.opname != "concat" or len(op.operands) != 2 or op.operands[0] is not past \
                    or op.attrs["axis"] % 4 != 2:
                raise _fail(f"output {name!r} is not Concat({past.name}, new) on axis 2")
            pair.append(past)
            written.append(op.results[0])
        past_list.append((pair[0], pair[1]))
        concats.append((written[0], written[1]))
    return named, past_list, concats


PROBES = ((0, 3), (2, 1), (3, 2), (5, 4))  # (past length, new tokens) at which the model is evaluated


def _probe(module: Module, pasts: list[tuple[Value, Value]], wanted: list[str], batch: int) -> list[dict]:
    """The values named ``wanted`` at each of ``PROBES`` (reference interpreter, zero caches, an
    all-ones attention_mask): [{"past", "seq", name: array...}]."""
    from nnc.ir.interpreter import interpret

    probe = module.clone()
    g = probe.main
    by_name = {v.name: v for v in g.values()}
    g.set_outputs([by_name[n] for n in wanted], wanted)
    PassManager("dce").run(probe)
    kv, hd = pasts[0][0].shape[1], pasts[0][0].shape[3]
    found = []
    for past, seq in PROBES:
        feeds: dict[str, Any] = {"input_ids": np.zeros((batch, seq), np.int64),
                                 "attention_mask": np.ones((batch, past + seq), np.int64),
                                 "position_ids": np.broadcast_to(np.arange(past, past + seq), (batch, seq)).copy()}
        for pair in pasts:
            for p in pair:
                feeds[p.name] = np.zeros((batch, kv, past, hd), p.dtype.numpy)
        feeds = {p.name: feeds[p.name] for p in g.params if p.binding is None}
        try:
            found.append({"past": past, "seq": seq, **interpret(probe, feeds)})
        except NncError as e:
            raise _fail(f"evaluating it at past length {past} with {seq} new tokens failed: {e}") from e
    return found


def _check_causal(probes: list[dict], biases: list[str]) -> None:
    """Each model mask in ``biases`` is exactly causal (0 where allowed, very negative elsewhere)."""
    for r in probes:
        past, seq = r["past"], r["seq"]
        allowed = np.arange(past + seq)[None, :] <= past + np.arange(seq)[:, None]
        for name in biases:
            bias = r[name]
            b = np.broadcast_to(bias, bias.shape[:-2] + allowed.shape) if bias.ndim >= 2 else None
            if b is None or not (np.all(b[..., allowed] == 0) and np.all(b[..., ~allowed] < -1e30)):
                raise _fail(f"the attention mask {name!r} is not the causal mask (checked at past length {past}, "
                            f"{seq} new tokens); a decoder step attends causally over the cache")


def _affine(got: list[int], probes: list[dict]) -> tuple[int, int, int] | None:
    """Integers (a, b, c) with got = a * past + b * seq + c at every probe, else None."""
    x = np.array([[r["past"], r["seq"], 1] for r in probes], np.float64)
    coef = np.rint(np.linalg.lstsq(x, np.array(got, np.float64), rcond=None)[0]).astype(np.int64)
    if not np.array_equal(x.astype(np.int64) @ coef, np.array(got, np.int64)):
        return None
    return int(coef[0]), int(coef[1]), int(coef[2])


def _shape_formulas(probes: list[dict], shapes: list[str]) -> dict[str, list[tuple[int, int, int]]]:
    """For each ``shape`` result in ``shapes``: each entry as (a, b, c) = a * past + b * seq + c,
    the formula that fits every probe; ``NotADecoderError`` when none does."""
    formulas: dict[str, list[tuple[int, int, int]]] = {}
    for name in shapes:
        values = [np.asarray(r[name]).reshape(-1) for r in probes]
        if len({len(v) for v in values}) != 1:
            raise _fail(f"the rank of shape {name!r} changes with the past length")
        dims = []
        for j in range(len(values[0])):
            got = [int(v[j]) for v in values]
            fit = _affine(got, probes)
            if fit is None:
                raise _fail(f"dim {j} of shape {name!r} is {got} at (past, new) lengths "
                            f"{[(r['past'], r['seq']) for r in probes]}: not an affine function of the lengths")
            dims.append(fit)
        formulas[name] = dims
    return formulas


def decoder_step_from_onnx(module: Module, max_length: int, batch: int = 1) -> Module:
    """``module`` (an imported ONNX decoder with past key/values) as a decoder step with caches of
    ``max_length`` positions for ``batch`` sequences (module docstring); ``NotADecoderError``
    saying what was expected when it is not one."""
    if max_length < 1 or batch < 1:
        raise _fail(f"max_length {max_length} and batch {batch} must be >= 1")
    _, pasts, concats = _signature(module)
    found: list[WrittenAttention] = []
    for i, (k, v) in enumerate(concats):
        a = find_attention(module, k, v)
        if a is None:
            raise _fail(f"the attention of layer {i} (reading present.{i}.key and .value) is not "
                        f"softmax(q k^T * scale + mask) v written with MatMul/Softmax")
        if a.bias is None:
            raise _fail(f"the attention of layer {i} has no mask, so it is not causal")
        found.append(a)
    shapes = [op.results[0].name for op in module.main.ops if op.opname == "shape"]
    biases = list(dict.fromkeys(a.bias.name for a in found))
    probes = _probe(module, pasts, biases + shapes, batch)
    _check_causal(probes, biases)
    m = module.clone()
    _rewrite(m, max_length, batch, _shape_formulas(probes, shapes))
    return m


def _rewrite(m: Module, max_length: int, batch: int, formulas: dict[str, list[Any]]) -> None:
    g = m.main
    named, pasts, concats = _signature(m)  # the clone's values
    found = [find_attention(m, k, v) for k, v in concats]
    ids = named["input_ids"]
    b = Builder(m, g)
    b._index = 0
    position = g.add_param("position", TensorType(DType.i64, ()))
    seq = ids.shape[1] if not isinstance(ids.shape[1], int) else "seq"
    ids.type = TensorType(ids.dtype, (batch, seq))
    n = b.op("gather", b.op("shape", ids, name="seq.shape"), b.const(np.array(1, np.int64), name="one"),
             name="seq.length")
    where = b.op("add", b.op("range", b.const(np.array(0, np.int64), name="zero"), n,
                             b.const(np.array(1, np.int64), name="step"), name="new.offsets"), position,
                 name="new.positions")
    written_len = b.op("add", position, n, name="written")
    nonpad = b.op("expand", b.op("reshape", written_len, shape=[1]), shape=[batch], name="nonpad_kv_seqlen")
    if "position_ids" in named:
        ids_pos = b.op("add", b.const(np.zeros((batch, 1), np.int64), name="batch.zeros"),
                       b.op("reshape", where, shape=[1, -1]), name="position_ids.computed")
        g.replace_all_uses(named["position_ids"], ids_pos)
    # every shape the model reads (its past length from the pasts' shapes, its heads, its token
    # count...) from the formula it was found to follow: nothing reads the old pasts any more, and
    # the dims that are constants become constants (head sizes, slices of rotate_half...)
    for op in [op for op in g.ops if op.opname == "shape" and op.results[0].name in formulas]:
        b.set_insertion_before(op)
        pieces = [_length(b, position, n, *f) for f in formulas[op.results[0].name]]
        for reader, _ in list(op.results[0].uses):
            k = const_value(m, reader.operands[1]) if reader.opname == "gather" and reader.attrs["axis"] == 0 else None
            if k is not None and k.size == 1:
                piece = pieces[int(k.reshape(-1)[0])]
                b.set_insertion_before(reader)
                g.replace_all_uses(reader.results[0], piece if k.ndim == 0 else b.op("reshape", piece, shape=[1]))
        if op.results[0].uses:
            b.set_insertion_before(op)
            dims = b.op("concat", *[b.op("reshape", p, shape=[1]) for p in pieces], axis=0,
                        name=op.results[0].name + ".dims") if pieces else b.const(np.zeros((0,), np.int64))
            g.replace_all_uses(op.results[0], dims)
    caches, presents, names = [], [], []
    for i, ((pk, pv), (ck, cv), a) in enumerate(zip(pasts, concats, found)):
        written = []
        for past, concat in ((pk, ck), (pv, cv)):
            name = past.name
            g.rename(past, name + ".onnx")
            cache = g.add_param(name, TensorType(past.dtype, (batch, past.shape[1], max_length, past.shape[3])))
            caches.append(cache)
            b.set_insertion_before(concat.producer)
            w = b.op("index_copy", cache, where, concat.producer.operands[1], axis=2,
                     name=concat.name + ".written")
            written.append(w)
        presents += written
        names += [f"present.{i}.key", f"present.{i}.value"]
        b.set_insertion_before(a.output.producer)
        att = b.create("attention", [a.q, written[0], written[1], b.const(np.zeros((0,), np.bool_), name="no_mask"),
                                     b.const(np.zeros((0, 0, 0, 0), pk.dtype.numpy), name="no_past"),
                                     b.const(np.zeros((0, 0, 0, 0), pk.dtype.numpy), name="no_past"), nonpad],
                       {"scale": a.scale, "is_causal": 1}, names=[f"layers.{i}.attention"])
        g.replace_all_uses(a.output, att.results[0])
    logits = _last_position_logits(m, dict(zip(g.output_names, g.outputs))["logits"])
    g.set_outputs([logits] + presents, ["logits"] + names)
    PassManager("dce").run(m)
    leftover = [p.name for p in g.params if p.binding is None and p.uses and p not in caches + [ids, position]]
    if leftover:
        raise _fail(f"inputs {', '.join(leftover)} are still read after the cache rewrite (an attention mask used "
                    f"beyond the attention?)")
    g.params = [p for p in g.params if p.binding is not None] + [ids, position] + caches
    reinfer(m)


def _length(b: Builder, position: Value, n: Value, a: int, k: int, c: int) -> Value:
    """a * position + k * n + c (i64[]), constant when a == k == 0."""
    terms = [v if coef == 1 else b.op("mul", v, b.const(np.array(coef, np.int64), name="coef"))
             for coef, v in ((a, position), (k, n)) if coef]
    if c or not terms:
        terms.append(b.const(np.array(c, np.int64), name="dim"))
    out = terms[0]
    for t in terms[1:]:
        out = b.op("add", out, t)
    return out


def _last_position_logits(m: Module, logits: Value) -> Value:
    """The logits of the last position only when the head is one matmul by a constant (as
    ``generate`` computes them), else the logits as they are."""
    op = logits.producer
    if op is None or op.opname != "matmul" or const_value(m, op.operands[1]) is None or op.operands[0].type.rank != 3:
        return logits
    b = Builder(m, m.main)
    b.set_insertion_before(op)
    last = b.op("slice", op.operands[0], starts=[-1], ends=[2**62], axes=[1], name=op.operands[0].name + ".last")
    return b.op("matmul", last, op.operands[1], name="logits.last")
