"""The ``nnc`` command line: ``compile``, ``run``, ``dump`` and ``ops`` over the Python API.

Every command is a thin layer over ``nnc.compile`` / ``nnc.load_module``. Errors nnc raises on purpose
(``NncError``) and failures to write an output (``OSError``) become one line on stderr,
``nnc: error: <message>``, and exit status 1; argparse usage errors exit 2. Outputs are written to a
temporary file in the destination folder and renamed into place, so an interrupted or failed
command never leaves a half-written file behind.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
import time
import zipfile
from typing import Any, Sequence

import numpy as np

import nnc
from nnc.ir import DType, InputError, Module, NncError, TensorType, print_module

from .api import MODES
from .cli_asic import add_asic_command, add_asic_flags, cmd_compile_asic
from .cli_pipeline import add_pipeline_flags, pipeline_options, write_report
from .cli_train import add_train_command, add_train_flags, cmd_compile_train
from .cli_views import add_view_commands
from .targets import TARGETS, get_backend

PROG = "nnc"
_VALUES_SHOWN = 16  # outputs with at most this many elements are printed in full


# -- output files -------------------------------------------------------------------------------
def write_files(contents: dict[str, bytes]) -> None:
    """Write several files all-or-nothing: each goes to a temp file beside it, then all are renamed."""
    umask = os.umask(0)
    os.umask(umask)
    temps: list[tuple[str, str]] = []
    try:
        for path, data in contents.items():
            folder = os.path.dirname(os.path.abspath(path))
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
                temps.append((tmp, path))
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
            except OSError as e:  # name the file the user asked for, not our temp file
                raise OSError(e.errno, f"cannot write: {e.strerror}", path) from None
        for tmp, path in temps:
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise OSError(e.errno, f"cannot write: {e.strerror}", path) from None
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    # np.savez(**arrays) would take a weight named "file" or "allow_pickle" for its own argument;
    # this writes the same archive format (one KEY.npy per array) without that trap
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for key, a in arrays.items():
            with z.open(key + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


# -- shared helpers -----------------------------------------------------------------------------
def _check_target(target: str) -> None:
    get_backend(target)  # an unknown target is a TargetError listing the available ones


def _op_count(m: Module) -> int:
    return sum(1 for g in m.graphs.values() for op in g.ops if op.opname != "const")


def _signature(types: dict[str, TensorType]) -> str:
    return ", ".join(f"{n}: {t}" for n, t in types.items()) or "(none)"


def _size(nbytes: float) -> str:
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    for unit in ("KB", "MB"):
        nbytes /= 1024
        if nbytes < 1024:
            return f"{nbytes:.1f} {unit}"
    return f"{nbytes / 1024:.1f} GB"


def _add_x86_flags(p: argparse.ArgumentParser) -> None:
    x = p.add_argument_group("x86 target")
    x.add_argument("--cpu", metavar="NAME", help="CPU to compile for (default: the host's; e.g. x86-64, haswell)")
    x.add_argument("--target-features", metavar="STR", help="LLVM feature list, e.g. +avx2,+fma,-avx512f "
                                                            "(default: the host's, or those of --cpu)")
    x.add_argument("--threads", type=int, metavar="N",
                   help="threads per model (default: $NNC_NUM_THREADS or all cores)")
    x.add_argument("--no-cache", action="store_true", help="bypass the compilation cache (~/.cache/nnc; NNC_CACHE_DIR)")


def _compile_options(args: argparse.Namespace) -> dict[str, Any]:
    """nnc.compile options from the x86 flags; -q also silences compile progress on stderr."""
    opts: dict[str, Any] = {k: getattr(args, k) for k in ("cpu", "target_features", "threads")
                            if getattr(args, k, None) is not None}
    if opts and args.target != "x86":
        raise NncError(f"--{next(iter(opts)).replace('_', '-')} applies to --target x86 only")
    if getattr(args, "no_cache", False):
        opts["cache"] = False
    if getattr(args, "quiet", False):
        opts["quiet"] = True
    opts.update(pipeline_options(args))
    return opts


def _how_compiled(cm: Any) -> str:
    """Where an x86 model's machine code came from, for the compile summary."""
    exe = cm.executable
    if getattr(exe, "shape_inputs", None) is not None:  # api.Specializer
        why = f"shape inputs {', '.join(exe.shape_inputs)}" if exe.shape_inputs else "symbolic dims"
        return f"compiled at the first run for each input signature ({why})"
    status = getattr(exe, "cache_status", None)
    return {None: "", "off": "", "hit": "loaded from the compilation cache", "miss": "generated (now cached)"}.get(
        status, f"generated (cache entry rebuilt: {status})")


