"""A decoder model compiled for generation: the decoder step checked for its structure, compiled
twice through ``nnc.compile`` (prefill: symbolic ``seq``; decode: ``seq`` fixed to 1), and its KV
cache allocated once for the maximum length and updated in place (docs/generation.md).

In place: each cache is fed as the input ``past_*.i`` and given as the buffer of the output
``present_*.i`` (``CompiledModel.run(feeds, outputs=...)``). Its only reader is the ``index_copy``
that produces the present; on x86 that kernel copies nothing when its input and result are one
buffer and writes the new positions only, so a step moves ``seq`` rows per cache, not the cache.
This is checked on each *optimised* graph, not assumed: a graph where it does not hold runs with
the cache copied (and says so in the report).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnc.api import compile as compile_model
from nnc.backends.options import CompileOptions
from nnc.ir import InputError, Module
from nnc.passes import PassManager

from .errors import NotADecoderError


@dataclass(frozen=True)
class DecoderSpec:
    """What a decoder step's signature says: names, the symbolic token dim, cache geometry."""

    input_ids: str
    position: str
    seq: str  # the symbol of input_ids' dim 1
    caches: tuple[str, ...]  # past_key.0, past_value.0, ...
    presents: tuple[str, ...]
    logits: str
    batch: int
    cache_shape: tuple[int, int, int, int]  # [batch, kv heads, max length, head size]
    cache_dtype: np.dtype
    vocab: int

    @property
    def max_length(self) -> int:
        return self.cache_shape[2]

    @property
    def cache_bytes(self) -> int:
        return len(self.caches) * int(np.prod(self.cache_shape)) * self.cache_dtype.itemsize


def _fail(why: str) -> NotADecoderError:
    return NotADecoderError(f"not a decoder step with a KV cache: {why} (expected inputs input_ids i64[B, seq], "
                            f"position i64[], past key/value caches [B, heads, max_length, head_dim] and outputs "
                            f"logits then the present caches, each written by index_copy; see docs/generation.md)")


def decoder_spec(module: Module) -> DecoderSpec:
    """The decoder signature of ``module``; ``NotADecoderError`` saying what is missing."""
    g = module.main
    params = [p for p in g.params if p.binding is None]
    if len(params) < 4 or (len(params) - 2) % 2:
        raise _fail(f"it has {len(params)} inputs")
    ids, pos, caches = params[0], params[1], params[2:]
    if ids.dtype.name not in ("i64", "i32") or ids.type.rank != 2 or isinstance(ids.shape[1], int):
        raise _fail(f"input {ids.name!r} is {ids.type}, not token ids with a symbolic length")
    if pos.dtype.name not in ("i64", "i32") or pos.type.rank != 0:
        raise _fail(f"input {pos.name!r} is {pos.type}, not a scalar position")
    shape = caches[0].shape
    for c in caches:
        if c.type.rank != 4 or not c.type.is_static or c.shape != shape or c.dtype != caches[0].dtype:
            raise _fail(f"cache input {c.name!r} is {c.type}; every cache must be static [B, heads, max_length, "
                        f"head_dim] like {caches[0].name!r} ({caches[0].type})")
    if len(g.outputs) != 1 + len(caches):
        raise _fail(f"it has {len(g.outputs)} outputs for {len(caches)} caches")
    logits = g.outputs[0]
    if logits.type.rank != 3 or not isinstance(logits.shape[2], int):
        raise _fail(f"output {g.output_names[0]!r} is {logits.type}, not logits [B, tokens, vocab]")
    for c, out, name in zip(caches, g.outputs[1:], g.output_names[1:]):
        if out.type != c.type:
            raise _fail(f"output {name!r} ({out.type}) does not match cache {c.name!r} ({c.type})")
        op = out.producer
        if op is None or op.opname != "index_copy" or op.operands[0] is not c:
            raise _fail(f"output {name!r} is not index_copy({c.name}, ...)")
    batch = shape[0]
    if ids.shape[0] != batch:
        raise _fail(f"input_ids batch {ids.shape[0]} differs from the caches' {batch}")
    return DecoderSpec(ids.name, pos.name, str(ids.shape[1]), tuple(c.name for c in caches),
                       tuple(g.output_names[1:]), g.output_names[0], int(batch), tuple(shape),
                       caches[0].dtype.numpy, int(logits.shape[2]))


def updates_in_place(module: Module, spec: DecoderSpec) -> bool:
    """Every cache input of the (optimised) ``module`` is read only by the ``index_copy`` that is
    its present output: then binding the present to the input's buffer is an in-place update."""
    g = module.main
    params = {p.name: p for p in g.params}
    outs = dict(zip(g.output_names, g.outputs))
    for c, p in zip(spec.caches, spec.presents):
        cache, out = params.get(c), outs.get(p)
        if cache is None or out is None:
            return False
        op = out.producer
        if op is None or op.opname != "index_copy" or op.operands[0] is not cache:
            return False
        if {id(u) for u, _ in cache.uses} != {id(op)} or any(o is cache for o in g.outputs):
            return False
    return True


def bounded_attentions(module: Module) -> int:
    """Attentions over ``index_copy``-written keys that read only the rows written so far (a
    ``nonpad_kv_seqlen`` operand): set by ``bound-kv-reads``, or made so by the ONNX rewrite."""
    return sum(1 for op in module.main.ops if op.opname == "attention" and len(op.operands) == 7
               and op.operands[1].producer is not None and op.operands[1].producer.opname == "index_copy")


