"""Ahead-of-time compilation: a model as a shared library with a C header and a JSON manifest.

``compile_aot(module, "model.so", options)`` re-uses the JIT path (``generate`` then ``optimize``),
asks the LLVM target machine for an object file instead of loading the code, and links it with
``gcc -shared`` together with two small generated files: a C wrapper (create/run/destroy, shape and
name queries, the manifest as a string) and an assembly file that embeds the weights blob with
``.incbin``. Three files are written, all-or-nothing (built in a temporary folder, copied beside the
destination under temporary names, then renamed): ``model.so``, ``model.h`` and ``model.json``.

Weights are embedded, not a sidecar: the library is then the whole model (nothing to lose or
mismatch when it is copied), the loader maps the read-only weights lazily and shares them between
processes, and the create function needs no file I/O or path logic. ``.incbin`` keeps the blob out
of LLVM (a global initialiser of hundreds of MB is slow to build and to optimise) and out of C (a
byte-array literal that size is slower still). The price is one library per set of weights.

``emit(module, form, options)`` returns the intermediate forms for ``nnc compile --emit``: the LLVM
IR after optimisation, the assembly, or the object file. ``load("model.so")`` runs a library from
Python through ctypes and returns a ``CompiledModel``.
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
from typing import Any, Mapping

import llvmlite.binding as llvm
import numpy as np

import nnc
from nnc.api import CompiledModel
from nnc.ir import DType, InputError, ModelError, Module, TargetError, TensorType, verify_module
from nnc.ir.interpreter import check_inputs

from . import generate, optimize
from .codegen import ENTRY
from .runtime import SHUTDOWN, add_shutdown_destructor, num_threads
from .target import TRIPLE

FORMAT = "nnc-aot"
FORMAT_VERSION = 1
EMIT_FORMS = ("llvm", "asm", "obj", "so")
MANIFEST_SYMBOL = "nnc_manifest"  # the same in every library, so a loader needs no other knowledge

_C_TYPES = {
    DType.f64: "double", DType.f32: "float", DType.f16: "uint16_t", DType.bf16: "uint16_t",
    DType.i64: "int64_t", DType.i32: "int32_t", DType.i16: "int16_t", DType.i8: "int8_t",
    DType.u64: "uint64_t", DType.u32: "uint32_t", DType.u16: "uint16_t", DType.u8: "uint8_t",
    DType.bool: "uint8_t",
}


# -- building -----------------------------------------------------------------------------------
def _static_module(module: Module, options: Mapping[str, Any]) -> tuple[Module, dict[str, int]]:
    """Fix symbolic input dims: ``shapes={input: dims}`` or ``dims={symbol: size}``; a library has
    static shapes, so symbols given neither way are bound to 1 (batch 1). Returns the bindings used."""
    shapes = {k: tuple(v) for k, v in (options.get("shapes") or {}).items()}
    dims = dict(options.get("dims") or {})
    used: dict[str, int] = {}
    for p in module.main.params:
        if p.name in shapes or p.type.shape is None or p.type.is_static:
            continue
        shape = []
        for d in p.type.shape:
            if not isinstance(d, int):
                used[str(d)] = dims.get(str(d), 1)
                d = used[str(d)]
            shape.append(d)
        shapes[p.name] = tuple(shape)
    if not shapes:
        return module, used
    from nnc.ir.specialize import specialize

    return specialize(module, shapes), used


def _build(module: Module, options: Mapping[str, Any]):
    verify_module(module)
    options = {**options, "threads": num_threads(options)}  # the pool size is compiled in
    static, bound = _static_module(module, options)
    m, storage, info, text = generate(static, options)
    opt = int(options.get("opt", 3))
    mod, tm = optimize(text, info, opt)
    _add_pool_destructor(mod)
    return m, storage, info, opt, mod, tm, bound


def _add_pool_destructor(mod: Any) -> None:
    """A library with a thread pool joins its workers when it is unloaded (dlclose or exit): link in
    an ``llvm.global_dtors`` entry for the runtime's shutdown function."""
    try:
        mod.get_function(SHUTDOWN)
    except NameError:
        return  # threads=1: no pool was emitted
    from llvmlite import ir

    d = ir.Module(name="nnc_dtors")
    d.triple = TRIPLE
    ir.Function(d, ir.FunctionType(ir.VoidType(), []), name=SHUTDOWN)
    add_shutdown_destructor(d)
    dtors = llvm.parse_assembly(str(d))
    dtors.data_layout = mod.data_layout
    mod.link_in(dtors)


def emit(module: Module, form: str, options: Mapping[str, Any] | None = None) -> bytes:
    """An intermediate form of the compiled module: ``llvm`` (IR after optimisation), ``asm``, ``obj``."""
    options = dict(options or {})
    if form not in ("llvm", "asm", "obj"):
        raise TargetError(f"emit form {form!r}: choose one of llvm, asm, obj (or so, through compile_aot)")
    *_, mod, tm, _ = _build(module, options)
    if form == "llvm":
        return str(mod).encode()
    if form == "asm":
        return tm.emit_assembly(mod).encode()
    return tm.emit_object(mod)


