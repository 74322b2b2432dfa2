"""Ahead-of-time compilation: a model as a shared library with a C header and a JSON manifest.

``write_library(executable, "model.so")`` takes the object file of a compile (``nnc.compile(...,
target="x86")`` produced it and ran it in this process; the cache stores the same bytes) and links it
with ``gcc -shared`` together with two small generated files: a C wrapper (create/run/destroy, shape and
name queries, the manifest as a string) and an assembly file that embeds the weights blob with
``.incbin``. Three files are written, all-or-nothing (built in a temporary folder, copied beside the
destination under temporary names, then renamed): ``model.so``, ``model.h`` and ``model.json``.

Weights are embedded, not a sidecar: the library is then the whole model (nothing to lose or
mismatch when it is copied), the loader maps the read-only weights lazily and shares them between
processes, and the create function needs no file I/O or path logic. ``.incbin`` keeps the blob out
of LLVM (a global initialiser of hundreds of MB is slow to build and to optimise) and out of C (a
byte-array literal that size is slower still). The price is one library per set of weights.

So the library and the JIT model run the same machine code: one compile, two ways to hold it. The
manifest (embedded and as ``model.json``) carries the compile report. ``load("model.so")`` runs a
library from Python through ctypes (``nnc.load`` wraps it in a ``CompiledModel``).
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from typing import Any, Mapping

import numpy as np

from nnc.ir import DType, InputError, ModelError, TargetError, TensorType
from nnc.ir.interpreter import check_inputs
from nnc.ir.memory_limits import check_allocation

from ..artifact import Staging, json_bytes, nnc_version, sibling
from . import aot_dims
from .c_text import C_TYPES as _C_TYPES
from .c_text import c_literal as _c_literal
from .c_text import header_close, header_open
from .codegen import ENTRY
from .executable import Interface, data_address, exact_feeds, exact_input_specs
from .frame_formulas import FrameFormulas
from .library_check import check_library, file_digest
from .split_compile import members
from .storage import ERROR_RECORD_BYTES
from .target import TRIPLE

FORMAT = "nnc-aot"
FORMAT_VERSION = 1
DIMS_FORMAT_VERSION = 2  # a library with run-time dims (aot_dims.py): run takes the input shapes
MANIFEST_SYMBOL = "nnc_manifest"  # the same in every library, so a loader needs no other knowledge


# -- building -----------------------------------------------------------------------------------
def c_identifier(name: str) -> str:
    """A C identifier from a file stem or model name: ``resnet-50`` -> ``resnet_50``."""
    ident = re.sub(r"\W", "_", name, flags=re.ASCII).strip("_") or "model"
    return "m_" + ident if ident[0].isdigit() else ident


def _tensor_entry(name: str, t: TensorType) -> dict[str, Any]:
    return {"name": name, "dtype": str(t.dtype), "shape": list(t.shape), "nbytes": int(t.nbytes or 0)}


def manifest_for(compiled: Any, interface: Any, prefix: str, library: str,
                 report: Mapping[str, Any] | None = None, bound: Mapping[str, int] | None = None,
                 formulas: FrameFormulas | None = None) -> dict[str, Any]:
    """The library's manifest: interface, target, arena, weights and the compile report (with
    ``formulas``, a library with run-time dims: their bounds, formulas and status codes)."""
    meta, info = compiled.entry.meta, compiled.info
    man = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "nnc_version": nnc_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": meta.get("model", prefix), "prefix": prefix, "library": os.path.basename(library),
        "header": os.path.basename(sibling(library, ".h")),
        "inputs": [_tensor_entry(n, t) for n, t in interface.inputs],
        "bound_dims": dict(bound or {}),  # symbolic input dims fixed at compile time
        "outputs": [_tensor_entry(n, t) for n, t in interface.outputs],
        "target": {"triple": TRIPLE, "cpu": info.cpu, "features": info.features, "vector_bits": info.vector_bits,
                   "opt": int(meta.get("opt", 3))},
        "threads": int(meta.get("threads", 1)),
        "arena_bytes": int(interface.arena_bytes), "arena_alignment": 64,
        # what a nonzero status of run means: status - 1 indexes the kernels; the error record
        # (the bad index and its bound) sits at error_offset in the arena
        "kernels": list(interface.kernels), "error_offset": interface.error_offset,
        "weights": {"layout": "embedded", "symbol": "nnc_weights", "section": ".rodata.nnc_weights",
                    "alignment": 64, "nbytes": len(compiled.entry.weights), "tensors": meta.get("weights", [])},
        "api": {f: f"{prefix}_{f}" for f in ("create", "run", "destroy")},
        "report": dict(report or {}),
    }
    if formulas is not None:
        man["format_version"] = DIMS_FORMAT_VERSION
        man["arena_bytes"] = formulas.arena_bytes
        man["error_offset"] = None  # per call: just past the buffers (<prefix>_arena_bytes - 64)
        man["dims"] = aot_dims.manifest_dims(formulas)
        man["api"].update({f: f"{prefix}_{f}" for f in ("output_shapes", "arena_bytes", "dims")})
    return man


def library_files(path: str) -> list[str]:
    """The files ``write_library(..., path)`` writes: the library, its header and its manifest."""
    return [path, sibling(path, ".h"), sibling(path, ".json")]


def write_library(executable: Any, path: str, report: Mapping[str, Any] | None = None, name: str | None = None,
                  bound: Mapping[str, int] | None = None, cc: str = "gcc",
                  formulas: FrameFormulas | None = None) -> dict[str, Any]:
    """Link the object code of a compiled ``X86Executable`` into the shared library ``path``, with
    ``<stem>.h`` and ``<stem>.json`` beside it; returns the manifest. ``name`` is the C prefix of the
    API (default: the file stem); ``report`` is stored in the manifest (``nnc.load`` gives it back).
    Shape-generic code takes ``formulas`` (``frame_formulas.derive``): the library then takes the
    input shapes at run time (``aot_dims.py``)."""
    compiled = getattr(executable, "compiled", None)
    if compiled is None:
        raise TargetError("x86: this executable keeps no object code to save")
    if shutil.which(cc) is None:
        raise TargetError(f"AOT compilation links with {cc}, which is not on PATH")
    prefix = c_identifier(name or os.path.splitext(os.path.basename(path))[0])
    manifest = manifest_for(compiled, executable.interface, prefix, path, report, bound, formulas)
    if formulas is None:
        header, wrapper = header_text(manifest), wrapper_text(manifest)
    else:
        header, wrapper = aot_dims.header_text(manifest), aot_dims.wrapper_text(manifest, formulas, MANIFEST_SYMBOL)
    with tempfile.TemporaryDirectory(prefix="nnc-aot-") as tmp, Staging() as out:
        objects = {f"model{i}.o": o for i, o in enumerate(members(compiled.entry.object_code))}
        files = {**objects, "wrapper.c": wrapper.encode(),
                 f"{prefix}.h": header.encode(), "weights.bin": compiled.entry.weights,
                 "weights.S": _weights_asm("weights.bin").encode(),
                 "exports.map": f"{{ global: {prefix}_*; {MANIFEST_SYMBOL}; local: *; }};\n".encode()}
        for fname, data in files.items():
            with open(os.path.join(tmp, fname), "wb") as f:
                f.write(data)
        # gcc writes the library straight to its temporary name beside the destination: a model's
        # weights can be hundreds of MB, so they are not copied once more
        lib = out.temp_for(path, executable=True)
        cmd = [cc, "-shared", "-fPIC", "-O2", "-o", lib, "wrapper.c", "weights.S", *objects,
               "-Wl,--version-script=exports.map", "-Wl,--no-undefined", "-Wl,-z,noexecstack", "-lm", "-lpthread"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            undefined = sorted(set(re.findall(r"undefined reference to `([^']+)'", proc.stderr)))
            why = f"undefined symbols {', '.join(undefined)}" if undefined else proc.stderr.strip()[-800:]
            raise TargetError(f"x86 AOT: linking {os.path.basename(path)} with {cc} failed: {why}")
        # only the sidecar can record the library's hash (the embedded manifest is inside it)
        manifest["library_bytes"], manifest["library_sha256"] = file_digest(lib)
        out.write(sibling(path, ".h"), header.encode())
        out.write(sibling(path, ".json"), json_bytes(manifest))
    return manifest


def _weights_asm(blob: str) -> str:
    # .rodata: the weights are frozen; the kernels only read them. 64-byte alignment is what the
    # storage map assumes for every constant's offset.
    return (f'\t.section .rodata.nnc_weights,"a",@progbits\n\t.balign 64\n\t.globl nnc_weights\n'
            f'\t.type nnc_weights, @object\nnnc_weights:\n\t.incbin "{blob}"\n'
            f'\t.size nnc_weights, .-nnc_weights\n\t.section .note.GNU-stack,"",@progbits\n')


# -- generated C --------------------------------------------------------------------------------
def header_text(man: dict[str, Any]) -> str:
    p, P = man["prefix"], man["prefix"].upper()
    guard = f"NNC_{P}_H"
    lines = [
        f"/* {p}.h: the C interface of {man['library']}, generated by nnc {man['nnc_version']}.",
        f" * Model {man['model']!s}, compiled for x86 cpu {man['target']['cpu']} "
        f"({man['target']['vector_bits']}-bit vectors).",
        " *",
        f" *   {p}_ctx *ctx = {p}_create();          (allocates the working memory; NULL if out of memory)",
        f" *   {p}_run(ctx, inputs, outputs);         (arrays of pointers, in the order below; 0 on success)",
        " *     -1: a null pointer; n > 0: the input data was refused (an index out of range) by the",
        " *     n-th kernel (the n-th non-constant op of the compiled graph); outputs are then undefined",
        f" *   {p}_destroy(ctx);",
        " *",
        " * Tensors are dense, row-major (C order), of the dtype and shape below; bool is one byte,",
        " * f16/bf16 are raw 16-bit patterns. A context may be used by one thread at a time; create one",
        " * per thread to run concurrently. The weights are inside the library.",
        " */",
        *header_open(guard, p),
        f"#define {P}_NUM_INPUTS {len(man['inputs'])}", f"#define {P}_NUM_OUTPUTS {len(man['outputs'])}",
        f"#define {P}_ARENA_BYTES {man['arena_bytes']}", f"#define {P}_WEIGHTS_BYTES {man['weights']['nbytes']}", "",
    ]
    for kind, items in (("INPUT", man["inputs"]), ("OUTPUT", man["outputs"])):
        for i, t in enumerate(items):
            q = f"{P}_{kind}_{i}"
            shape = ", ".join(str(d) for d in t["shape"]) or "1"
            lines += [f"/* {kind.lower()} {i}: {t['name']}: {t['dtype']}[{','.join(map(str, t['shape']))}] */",
                      f"#define {q}_NAME {_c_literal(t['name'])}", f"#define {q}_DTYPE \"{t['dtype']}\"",
                      f"#define {q}_CTYPE {_C_TYPES[DType(t['dtype'])]}", f"#define {q}_RANK {len(t['shape'])}",
                      f"#define {q}_SHAPE {{{shape}}}", f"#define {q}_NUMEL {max(int(np.prod(t['shape'])), 0)}",
                      f"#define {q}_BYTES {t['nbytes']}", ""]
    lines += [
        f"{p}_ctx *{p}_create(void);",
        f"int {p}_run({p}_ctx *ctx, const void *const *inputs, void *const *outputs);",
        f"void {p}_destroy({p}_ctx *ctx);", "",
        "/* The same facts at run time; i out of range gives NULL / -1. */",
        f"int {p}_num_inputs(void);", f"int {p}_num_outputs(void);",
        f"const char *{p}_input_name(int i);", f"const char *{p}_input_dtype(int i);",
        f"int {p}_input_rank(int i);", f"const int64_t *{p}_input_shape(int i);", f"int64_t {p}_input_bytes(int i);",
        f"const char *{p}_output_name(int i);", f"const char *{p}_output_dtype(int i);",
        f"int {p}_output_rank(int i);", f"const int64_t *{p}_output_shape(int i);", f"int64_t {p}_output_bytes(int i);",
        f"const char *{p}_manifest(void);  /* the JSON manifest */", "",
        *header_close(guard),
    ]
    return "\n".join(lines)


def wrapper_text(man: dict[str, Any]) -> str:
    p = man["prefix"]
    n_in, n_out = len(man["inputs"]), len(man["outputs"])
    arena = max(64, (man["arena_bytes"] + 63) // 64 * 64)

    def table(kind: str, items: list[dict[str, Any]]) -> str:
        rows = []
        for i, t in enumerate(items):
            rows.append(f"static const int64_t {kind}_shape{i}[] = {{{', '.join(map(str, t['shape'])) or '0'}}};")
        names = ", ".join(_c_literal(t["name"]) for t in items) or "0"
        dtypes = ", ".join(f"\"{t['dtype']}\"" for t in items) or "0"
        ranks = ", ".join(str(len(t["shape"])) for t in items) or "0"
        nbytes = ", ".join(str(t["nbytes"]) for t in items) or "0"
        shapes = ", ".join(f"{kind}_shape{i}" for i in range(len(items))) or "0"
        rows += [f"static const char *const {kind}_names[] = {{{names}}};",
                 f"static const char *const {kind}_dtypes[] = {{{dtypes}}};",
                 f"static const int {kind}_ranks[] = {{{ranks}}};",
                 f"static const int64_t {kind}_bytes[] = {{{nbytes}}};",
                 f"static const int64_t *const {kind}_shapes[] = {{{shapes}}};"]
        n = len(items)
        for fn, ret, arr, bad in (("name", "const char *", "names", "0"), ("dtype", "const char *", "dtypes", "0"),
                                  ("rank", "int ", "ranks", "-1"), ("shape", "const int64_t *", "shapes", "0"),
                                  ("bytes", "int64_t ", "bytes", "-1")):
            rows.append(f"{ret}{p}_{kind}_{fn}(int i) {{ return i >= 0 && i < {n} ? {kind}_{arr}[i] : {bad}; }}")
        return "\n".join(rows)

    manifest = json.dumps(man, sort_keys=True)
    return f"""/* Generated by nnc {man['nnc_version']}: the C API around the compiled entry point. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "{p}.h"  /* so the compiler checks these definitions against the published declarations */