def _say(args: argparse.Namespace, text: str = "") -> None:
    if not getattr(args, "quiet", False):
        print(text)


# -- nnc compile --------------------------------------------------------------------------------
def cmd_compile(args: argparse.Namespace) -> int:
    _check_target(args.target)
    if args.mode == "train":
        return cmd_compile_train(args)
    if args.target == "asic":
        return cmd_compile_asic(args)
    if args.target == "x86" and (args.output or args.emit):
        return _compile_x86(args)
    if args.emit:
        raise NncError("--emit needs --target x86")
    if args.output and args.target != "reference":
        raise NncError(f"saving a compiled module is not implemented for target {args.target!r} yet")
    if args.output and not args.output.endswith(".nnc"):
        raise NncError(f"target 'reference' writes text IR; name the output *.nnc (got {args.output!r})")
    t0 = time.perf_counter()
    cm = nnc.compile(args.model, target=args.target, mode=args.mode, **_compile_options(args))
    ms = (time.perf_counter() - t0) * 1e3
    write_report(args, cm.report)
    m = cm.module
    _say(args, f"compiled {args.model} for target {args.target} (mode {args.mode}) in {ms:.0f} ms: "
               f"{_op_count(m)} ops, {_size(m.weights_bytes())} of weights")
    _say(args, f"  inputs:  {_signature(cm.input_types)}")
    _say(args, f"  outputs: {_signature(cm.output_types)}")
    if _how_compiled(cm):
        _say(args, f"  code:    {_how_compiled(cm)}")
    if not args.output:
        ext = "so" if args.target == "x86" else "nnc"
        _say(args, f"nothing written; pass -o FILE.{ext} to save the compiled module")
        return 0
    weights = args.output[:-4] + ".npz"
    write_files({args.output: print_module(m).encode(), weights: _npz_bytes(dict(m.constants))})
    _say(args, f"wrote {args.output} (IR) and {weights} (weights)")
    return 0


def _compile_x86(args: argparse.Namespace) -> int:
    """AOT: -o FILE.so writes the library, its header and manifest; --emit llvm|asm|obj dumps a stage."""
    from nnc.backends.x86 import aot

    form, out = args.emit or "so", args.output
    if form in ("obj", "so") and not out:
        raise NncError(f"--emit {form} writes a binary file; give -o FILE")
    if form == "so" and not out.endswith(".so"):
        raise NncError(f"target 'x86' writes a shared library; name the output *.so (got {out!r})")
    opts: dict[str, Any] = {k: getattr(args, k) for k in ("cpu", "target_features", "opt", "threads")
                            if getattr(args, k, None) is not None}
    if getattr(args, "dim", None):
        opts["dims"] = dict(args.dim)
    t0 = time.perf_counter()
    module = nnc.load_module(args.model)
    if form == "so":
        man = aot.compile_aot(module, out, opts)
        if man["bound_dims"]:
            _say(args, "symbolic dims fixed: " + ", ".join(f"{k}={v}" for k, v in man["bound_dims"].items()))
        _say(args, f"compiled {args.model} for x86 ({man['target']['cpu']}) in {time.perf_counter() - t0:.1f} s: "
                   f"wrote {out}, {man['header']}, {os.path.splitext(man['library'])[0]}.json "
                   f"({_size(man['weights']['nbytes'])} of weights inside)")
        return 0
    data = aot.emit(module, form, opts)
    if out:
        write_files({out: data})
        _say(args, f"wrote {out} ({form}, {_size(len(data))})")
    else:
        sys.stdout.write(data.decode())
    return 0