def c_identifier(name: str) -> str:
    """A C identifier from a file stem or model name: ``resnet-50`` -> ``resnet_50``."""
    ident = re.sub(r"\W", "_", name, flags=re.ASCII).strip("_") or "model"
    return "m_" + ident if ident[0].isdigit() else ident


def _tensor_entry(name: str, t: TensorType) -> dict[str, Any]:
    return {"name": name, "dtype": str(t.dtype), "shape": list(t.shape), "nbytes": int(t.nbytes or 0)}


def manifest_for(m: Module, storage: Any, info: Any, opt: int, prefix: str, library: str,
                 bound: Mapping[str, int] | None = None, threads: int = 1) -> dict[str, Any]:
    g = m.main
    tensors = []
    for key, off in sorted(storage.weight_offsets.items(), key=lambda kv: kv[1]):
        arr = m.constants[key]
        tensors.append({"name": key, "offset": off, "nbytes": int(arr.nbytes),
                        "dtype": str(DType.from_numpy(arr.dtype)), "shape": list(arr.shape)})
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "nnc_version": nnc.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": m.name, "prefix": prefix, "library": os.path.basename(library),
        "header": os.path.basename(_sibling(library, ".h")),
        "inputs": [_tensor_entry(p.name, p.type) for p in g.params],
        "bound_dims": dict(bound or {}),  # symbolic input dims fixed at compile time
        "outputs": [_tensor_entry(n, v.type) for n, v in zip(g.output_names, g.outputs)],
        "target": {"triple": TRIPLE, "cpu": info.cpu, "features": info.features, "vector_bits": info.vector_bits,
                   "opt": opt},
        "threads": int(threads),
        "arena_bytes": int(storage.arena_bytes), "arena_alignment": 64,
        "weights": {"layout": "embedded", "symbol": "nnc_weights", "section": ".rodata.nnc_weights",
                    "alignment": 64, "nbytes": int(storage.weights.nbytes), "tensors": tensors},
        "api": {f: f"{prefix}_{f}" for f in ("create", "run", "destroy")},
    }


def _sibling(path: str, ext: str) -> str:
    root, _ = os.path.splitext(path)
    return root + ext


