"""The compiled model as a callable: one foreign call per run.

An ``X86Executable`` needs only an ``Interface`` (input and output names and static types, arena
size), the weights blob and the address of the entry point, so the same class serves a fresh
compile and a compilation-cache hit (where no IR is rebuilt). The arena is allocated once per
executable and reused across calls; outputs are fresh numpy arrays (the caller owns them). ``run``
checks the feeds with the same rules as the interpreter.

The entry point returns 0, or the code of the kernel that stopped the run (an index out of range):
``run`` then raises ``InputError`` naming that kernel's op (``Interface.kernels``, code - 1) and the
offending value read from the error record at the end of the arena.

Machine code is always loaded from an object file (``load_object``): the fresh compile emits one
and the cache stores the same bytes, so a hit runs exactly the code a miss produced.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import struct
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import llvmlite.binding as llvm
import numpy as np

from nnc.ir import DType, Graph, InputError, Module, TargetError, TensorType
from nnc.ir.interpreter import check_inputs
from nnc.ir.memory_limits import check_allocation

from .codegen import ERROR_BOUND, ERROR_VALUE, PROFILE
from .runtime import MAX_THREADS, PROFILE_FIELDS, PROFILE_THREADS
from .split_compile import members
from .storage import StorageMap

_ENTRY_T = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
ALIGN = 64


@dataclass(frozen=True)
class Interface:
    """What the entry point expects: inputs and outputs in order (all static), and the arena size;
    and what its status means: the kernels' op descriptions (status - 1 indexes them) and where the
    error record sits in the arena (None when no kernel checks anything)."""

    inputs: tuple[tuple[str, TensorType], ...]
    outputs: tuple[tuple[str, TensorType], ...]
    arena_bytes: int
    kernels: tuple[str, ...] = ()
    error_offset: int | None = None

    @classmethod
    def of(cls, graph: Graph, storage: StorageMap) -> Interface:
        return cls(tuple((p.name, p.type) for p in graph.params),
                   tuple(zip(graph.output_names, (v.type for v in graph.outputs))), int(storage.arena_bytes),
                   tuple(storage.kernel_table), storage.error_offset)

    def to_json(self) -> dict[str, Any]:
        def io(pairs: tuple[tuple[str, TensorType], ...]) -> list[list[Any]]:
            return [[n, t.dtype.name, list(t.shape)] for n, t in pairs]
        return {"inputs": io(self.inputs), "outputs": io(self.outputs), "arena_bytes": self.arena_bytes,
                "kernels": list(self.kernels), "error_offset": self.error_offset}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Interface:
        def io(rows: list[list[Any]]) -> tuple[tuple[str, TensorType], ...]:
            return tuple((str(n), TensorType(DType[dt], tuple(x if isinstance(x, str) else int(x) for x in shape)))
                         for n, dt, shape in rows)
        off = d["error_offset"]  # required, like "kernels": an entry without them predates status codes
        return cls(io(d["inputs"]), io(d["outputs"]), int(d["arena_bytes"]), tuple(str(k) for k in d["kernels"]),
                   None if off is None else int(off))

    def error_message(self, status: int, arena_address: int | None = None) -> str:
        """The ``InputError`` message for a nonzero entry-point status; with the address of the arena
        the run used, it includes the offending index from the error record. The AOT loader calls it
        too, with the kernel table and error offset of its manifest (a library context's first field
        is its arena pointer)."""
        where = self.kernels[status - 1] if 0 < status <= len(self.kernels) else f"kernel #{status - 1}"
        if arena_address is None or self.error_offset is None:
            return f"{where}: an index is out of range"
        value, bound = (ctypes.c_int64.from_address(arena_address + self.error_offset + k).value
                        for k in (ERROR_VALUE, ERROR_BOUND))
        return f"{where}: index {value} is out of range for a dim of {bound} (valid: [{-bound}, {bound - 1}])"


class LoadedCode:
    """Machine code from one object file (or the archive of a split compile's objects), linked into
    this process by ORC's JITLink as one JIT library.

    JITLink lays each object's sections out in one allocation, so an object's 32-bit PC-relative
    references to its own constants and code always reach, and builds GOT entries in the object for
    what it uses from the other objects (the parts declare those symbols preemptible:
    ``split_compile._declaration``). MCJIT, used before, mapped an object's code, constants and
    data separately, anywhere in the address space: in a long process with a fragmented address
    space two of them ended up more than 2 GiB apart, and LLVM aborted the process
    (``isInt<32>(RealOffset)`` in ``resolveX86_64Relocation``; tests/backends/test_jit_far_sections.py).
    The library is unloaded when this object is collected."""

    def __init__(self, object_code: bytes):
        _load_runtime_libraries()
        objects = members(object_code)  # one object, or the parts of a split compile (split_compile.py)
        # an unresolved call would jump to address 0 when run: refuse such code with a clear error
        defined = set().union(*(defined_symbols(o) for o in objects))
        undefined = {s for o in objects for s in undefined_symbols(o)} - defined
        missing = [s for s in undefined if not llvm.address_of_symbol(s)]
        if missing:
            raise TargetError(f"x86: the generated code calls {', '.join(sorted(missing))}, which this process "
                              f"does not provide (a kernel needs a runtime function nnc does not supply)")
        builder = llvm.JITLibraryBuilder()
        for obj in objects:
            builder.add_object_img(obj)
        builder.add_current_process()
        for name in sorted(defined):
            builder.export_symbol(name)
        with _JIT_LOCK:
            global _JIT_SERIAL
            _JIT_SERIAL += 1
            jit = _jit()
            try:
                self._library = builder.link(jit, f"nnc{_JIT_SERIAL}")
            except RuntimeError as e:
                raise TargetError(f"x86: the JIT could not link the compiled code: {e}") from None
        self._library.jit = jit  # the JIT outlives the library (unloading it needs the JIT)
        self._addresses = {name: self._library[name] for name in defined}

    def global_address(self, name: str) -> int | None:
        """The address of a global variable of the code, or None when it has none of that name."""
        return self._addresses.get(name) or None

    def address(self, name: str) -> int:
        addr = self._addresses.get(name)
        if not addr:
            raise KeyError(name)
        return addr


_JIT_LOCK = threading.Lock()
_JIT_SERIAL = 0  # a JIT library's name cannot be used twice in a process


@functools.lru_cache(maxsize=1)
def _jit():
    """The process's ORC JIT (JITLink): every ``LoadedCode`` is a library of its own in it. Object
    code only, so its target machine (the host's) compiles nothing."""
    _load_runtime_libraries()
    return llvm.create_lljit_compiler(use_jit_link=True)


def load_object(object_code: bytes) -> LoadedCode:
    return LoadedCode(object_code)


@functools.lru_cache(maxsize=1)
def _load_runtime_libraries() -> None:
    """LLVM lowers some conversions (f64 -> f16...) to libgcc/compiler-rt calls such as
    ``__truncdfhf2``; make libgcc's visible to the JIT linker. Scalar math kernels call libm
    (sinf, powf, fmodf, erf...), which must be visible too."""
    for lib in ("gcc_s", "m", "c"):  # libc: clock_gettime, which profiling code calls
        name = ctypes.util.find_library(lib)
        if name:
            try:
                llvm.load_library_permanently(name)
            except RuntimeError:
                pass


def undefined_symbols(object_code: bytes) -> list[str]:
    """The global symbols an ELF64 object file uses but does not define (its external calls)."""
    return [name for name, defined in _global_symbols(object_code) if not defined]


def defined_symbols(object_code: bytes) -> set[str]:
    """The global symbols an ELF64 object file defines."""
    return {name for name, defined in _global_symbols(object_code) if defined}


def elf_sections(data: bytes) -> list[tuple[int, ...]]:
    """The section headers of a little-endian ELF64 file, each as (name, type, flags, addr, offset,
    size, link, info, addralign, entsize)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise TargetError("x86: the object code is not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    return [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]


def _global_symbols(object_code: bytes) -> list[tuple[str, bool]]:
    """(name, defined) of every global symbol of an ELF64 object file."""
    data = bytes(object_code)
    sections = elf_sections(data)
    names = []
    for sh in sections:
        if sh[1] != 2:  # SHT_SYMTAB
            continue
        offset, size, link, entsize = sh[4], sh[5], sh[6], sh[9] or 24
        str_off = sections[link][4]
        for k in range(1, size // entsize):
            st_name, st_info, _, st_shndx = struct.unpack_from("<IBBH", data, offset + k * entsize)
            if st_info >> 4 == 1 and st_name:  # STB_GLOBAL; section 0: undefined
                end = data.index(b"\0", str_off + st_name)
                name = data[str_off + st_name:end].decode()
                if name != "_GLOBAL_OFFSET_TABLE_":
                    names.append((name, st_shndx != 0))
    return names


class X86Executable:
    target = "x86"

    def __init__(self, interface: Interface, weights: np.ndarray | bytes, entry_address: int, keepalive: Any,
                 module: Module | None = None, graph: Graph | None = None, storage: StorageMap | None = None):
        self.interface = interface
        # the prepared IR, kept for inspection after a fresh compile; None after a cache hit
        self.module = module
        self.graph = graph
        self.storage = storage
        self.cache_status = "off"  # "hit", "miss", "corrupt: ...", set by the driver
        self._keepalive = keepalive  # the engine owning the code
        self._entry = _ENTRY_T(entry_address)
        # before allocating: a cache entry may come from a compile under another bound
        check_allocation(interface.arena_bytes, "x86: the arena", TargetError)
        for name, t in interface.outputs:
            check_allocation(t.nbytes or 0, f"x86: output {name!r} ({t})", TargetError)
        self._arena_buf, self._arena_ptr = _aligned_buffer(max(interface.arena_bytes, ALIGN))
        self._weights_buf, self._weights_ptr = weights_buffer(weights)
        self._in_ptrs = (ctypes.c_void_p * max(len(interface.inputs), 1))()
        self._out_ptrs = (ctypes.c_void_p * max(len(interface.outputs), 1))()
        self._in_table = ctypes.addressof(self._in_ptrs)
        self._out_table = ctypes.addressof(self._out_ptrs)
        self._output_names = tuple(n for n, _ in interface.outputs)
        self._output_slots = tuple((j, n, tuple(t.shape), np.dtype(t.dtype.numpy))
                                   for j, (n, t) in enumerate(interface.outputs))
        self._input_specs = exact_input_specs(interface.inputs)
        self._lock = threading.Lock()  # one arena: runs from several Python threads take turns

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.interface.outputs]

    def check_feeds(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """The feeds in input order; the interpreter's rules and messages."""
        return feeds_in_order(self.interface, feeds)

    def run(self, feeds: Mapping[str, Any], outputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run on ``feeds``; ``outputs`` optionally names the caller's buffers for some outputs."""
        if not outputs:
            # the common call: a dict of arrays of exactly the inputs' dtypes and shapes
            args = exact_feeds(self._input_specs, feeds) or self.check_feeds(feeds)
            with self._lock:
                return self._call_fresh(args)
        args = self.check_feeds(feeds)
        with self._lock:
            return self._call(args, given_outputs(self.output_names, outputs))

    def _call_fresh(self, args: list[np.ndarray]) -> dict[str, np.ndarray]:
        """``_call`` with every output a fresh array, without the general binding's per-call lists."""
        in_ptrs, out_ptrs = self._in_ptrs, self._out_ptrs
        for i, a in enumerate(args):
            in_ptrs[i] = data_address(a)
        outs = {}
        for j, name, shape, dtype in self._output_slots:
            outs[name] = o = np.empty(shape, dtype)
            out_ptrs[j] = data_address(o)
        status = self._entry(self._in_table, self._out_table, self._arena_ptr, self._weights_ptr)
        if status:
            raise InputError(self.interface.error_message(status, self._arena_ptr))
        return outs

    def _call(self, args: list[np.ndarray], given: Sequence[np.ndarray | None] = ()) -> dict[str, np.ndarray]:
        outs = bind_io(self._in_ptrs, self._out_ptrs, args, [t for _, t in self.interface.outputs], given)
        status = self._entry(ctypes.addressof(self._in_ptrs), ctypes.addressof(self._out_ptrs), self._arena_ptr,
                             self._weights_ptr)
        if status:
            raise InputError(self.interface.error_message(status, self._arena_ptr))
        return dict(zip(self._output_names, outs))

    def run_profiled(self, feeds: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
        """Run once and return the outputs, the entry point's clock stamps (int64 nanoseconds,
        shape (kernels + 1, 2): the whole entry point, then each kernel's start and end), and with a
        thread pool each pool thread's chunks per kernel (shape (kernels, threads, 3): first chunk's
        start, last chunk's end, busy ns; zeros for a thread that ran none), else None. Only code
        compiled with ``profile=True`` records them."""
        code = self._keepalive
        address = code.global_address(PROFILE) if hasattr(code, "global_address") else None
        if address is None:
            raise TargetError("x86: this code was compiled without profile=True; it records no kernel times")
        args = self.check_feeds(feeds)
        n = len(self.interface.kernels)
        per_thread = code.global_address(PROFILE_THREADS)
        with self._lock:
            outs = self._call(args)
            stamps = _int64s(address, 2 * (n + 1)).reshape(n + 1, 2)
            threads = None if per_thread is None or n == 0 else _int64s(per_thread, self._profile_cells(n))
        return outs, stamps, None if threads is None else threads.reshape(n, -1, PROFILE_FIELDS)

    def _profile_cells(self, kernels: int) -> int:
        threads = self.compiled.entry.meta["threads"] if getattr(self, "compiled", None) is not None else 1
        return kernels * min(int(threads), MAX_THREADS) * PROFILE_FIELDS


def _int64s(address: int, count: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_int64 * count).from_address(address)).copy()


def exact_input_specs(inputs: Sequence[tuple[str, Any]]) -> tuple[tuple[str, tuple[int, ...], np.dtype], ...] | None:
    """(name, shape, numpy dtype) of each input for ``exact_feeds``; None when an input is not a
    tensor of static shape (such a signature always takes the full check)."""
    specs = []
    for name, t in inputs:
        if not isinstance(t, TensorType) or t.shape is None or not all(isinstance(d, int) for d in t.shape):
            return None
        dtype = np.dtype(t.dtype.numpy)
        if DType.from_numpy(dtype) != t.dtype:
            return None
        specs.append((name, tuple(t.shape), dtype))
    return tuple(specs)


def exact_feeds(specs: tuple[tuple[str, tuple[int, ...], np.dtype], ...] | None,
                feeds: Any) -> list[np.ndarray] | None:
    """The feeds in input order, C-contiguous, when ``feeds`` is a dict holding exactly the inputs,
    each an ndarray of exactly its dtype and shape; else None, and ``check_inputs`` decides (and
    raises its errors). What passes here would pass there unchanged: this only skips its work."""
    if specs is None or type(feeds) is not dict or len(feeds) != len(specs):
        return None
    args = []
    for name, shape, dtype in specs:
        a = feeds.get(name)
        if type(a) is not np.ndarray or a.dtype is not dtype or a.shape != shape:
            return None
        args.append(np.ascontiguousarray(a))
    return args


def data_address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's data. Through the buffer protocol this is ~0.15 us;
    ``a.ctypes.data`` builds a ctypes helper object and costs ~0.8 us, which for a small model was
    a sizeable part of a call. A read-only or empty array (no writable buffer of a byte) takes the
    slow route."""
    try:
        return _addressof(_char_from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


_addressof = ctypes.addressof
_char_from_buffer = ctypes.c_char.from_buffer


def feeds_in_order(interface: Interface, feeds: Mapping[str, Any]) -> list[np.ndarray]:
    """The feeds as contiguous arrays in input order, checked with the interpreter's rules."""
    return [np.ascontiguousarray(a) for a in check_inputs(interface.inputs, feeds)]


def given_outputs(names: list[str], outputs: Mapping[str, np.ndarray] | None) -> list[np.ndarray | None]:
    """The caller's output buffers in output order (None where the run allocates)."""
    if not outputs:
        return []
    unknown = sorted(set(outputs) - set(names))
    if unknown:
        raise InputError(f"unknown output(s) {', '.join(unknown)}; the outputs are {', '.join(names)}")
    return [outputs.get(n) for n in names]


def bind_io(in_ptrs: Any, out_ptrs: Any, args: list[np.ndarray], out_types: list[TensorType],
            given: Sequence[np.ndarray | None] = ()) -> list[np.ndarray]:
    """Point the entry point's input table at ``args`` and its output table at fresh arrays of
    ``out_types`` (static types), which it returns: the caller owns them. ``given[j]``, when not
    None, is the caller's own buffer for output j (checked: exact shape and dtype, C-contiguous,
    writable); it may be an input's buffer where the producing op allows it (a KV cache written in
    place by ``index_copy``)."""
    for i, a in enumerate(args):
        in_ptrs[i] = data_address(a)
    outs = [np.empty(t.shape, dtype=t.dtype.numpy) if j >= len(given) or given[j] is None
            else _checked_out(given[j], t, j) for j, t in enumerate(out_types)]
    for j, o in enumerate(outs):
        out_ptrs[j] = data_address(o)
    return outs


def _checked_out(a: Any, t: TensorType, j: int) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.shape != tuple(t.shape) or a.dtype != t.dtype.numpy \
            or not a.flags.c_contiguous or not a.flags.writeable:
        got = f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
        raise InputError(f"output {j}: the given buffer must be a writable C-contiguous {t}, got {got}")
    return a


def weights_buffer(weights: np.ndarray | bytes | memoryview) -> tuple[np.ndarray, int]:
    """The weights blob as the code reads it, and its address. Kernels may assume the base is as
    aligned as the offsets the planner gave them; a fresh compile's blob already is (hundreds of MB
    for a big model: not copied again); a cache entry's bytes are copied once to an aligned buffer."""
    raw = np.frombuffer(weights, dtype=np.uint8) if isinstance(weights, (bytes, bytearray, memoryview)) else \
        np.ascontiguousarray(weights).reshape(-1).view(np.uint8)
    if raw.ctypes.data % ALIGN == 0 and raw.size >= ALIGN:
        return raw, raw.ctypes.data
    buf, ptr = _aligned_buffer(max(raw.size, ALIGN))
    buf[ptr - buf.ctypes.data:][:raw.size] = raw
    return buf, ptr


def _aligned_buffer(nbytes: int) -> tuple[np.ndarray, int]:
    """A zeroed buffer with at least ``nbytes`` from an ``ALIGN``-byte boundary, and that address."""
    buf = np.zeros(nbytes + ALIGN, dtype=np.uint8)
    addr = buf.ctypes.data
    return buf, (addr + ALIGN - 1) // ALIGN * ALIGN