class Decoder:
    """A decoder step compiled for generation: ``prefill`` and ``decode`` (two compiles, made
    here and never again), the KV cache (``caches``: one array per input ``past_*.i``, allocated
    once) and the position written next. ``step(ids)`` runs the tokens ``ids`` at the current
    position and returns the logits of the last one."""

    def __init__(self, module: Module, target: str = "x86", options: CompileOptions | None = None, **kwargs: Any):
        """Compile ``module`` (a decoder step) for ``target``: keyword options as ``nnc.compile``'s,
        or ``options``; the decode compile adds ``dims={seq: 1}``."""
        self.spec = decoder_spec(module)
        # attention reads the cache rows written so far, not all max_length of them: the decoder
        # contract (unwritten rows are never attended to) that the pass relies on holds here
        module = module.clone()
        # (after simplify, which folds a written-out grouped-query attention onto the cache writes)
        PassManager("simplify,bound-kv-reads", verify_each=True).run(module)
        self.bounded_attentions = bounded_attentions(module)
        self.module = module
        if options is None:
            kwargs.setdefault("quiet", True)
            options = CompileOptions.make(target, "infer", **kwargs)
        elif kwargs:
            raise InputError(f"give options=CompileOptions(...) or keyword options, not both ({', '.join(kwargs)})")
        self.options = options  # as given (quality reports compile it again without quantization)
        if options.mode != "infer":
            raise InputError(f"a decoder compiles for inference, not mode {options.mode!r}")
        if options.dims and self.spec.seq in options.dims:
            raise InputError(f"dims: the token dim {self.spec.seq!r} of a decoder is not fixed by the caller "
                             f"(prefill reads it at run time, decode fixes it to 1)")
        t0 = time.perf_counter()
        self.prefill = compile_model(module, options=options)
        self.decode = compile_model(module, options=options.replace(dims={**(options.dims or {}), self.spec.seq: 1}))
        self.compile_seconds = time.perf_counter() - t0
        self.compiles = 2
        # the presents may be bound to the caches' buffers when the graph allows it; that is an
        # update in place when the target's code writes into given buffers (x86), else a copy
        # into the same arrays (the reference interpreter)
        self._bind = {which: updates_in_place(cm.module, self.spec)
                      for which, cm in (("prefill", self.prefill), ("decode", self.decode))}
        self.in_place = {which: self._bind[which] and cm.backend.writes_given_outputs(cm)
                         for which, cm in (("prefill", self.prefill), ("decode", self.decode))}
        self.caches = {n: np.zeros(self.spec.cache_shape, self.spec.cache_dtype) for n in self.spec.caches}
        self.position = 0

    @classmethod
    def from_torch(cls, model: Any, max_length: int, batch: int = 1, target: str = "x86",
                   options: CompileOptions | None = None, **kwargs: Any) -> Decoder:
        """A ``transformers`` causal LM: its decoder step exported with caches of ``max_length``."""
        from nnc.frontends.torch.hf_decoder import from_hf_decoder

        return cls(from_hf_decoder(model, max_length, batch), target, options, **kwargs)

    @classmethod
    def from_onnx(cls, model: Any, max_length: int, batch: int = 1, target: str = "x86",
                  options: CompileOptions | None = None, **kwargs: Any) -> Decoder:
        """An ONNX decoder with past key/values (a path, bytes or ModelProto; the layout of
        ``onnx_decoder.py``) on caches of ``max_length`` positions for ``batch`` sequences."""
        from nnc.loading import from_onnx

        from .onnx_decoder import decoder_step_from_onnx

        return cls(decoder_step_from_onnx(from_onnx(model), max_length, batch), target, options, **kwargs)

    def reset(self) -> None:
        """Start a new sequence: the cache's old rows are masked by position, so nothing is cleared."""
        self.position = 0

    def step(self, ids: np.ndarray) -> np.ndarray:
        """Run tokens ``ids`` (i64[B, n]) at the current position; the logits of the last token
        (f32[B, vocab]). n > 1 runs the prefill code, n == 1 the decode code."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        spec = self.spec
        if ids.ndim != 2 or ids.shape[0] != spec.batch or ids.shape[1] < 1:
            raise InputError(f"token ids must be [{spec.batch}, n >= 1] for this decoder (batch {spec.batch}), "
                             f"got {list(ids.shape)}")
        if self.position + ids.shape[1] > spec.max_length:
            raise InputError(f"{self.position} + {ids.shape[1]} tokens exceed the cache's maximum length "
                             f"{spec.max_length}")
        which = "decode" if ids.shape[1] == 1 else "prefill"
        cm = self.decode if which == "decode" else self.prefill
        feeds = {spec.input_ids: ids, spec.position: np.array(self.position, np.int64), **self.caches}
        if self._bind[which]:
            outs = cm.run(feeds, outputs=dict(zip(spec.presents, self.caches.values())))
        else:  # the cache is copied: the new arrays become the cache
            outs = cm.run(feeds)
            self.caches = {c: outs[p] for c, p in zip(spec.caches, spec.presents)}
        self.position += ids.shape[1]
        return outs[spec.logits][:, -1, :]

    def cache_bytes_copied_per_step(self, which: str, tokens: int = 1) -> int:
        """Bytes the cache update moves in one step of ``tokens`` new tokens: the new rows when in
        place, the whole cache plus the new rows otherwise."""
        b, h, _, d = self.spec.cache_shape
        rows = len(self.spec.caches) * b * h * tokens * d * self.spec.cache_dtype.itemsize
        return rows if self.in_place[which] else rows + self.spec.cache_bytes