def compile_aot(module: Module, path: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compile ``module`` to the shared library ``path`` plus ``<stem>.h`` and ``<stem>.json`` beside it.

    Options: those of ``x86.compile`` (``cpu``, ``target_features``, ``opt``), ``shapes`` or ``dims``
    to fix symbolic input dims (others become 1), and ``name``, the C prefix of the API (default:
    the file stem).
    Returns the manifest.
    """
    options = dict(options or {})
    if shutil.which(options.get("cc", "gcc")) is None:
        raise TargetError("AOT compilation links with gcc, which is not on PATH")
    prefix = c_identifier(options.get("name") or os.path.splitext(os.path.basename(path))[0])
    m, storage, info, opt, mod, tm, bound = _build(module, options)
    manifest = manifest_for(m, storage, info, opt, prefix, path, bound, num_threads(options))
    obj = tm.emit_object(mod)
    header = header_text(manifest)
    with tempfile.TemporaryDirectory(prefix="nnc-aot-") as tmp, Staging() as out:
        files = {"model.o": obj, "wrapper.c": wrapper_text(manifest).encode(), f"{prefix}.h": header.encode(),
                 "weights.S": _weights_asm("weights.bin").encode(),
                 "exports.map": f"{{ global: {prefix}_*; {MANIFEST_SYMBOL}; local: *; }};\n".encode()}
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        storage.weights.tofile(os.path.join(tmp, "weights.bin"))  # no extra copy of a large blob
        # gcc writes the library straight to its temporary name beside the destination: a model's
        # weights can be hundreds of MB, so they are not copied once more
        lib = out.temp_for(path, executable=True)
        cmd = [options.get("cc", "gcc"), "-shared", "-fPIC", "-O2", "-o", lib, "wrapper.c", "weights.S", "model.o",
               "-Wl,--version-script=exports.map", "-Wl,--no-undefined", "-Wl,-z,noexecstack", "-lm", "-lpthread"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            undefined = sorted(set(re.findall(r"undefined reference to `([^']+)'", proc.stderr)))
            why = f"undefined symbols {', '.join(undefined)}" if undefined else proc.stderr.strip()[-800:]
            raise TargetError(f"x86 AOT: linking {os.path.basename(path)} with gcc failed: {why}")
        out.write(_sibling(path, ".h"), header.encode())
        out.write(_sibling(path, ".json"), (json.dumps(manifest, indent=1) + "\n").encode())
        out.chmod_all()
    return manifest


class Staging:
    """All-or-nothing output files: each is written under a temporary name beside its destination;
    leaving the ``with`` block normally renames them all into place, an exception deletes them."""

    def __init__(self) -> None:
        self.temps: list[tuple[str, str, bool]] = []  # (temp, destination, executable)
        umask = os.umask(0)
        os.umask(umask)
        self.umask = umask

    def temp_for(self, path: str, executable: bool = False) -> str:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=os.path.dirname(os.path.abspath(path)))
        os.close(fd)
        self.temps.append((tmp, path, executable))
        return tmp

    def write(self, path: str, data: bytes) -> None:
        with open(self.temp_for(path), "wb") as f:
            f.write(data)

    def chmod_all(self) -> None:
        for tmp, _, executable in self.temps:  # mkstemp makes 0600 files: give the usual permissions
            os.chmod(tmp, (0o777 if executable else 0o666) & ~self.umask)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                for tmp, path, _ in self.temps:
                    os.replace(tmp, path)
        finally:
            for tmp, _, _ in self.temps:
                if os.path.exists(tmp):
                    os.unlink(tmp)


def _weights_asm(blob: str) -> str:
    # .rodata: the weights are frozen; the kernels only read them. 64-byte alignment is what the
    # storage map assumes for every constant's offset.
    return (f'\t.section .rodata.nnc_weights,"a",@progbits\n\t.balign 64\n\t.globl nnc_weights\n'
            f'\t.type nnc_weights, @object\nnnc_weights:\n\t.incbin "{blob}"\n'
            f'\t.size nnc_weights, .-nnc_weights\n\t.section .note.GNU-stack,"",@progbits\n')


# -- generated C --------------------------------------------------------------------------------
def _c_literal(s: str) -> str:
    out = []
    for ch in s.encode():
        c = chr(ch)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append(f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


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
        f"#ifndef {guard}", f"#define {guard}", "", "#include <stddef.h>", "#include <stdint.h>", "",
        "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
        f"typedef struct {p}_ctx {p}_ctx;", "",
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
        "#ifdef __cplusplus", "}", "#endif", f"#endif /* {guard} */", "",
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
        try:
            self._lib = ctypes.CDLL(path)
            get = self._lib[MANIFEST_SYMBOL]
        except (OSError, AttributeError) as e:
            raise ModelError(f"{path}: not an nnc shared library ({e})") from None
        get.restype = ctypes.c_char_p
        self.manifest: dict[str, Any] = json.loads(get().decode())
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{path}: manifest format {self.manifest.get('format')!r} "
                             f"v{self.manifest.get('format_version')} is not {FORMAT} v{FORMAT_VERSION}")
        p = self.manifest["prefix"]
        self._create = self._lib[f"{p}_create"]
        self._create.restype = ctypes.c_void_p
        self._run = self._lib[f"{p}_run"]
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._run.restype = ctypes.c_int
        self._destroy = self._lib[f"{p}_destroy"]
        self._destroy.argtypes = [ctypes.c_void_p]
        self.path = path
        self.inputs = [(t["name"], TensorType(DType(t["dtype"]), tuple(t["shape"]))) for t in self.manifest["inputs"]]
        self.outputs = [(t["name"], TensorType(DType(t["dtype"]), tuple(t["shape"]))) for t in self.manifest["outputs"]]
        self._ctx = self._create()
        if not self._ctx:
            raise MemoryError(f"{p}_create: cannot allocate {self.manifest['arena_bytes']} bytes of arena")
        self._in_ptrs = (ctypes.c_void_p * max(len(self.inputs), 1))()
        self._out_ptrs = (ctypes.c_void_p * max(len(self.outputs), 1))()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        keep = [np.ascontiguousarray(a) for a in check_inputs(self.inputs, feeds)]
        for i, a in enumerate(keep):
            self._in_ptrs[i] = a.ctypes.data
        outs = {}
        for j, (name, t) in enumerate(self.outputs):
            o = np.empty(t.shape, dtype=t.dtype.numpy)
            outs[name] = o
            self._out_ptrs[j] = o.ctypes.data
        if self._run(self._ctx, ctypes.addressof(self._in_ptrs), ctypes.addressof(self._out_ptrs)) != 0:
            raise InputError(f"{self.path}: the library refused the call (null pointer)")
        return outs

    def __del__(self) -> None:
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx and getattr(self, "_destroy", None) is not None:
            self._destroy(ctx)


class LoadedModel(CompiledModel):
    """A ``CompiledModel`` over a library: no IR module, the manifest says what the model takes."""

    def __init__(self, ex: AotExecutable) -> None:  # not CompiledModel.__init__: there is no IR module
        self.module = None
        self.executable = ex
        self.target = "x86"
        self.report = {"library": ex.path, "manifest": ex.manifest}
        self.input_names = [n for n, _ in ex.inputs]
        self.output_names = [n for n, _ in ex.outputs]
        self.input_types = dict(ex.inputs)
        self.output_types = dict(ex.outputs)


def load(path: str | os.PathLike) -> CompiledModel:
    """Run a library written by ``compile_aot`` (``nnc compile --target x86 -o model.so``)."""
    return LoadedModel(AotExecutable(os.fspath(path)))