# -- nnc bench ----------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from nnc import bench

    _check_target(args.target)
    engines = ["nnc"] + (["ort"] if not args.no_ort and bench.ort_available() else []) + \
        (["reference"] if args.reference else [])
    res = bench.benchmark(args.model, engines, threads=args.threads, target=args.target, rounds=args.rounds,
                          budget_s=args.budget, dims=dict(args.dim or []))
    print(bench.format_report(args.model, res, args.threads, bench.flops_or_none(args.model)))
    if "ort" not in engines and not args.no_ort:
        print("  (onnxruntime is not installed: no comparison)")
    return 0 if res["nnc"]["status"] == "ok" else 1


# -- nnc run ------------------------------------------------------------------------------------
def _input_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, path


def _dim_spec(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected SYMBOL=SIZE (e.g. N=1), got {text!r}")
    return name, int(value)


def _read_npy(name: str, path: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"input {name!r}: {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"input {name!r}: {path}: is a directory, not a .npy file") from None
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"input {name!r}: {path}: not a readable .npy file ({e})") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        arr.close()
        raise InputError(f"input {name!r}: {path} is an .npz archive; give one array per input as .npy")
    return arr


def _random_input(name: str, ty: TensorType, dims: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    if ty.shape is None:
        raise InputError(f"input {name!r} has unknown rank ({ty}); --random-inputs cannot make one, "
                         f"pass --input {name}=FILE.npy")
    shape = []
    for d in ty.shape:
        if isinstance(d, int):
            shape.append(d)
        elif d in dims:
            shape.append(dims[d])
        else:
            raise InputError(f"input {name!r} has a symbolic dimension {d!r} ({ty}); give its size with "
                             f"--dim {d}=SIZE or pass --input {name}=FILE.npy")
    if ty.dtype.is_float:
        return rng.standard_normal(shape).astype(ty.dtype.numpy)
    if ty.dtype is DType.bool:
        return rng.random(shape) < 0.5
    # small non-negative integers are valid indices and counts for most models
    return rng.integers(0, 10, size=shape).astype(ty.dtype.numpy)


def _check_input(name: str, arr: np.ndarray, ty: TensorType, source: str, bindings: dict[str, int]) -> None:
    """The interpreter checks inputs too; this says which file was wrong and how to fix the most
    common mistake (np.save of a float64 array for a float32 model)."""
    try:
        got = DType.from_numpy(arr.dtype)
    except TypeError:
        raise InputError(f"input {name!r} ({source}): dtype {arr.dtype} is not supported; the model expects {ty}") \
            from None
    if got is not ty.dtype:
        raise InputError(f"input {name!r} ({source}): dtype {got} but the model expects {ty}; "
                         f"convert it with arr.astype(np.{ty.dtype.numpy.name})")
    why = ty.matches(got, tuple(arr.shape), bindings)
    if why:
        raise InputError(f"input {name!r} ({source}): {why}")


def _type_of(a: np.ndarray) -> TensorType:
    return TensorType(DType.from_numpy(a.dtype), tuple(a.shape))


def _summary(a: np.ndarray) -> str:
    if a.size == 0:
        return "empty"
    if a.dtype == np.bool_:
        return f"{int(a.sum())} of {a.size} true"
    x = a.astype(np.float64)
    finite = x[np.isfinite(x)]
    parts = []
    if finite.size:
        parts.append(f"min={finite.min():.4g} max={finite.max():.4g} mean={finite.mean():.4g}")
    if finite.size < x.size:
        parts.append(f"{x.size - finite.size} non-finite")
    # a classifier's scores: the winning index is what a reader wants to see
    one_row = a.ndim == 1 or (a.ndim == 2 and a.shape[0] == 1)
    if DType.from_numpy(a.dtype).is_float and one_row and a.size > 1:
        parts.append(f"argmax={int(np.argmax(a))}")
    return "  ".join(parts)


def _output_filenames(names: Sequence[str]) -> list[str]:
    used: set[str] = set()
    files = []
    for n in names:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", n).lstrip(".") or "output"
        f, k = base, 1
        while f.lower() in used:
            f, k = f"{base}_{k}", k + 1
        used.add(f.lower())
        files.append(f + ".npy")
    return files


def cmd_run(args: argparse.Namespace) -> int:
    _check_target(args.target)
    if args.output_dir and os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise NncError(f"--output-dir {args.output_dir}: exists and is not a folder")
    cm = nnc.compile(args.model, target=args.target, **_compile_options(args))
    write_report(args, cm.report)
    feeds: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    bindings: dict[str, int] = {}  # symbolic dims seen so far, so N must agree across inputs
    for name, path in args.input or []:
        if name in feeds:
            raise InputError(f"input {name!r} given twice")
        if name not in cm.input_types:
            raise InputError(f"the model has no input {name!r}; its inputs are {_signature(cm.input_types)}")
        arr = _read_npy(name, path)
        _check_input(name, arr, cm.input_types[name], path, bindings)
        feeds[name], sources[name] = arr, path
    missing = [n for n in cm.input_names if n not in feeds]
    if missing and not args.random_inputs:
        raise InputError(f"missing input(s) {', '.join(missing)}; the model takes {_signature(cm.input_types)}. "
                         f"Pass --input NAME=FILE.npy (or --random-inputs)")
    rng = np.random.default_rng(args.seed)
    dims = {**dict(args.dim or []), **bindings}
    for n in missing:
        feeds[n], sources[n] = _random_input(n, cm.input_types[n], dims, rng), f"random, seed {args.seed}"
    t0 = time.perf_counter()
    outs = cm.run(feeds)
    ms = (time.perf_counter() - t0) * 1e3
    _say(args, f"ran {args.model} on target {args.target} in {ms:.1f} ms")
    for n in cm.input_names:
        a = feeds[n]
        _say(args, f"input  {n}: {_type_of(a)}  ({sources[n]})")
    files = _output_filenames(cm.output_names)
    for n in cm.output_names:
        a = outs[n]
        print(f"output {n}: {_type_of(a)}  {_summary(a)}")
        if 0 < a.size <= _VALUES_SHOWN and not args.quiet:
            text = np.array2string(a, precision=4, suppress_small=True, separator=", ")
            print("        " + text.replace("\n", "\n        "))
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        paths = [os.path.join(args.output_dir, f) for f in files]
        write_files({p: _npy_bytes(outs[n]) for p, n in zip(paths, cm.output_names)})
        _say(args, f"wrote {', '.join(paths)}")
    return 0


# -- nnc dump -----------------------------------------------------------------------------------
# -- nnc ops ------------------------------------------------------------------------------------
def converter_table() -> list[tuple[str, list[int], list[str]]]:
    """(ONNX op, opsets where a converter form starts, targets) for every op with a converter."""
    from nnc.frontends.onnx.registry import supported
    from nnc.onnx_backend import x86_op_coverage

    x86 = x86_op_coverage(quiet=False)  # op -> (node tests whose IR ops all lower on x86, node tests)

    def targets(op: str) -> list[str]:  # every imported op runs on the interpreter
        ok, n = x86.get(op, (0, 0))
        return ["reference"] + (["x86"] if n and ok == n else [f"x86 ({ok} of {n} forms)"] if ok else [])
    rows = [(f"{d}.{t}" if d else t, since) for (d, t), since in supported().items()]
    return [(op, since, targets(op)) for op, since in rows]


def function_expanded_ops() -> dict[str, int]:
    """ONNX ops without a converter whose ONNX function body uses only ops nnc imports.

    Maps op -> the first opset with such a body. It is computed from the schemas' bodies for a
    float input, so an op whose body depends on other input types may still fail for those types.
    """
    import onnx
    from onnx import defs

    from nnc.frontends.onnx.registry import supported

    have = {t for (d, t) in supported() if d == ""}
    schemas = {s.name: s for s in defs.get_all_schemas() if s.domain in ("", "ai.onnx")}
    memo: dict[str, int | None] = {}

    def bodies(s: Any) -> list[tuple[int, onnx.FunctionProto]]:
        out = []
        for v in s.function_opset_versions if s.has_function else []:
            f = onnx.FunctionProto()
            f.ParseFromString(s.get_function_with_opset_version(v))
            out.append((v, f))
        if s.has_context_dependent_function:
            node = onnx.helper.make_node(s.name, [f"i{k}" for k in range(len(s.inputs))], ["o"])
            tp = onnx.TypeProto()
            tp.tensor_type.elem_type = onnx.TensorProto.FLOAT
            types = [tp.SerializeToString()] * len(s.inputs)
            for v in s.context_dependent_function_opset_versions:
                try:
                    fb = s.get_context_dependent_function_with_opset_version(v, node.SerializeToString(), types)
                except Exception:  # noqa: BLE001 - onnx refuses to build a body for these input types
                    continue
                if fb:
                    f = onnx.FunctionProto()
                    f.ParseFromString(fb)
                    out.append((v, f))
        return sorted(out, key=lambda e: e[0])

    def expands(name: str, depth: int = 0) -> int | None:
        if name in memo:
            return memo[name]
        memo[name] = None  # a cycle or a too-deep chain counts as "no"
        s = schemas.get(name)
        if s is None or depth > 4:
            return None
        for v, body in bodies(s):
            if all(n.domain in ("", "ai.onnx") and (n.op_type in have or expands(n.op_type, depth + 1) is not None)
                   for n in body.node):
                memo[name] = v
                break
        return memo[name]

    return {n: v for n in sorted(schemas) if n not in have and (v := expands(n)) is not None}


def cmd_ops(args: argparse.Namespace) -> int:
    rows = converter_table()
    w = max([len(r[0]) for r in rows] + [len("ONNX op")])
    print(f"{'ONNX op':<{w}}  {'since opset':<12}  targets")
    for op, since, targets in rows:
        print(f"{op:<{w}}  {', '.join(map(str, since)):<12}  {', '.join(targets)}")
    full = sum("x86" in t for _, _, t in rows)
    some = sum(any(x.startswith("x86 (") for x in t) for _, _, t in rows)
    more = f" ({some} more in some forms)" if some else ""
    print(f"\n{len(rows)} ONNX ops have converters; {full} run on x86{more}: "
          f"every IR op their import emits in the op's official node tests has an x86 lowering.")
    if not args.no_functions:
        fx = function_expanded_ops()
        if fx:
            print(f"{len(fx)} more import through their ONNX function body (opset where the body starts):")
            print("  " + ", ".join(f"{n} ({v})" for n, v in fx.items()))
    return 0


# -- argument parsing ---------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Wraps descriptions to the terminal like argparse does, but keeps the examples' lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def _target_help() -> str:
    return f"compilation target (default: reference). Available: {', '.join(TARGETS)}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="nnc: a neural-network compiler. Models are ONNX files (.onnx) or nnc text IR (.nnc).",
        epilog="examples:\n"
               "  nnc run examples/mlp.onnx --input x=examples/mlp_input.npy\n"
               "  nnc compile examples/mlp.onnx --target reference -o mlp.nnc\n"
               "  nnc dump examples/cnn.onnx\n"
               "  nnc ops\n\n"
               "Run 'nnc COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"{PROG} {nnc.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True

    c = sub.add_parser("compile", formatter_class=_Formatter, help="compile a model for a target",
                       description="Import MODEL, verify it and compile it for a target. With -o, save the "
                                   "result: for the reference target that is the text IR (FILE.nnc) plus the "
                                   "weights beside it (FILE.npz); 'nnc run FILE.nnc' runs it again.",
                       epilog="example:\n  nnc compile examples/mlp.onnx --target reference -o mlp.nnc")
    c.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx) or nnc text IR (.nnc)")
    c.add_argument("--target", "-t", default="reference", help=_target_help())
    c.add_argument("--mode", choices=MODES, default="infer", help="infer (default) or train")
    c.add_argument("-o", "--output", metavar="OUT",
                   help="where to write the compiled module (*.nnc for reference, *.so for x86)")
    c.add_argument("--emit", choices=("llvm", "asm", "obj", "so"),
                   help="x86: write this stage instead (LLVM IR after optimisation, assembly, object file, "
                        "shared library); llvm and asm go to stdout without -o")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    add_pipeline_flags(c)
    _add_x86_flags(c)
    add_asic_flags(c)
    add_train_flags(c)
    c.set_defaults(fn=cmd_compile)

    r = sub.add_parser("run", formatter_class=_Formatter, help="run a model on inputs from .npy files",
                       description="Compile MODEL and run it once. Inputs come from .npy files "
                                   "(numpy.save); each output is printed with its shape, dtype and "
                                   "min/max/mean, and saved as NAME.npy with --output-dir.",
                       epilog="examples:\n"
                              "  nnc run examples/mlp.onnx --input x=examples/mlp_input.npy\n"
                              "  nnc run examples/cnn.onnx --random-inputs --output-dir out/")
    r.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx) or nnc text IR (.nnc)")
    r.add_argument("--target", "-t", default="reference", help=_target_help())
    r.add_argument("--input", "-i", action="append", type=_input_spec, metavar="NAME=FILE.npy",
                   help="an input array; repeat for each input")
    r.add_argument("--random-inputs", action="store_true",
                   help="generate the inputs not given with --input (standard normal floats, integers 0..9)")
    r.add_argument("--dim", action="append", type=_dim_spec, metavar="SYMBOL=SIZE",
                   help="size of a symbolic dimension for --random-inputs, e.g. --dim N=1")
    r.add_argument("--seed", type=int, default=0, help="seed for --random-inputs (default 0)")
    r.add_argument("--output-dir", "-o", metavar="DIR", help="write each output to DIR/NAME.npy")
    r.add_argument("-q", "--quiet", action="store_true", help="print only the output summaries")
    add_pipeline_flags(r)
    _add_x86_flags(r)
    r.set_defaults(fn=cmd_run)

    add_view_commands(sub, _Formatter, _dim_spec)

    bn = sub.add_parser("bench", formatter_class=_Formatter, help="measure latency against onnxruntime",
                        description="Compile MODEL and time it: median and p90 latency, throughput and compile "
                                    "time, for nnc and (when installed) onnxruntime with ORT_ENABLE_ALL, each in "
                                    "its own subprocess, rounds alternating between them.",
                        epilog="example:\n  nnc bench examples/cnn.onnx --target x86 --threads 2")
    bn.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx)")
    bn.add_argument("--target", "-t", default="x86", help="nnc target to time (default: x86)")
    bn.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1)")
    bn.add_argument("--rounds", type=int, default=3, help="rounds of alternating engines (default 3)")
    bn.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per engine per round")
    bn.add_argument("--dim", action="append", type=_dim_spec, metavar="SYMBOL=SIZE",
                    help="size of a symbolic input dimension (default 1)")
    bn.add_argument("--reference", action="store_true", help="also time the reference interpreter")
    bn.add_argument("--no-ort", action="store_true", help="do not run onnxruntime")
    bn.set_defaults(fn=cmd_bench)

    add_train_command(sub, _Formatter)
    add_asic_command(sub, _Formatter)

    o = sub.add_parser("ops", formatter_class=_Formatter, help="list the ONNX ops nnc supports",
                       description="The ONNX op coverage table: each op with a converter, the opset versions "
                                   "where its converter forms start, and the targets that run it; then the "
                                   "ops that import by expanding their ONNX function body.",
                       epilog="example:\n  nnc ops")
    o.add_argument("--no-functions", action="store_true", help="skip the function-expansion list")
    o.set_defaults(fn=cmd_ops)
    return p


def _one_line(msg: str) -> str:
    lines = [s.strip() for s in str(msg).splitlines() if s.strip()]
    if not lines:
        return "unknown error"
    return lines[0] + (f" (near: {' '.join(lines[1:])})" if len(lines) > 1 else "")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.fn(args)
        sys.stdout.flush()  # so a closed pipe (nnc ops | head) surfaces here, not at exit
        return status
    except BrokenPipeError:
        # the reader went away: stop quietly, and keep Python from complaining while exiting
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except NncError as e:
        print(f"{PROG}: error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"{PROG}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