extern int {ENTRY}(void *const *inputs, void *const *outputs, void *arena, const void *weights);
extern const unsigned char nnc_weights[];

struct {p}_ctx {{ void *arena; }};

{p}_ctx *{p}_create(void) {{
    {p}_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    /* the planner's offsets assume a 64-byte aligned base; zeroed like the Python executable's */
    if (posix_memalign(&c->arena, 64, {arena}u) != 0) {{ free(c); return NULL; }}
    memset(c->arena, 0, {arena}u);
    return c;
}}

int {p}_run({p}_ctx *c, const void *const *inputs, void *const *outputs) {{
    if (!c || ({n_in} && !inputs) || ({n_out} && !outputs)) return -1;
    for (int i = 0; i < {n_in}; i++) if (!inputs[i]) return -1;
    for (int i = 0; i < {n_out}; i++) if (!outputs[i]) return -1;
    return {ENTRY}((void *const *)inputs, outputs, c->arena, nnc_weights);  /* 0, or 1 + failing kernel */
}}

void {p}_destroy({p}_ctx *c) {{
    if (!c) return;
    free(c->arena);
    free(c);
}}

int {p}_num_inputs(void) {{ return {n_in}; }}
int {p}_num_outputs(void) {{ return {n_out}; }}
{table("input", man["inputs"])}
{table("output", man["outputs"])}

static const char manifest_text[] = {_c_literal(manifest)};
const char *{p}_manifest(void) {{ return manifest_text; }}
const char *{MANIFEST_SYMBOL}(void) {{ return manifest_text; }}
"""


# -- loading ------------------------------------------------------------------------------------
class AotExecutable:
    """A compiled library run through ctypes: one context (arena) per executable."""

    target = "x86"

    def __init__(self, path: str):
        path = os.path.abspath(path)
        if not os.path.exists(path):
            raise ModelError(f"{path}: no such file")
        # dlopen maps a truncated file and the process dies of SIGBUS: check the file first
        sidecar = os.path.splitext(path)[0] + ".json"
        check_library(path, sidecar if os.path.exists(sidecar) else None)
        try:
            self._lib = ctypes.CDLL(path)
            get = self._lib[MANIFEST_SYMBOL]
        except (OSError, AttributeError) as e:
            raise ModelError(f"{path}: not an nnc shared library ({e})") from None
        get.restype = ctypes.c_char_p
        self.manifest: dict[str, Any] = json.loads(get().decode())
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version") not in (FORMAT_VERSION,
                                                                                                DIMS_FORMAT_VERSION):
            raise ModelError(f"{path}: manifest format {self.manifest.get('format')!r} "
                             f"v{self.manifest.get('format_version')} is not {FORMAT} v{FORMAT_VERSION} or "
                             f"v{DIMS_FORMAT_VERSION}")
        p = self.manifest["prefix"]
        self._create = self._lib[f"{p}_create"]
        self._create.restype = ctypes.c_void_p
        self.dims = self.manifest.get("dims")  # a library with run-time dims: run takes the input shapes
        self._run = self._lib[f"{p}_run"]
        self._run.argtypes = [ctypes.c_void_p] * (4 if self.dims else 3)
        self._run.restype = ctypes.c_int
        if self.dims:
            self._output_shapes = self._lib[f"{p}_output_shapes"]
            self._output_shapes.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            self._output_shapes.restype = ctypes.c_int
            self._arena_bytes = self._lib[f"{p}_arena_bytes"]
            self._arena_bytes.argtypes = [ctypes.c_void_p]
            self._arena_bytes.restype = ctypes.c_int64
            self._status_text = self._lib[f"{p}_status_text"]
            self._status_text.argtypes = [ctypes.c_int]
            self._status_text.restype = ctypes.c_char_p
        self._destroy = self._lib[f"{p}_destroy"]
        self._destroy.argtypes = [ctypes.c_void_p]
        self.path = path
        self.inputs = [(t["name"], TensorType(DType(t["dtype"]), tuple(t["shape"]))) for t in self.manifest["inputs"]]
        self.outputs = [(t["name"], TensorType(DType(t["dtype"]), tuple(t["shape"]))) for t in self.manifest["outputs"]]
        self.interface = Interface(tuple(self.inputs), tuple(self.outputs), int(self.manifest["arena_bytes"]),
                                   tuple(str(k) for k in self.manifest.get("kernels", [])),
                                   self.manifest.get("error_offset"))
        check_allocation(self.interface.arena_bytes, f"{path}: the arena", TargetError)
        self._ctx = self._create()
        if not self._ctx:
            raise TargetError(f"{p}_create: cannot allocate {self.manifest['arena_bytes']} bytes of arena")
        self._in_ptrs = (ctypes.c_void_p * max(len(self.inputs), 1))()
        self._out_ptrs = (ctypes.c_void_p * max(len(self.outputs), 1))()
        self._input_specs = None if self.dims else exact_input_specs(self.inputs)
        # One context and one pair of pointer arrays, so runs from several Python threads take turns
        # (ctypes releases the GIL during the call). A lock rather than a context per thread: the
        # library has one worker pool, not reentrant (a call finding it busy runs its loops serially
        # on the calling thread), so concurrent contexts would mostly run single-threaded, for an
        # arena each. Same as X86Executable. C callers wanting parallel calls create one context per thread.
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if self.dims:
            return self._run_with_dims(feeds)
        keep = exact_feeds(self._input_specs, feeds) or \
            [np.ascontiguousarray(a) for a in check_inputs(self.inputs, feeds)]
        outs = {name: np.empty(t.shape, dtype=t.dtype.numpy) for name, t in self.outputs}
        with self._lock:
            for i, a in enumerate(keep):
                self._in_ptrs[i] = data_address(a)
            for j, o in enumerate(outs.values()):
                self._out_ptrs[j] = data_address(o)
            status = self._run(self._ctx, ctypes.addressof(self._in_ptrs), ctypes.addressof(self._out_ptrs))
            if status > 0:  # a kernel refused its input (an index out of range): read its record now
                arena = ctypes.c_void_p.from_address(self._ctx).value  # the context's first field
                raise InputError(self.interface.error_message(status, arena))
        if status != 0:
            raise InputError(f"{self.path}: the library refused the call (null pointer)")
        return outs

    def _shape_arrays(self, args: list[np.ndarray]) -> tuple[Any, list[Any]]:
        shapes = [(ctypes.c_int64 * max(a.ndim, 1))(*a.shape) for a in args]
        ptrs = (ctypes.c_void_p * max(len(shapes), 1))(*[ctypes.addressof(x) for x in shapes])
        return ptrs, shapes

    def _refused(self, status: int) -> InputError:
        return InputError(f"{self.path}: the library refused these inputs (status {status}: "
                          f"{self._status_text(status).decode()})")

    def output_shapes(self, feeds: Mapping[str, Any]) -> list[tuple[int, ...]]:
        """The output shapes for these inputs (only their shapes matter), from the library."""
        args = check_inputs(self.inputs, feeds)
        ptrs, keep = self._shape_arrays(args)
        outs = [(ctypes.c_int64 * max(len(t.shape), 1))() for _, t in self.outputs]
        optrs = (ctypes.c_void_p * max(len(outs), 1))(*[ctypes.addressof(o) for o in outs])
        status = self._output_shapes(ctypes.addressof(ptrs), ctypes.addressof(optrs))
        if status != 0:
            raise self._refused(status)
        return [tuple(o[:len(t.shape)]) for o, (_, t) in zip(outs, self.outputs)]

    def arena_bytes_at(self, feeds: Mapping[str, Any]) -> int:
        """The arena bytes these input shapes use (the library's ``<prefix>_arena_bytes``)."""
        ptrs, keep = self._shape_arrays(check_inputs(self.inputs, feeds))
        n = int(self._arena_bytes(ctypes.addressof(ptrs)))
        if n < 0:
            raise self._refused(n)
        return n

    def _run_with_dims(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        # np.require keeps a 0-d input 0-d (ascontiguousarray makes it [1], which the shape check refuses:
        # a training step's learning rate and step count)
        args = [np.require(a, requirements="C") for a in check_inputs(self.inputs, feeds)]
        shapes = self.output_shapes(dict(zip((n for n, _ in self.inputs), args)))
        outs = {name: np.empty(shape, dtype=t.dtype.numpy) for (name, t), shape in zip(self.outputs, shapes)}
        ptrs, keep = self._shape_arrays(args)
        with self._lock:
            for i, a in enumerate(args):
                self._in_ptrs[i] = data_address(a)
            for j, o in enumerate(outs.values()):
                self._out_ptrs[j] = data_address(o)
            status = self._run(self._ctx, ctypes.addressof(self._in_ptrs), ctypes.addressof(ptrs),
                               ctypes.addressof(self._out_ptrs))
            if status > 0:  # the error record sits just past the buffers of this call
                arena = ctypes.c_void_p.from_address(self._ctx).value
                offset = int(self._arena_bytes(ctypes.addressof(ptrs))) - ERROR_RECORD_BYTES
                err = Interface(self.interface.inputs, self.interface.outputs, self.interface.arena_bytes,
                                self.interface.kernels, offset)
                raise InputError(err.error_message(status, arena))
        if status != 0:
            raise self._refused(status)
        return outs

    def __del__(self) -> None:
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx and getattr(self, "_destroy", None) is not None:
            self._destroy(ctx)


def load(path: str | os.PathLike) -> AotExecutable:
    """The executable of a library written by ``write_library`` (``cm.save("model.so")``)."""
    return AotExecutable(os.fspath(path))
