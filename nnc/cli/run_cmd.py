"""``nnc run``: compile a model (``nnc.compile``, the compile flags apply) or load a saved one
(``model.so``, ``model.nnc`` with its manifest: ``nnc.load``), run it once on inputs from .npy files
or random ones, print a summary of each output and optionally save them. With ``--profile`` it also
prints the time of each compiled kernel (x86, ``CompiledModel.profile``; docs/profiling.md) and can
write it as a Chrome trace."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from typing import Any, Sequence

import numpy as np

import nnc
from nnc.ir import DType, InputError, NncError, OptionalType, SequenceType, TensorType

from .common import (
    Formatter,
    add_compile_flags,
    compile_options,
    npy_bytes,
    positive_int,
    say,
    signature,
    write_files,
    write_report,
)

_VALUES_SHOWN = 16  # outputs with at most this many elements are printed in full
_RANDOM_LIMIT = 2**31  # elements of one random input: more is surely a mistake (and would not fit)


def _compiled(args: argparse.Namespace) -> Any:
    """A saved model (x86 library, or reference text IR that has its manifest beside it) is loaded:
    it is compiled already, and a compile flag given with it is an error; anything else compiles."""
    path = str(args.model)
    saved = path.endswith(".so") or (path.endswith(".nnc") and os.path.exists(os.path.splitext(path)[0] + ".json"))
    if saved:
        given = compile_options(args).given()
        given.pop("quiet", None)
        dims = given.pop("dims", None)  # a library with run-time dims: --dim sizes the random inputs
        if given:
            raise NncError(f"{path} is a compiled model; compile flags ({', '.join(sorted(given))}) do not apply to "
                           f"it (compile the source model with them instead)")
        cm = nnc.load(path)
        symbols = {d for t in cm.input_types.values() for d in (t.shape or ()) if isinstance(d, str)}
        if dims and not set(dims) <= symbols:
            unknown = ", ".join(sorted(set(dims) - symbols))
            raise NncError(f"{path} is a compiled model; its inputs have no dim {unknown} to size (--dim applies to a "
                           f"library with run-time dims: {', '.join(sorted(symbols))})" if symbols else
                           f"{path} is a compiled model with fixed shapes; --dim does not apply to it")
        return cm
    return nnc.compile(args.model, options=compile_options(args))


def _input_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, path


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
    count = int(np.prod(shape, dtype=object))
    if count > _RANDOM_LIMIT:
        raise InputError(f"input {name!r}: --random-inputs would make {count:,} elements ({ty} at shape {shape}); "
                         f"pass --input {name}=FILE.npy or smaller --dim sizes")
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


def _host_value(name: str, arr: np.ndarray, ty: Any, source: str, bindings: dict[str, int]) -> Any:
    """The run-time value of an input from its .npy array: the array for a tensor (or a present
    optional tensor); for a sequence, the slices along the first axis (the elements)."""
    if isinstance(ty, OptionalType):
        ty = ty.elem
    if isinstance(ty, SequenceType):
        if arr.ndim == 0:
            raise InputError(f"input {name!r} ({source}): a sequence comes from an array whose first axis "
                             f"enumerates the elements; got a 0-d array")
        items = [np.ascontiguousarray(x) for x in arr]
        for k, x in enumerate(items):
            _check_input(f"{name}[{k}]", x, ty.elem, source, dict(bindings))
        return items
    _check_input(name, arr, ty, source, bindings)
    return arr


def _random_value(name: str, ty: Any, dims: dict[str, int], rng: np.random.Generator) -> Any:
    """A random input; a sequence gets two elements, an optional is present."""
    if isinstance(ty, OptionalType):
        ty = ty.elem
    if isinstance(ty, SequenceType):
        return [_random_input(f"{name}[{k}]", ty.elem, dims, rng) for k in range(2)]
    return _random_input(name, ty, dims, rng)


def _describe(a: Any) -> str:
    if a is None:
        return "empty optional"
    if isinstance(a, list):
        kinds = sorted({str(_type_of(x)) for x in a})
        return f"sequence of {len(a)}" + (f" ({', '.join(kinds)})" if kinds else "")
    return str(_type_of(a))


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
    if args.output_dir and os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise NncError(f"--output-dir {args.output_dir}: exists and is not a folder")
    cm = _compiled(args)
    if args.profile is not None:
        cm.backend.check_profile(cm)  # refused before anything runs or prints
    write_report(args, cm.report)
    feeds: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    bindings: dict[str, int] = {}  # symbolic dims seen so far, so N must agree across inputs
    for name, path in args.input or []:
        if name in feeds:
            raise InputError(f"input {name!r} given twice")
        if name not in cm.input_types:
            raise InputError(f"the model has no input {name!r}; its inputs are {signature(cm.input_types)}")
        arr = _read_npy(name, path)
        feeds[name], sources[name] = _host_value(name, arr, cm.input_types[name], path, bindings), path
    missing = [n for n in cm.input_names if n not in feeds]
    if missing and not args.random_inputs:
        raise InputError(f"missing input(s) {', '.join(missing)}; the model takes {signature(cm.input_types)}. "
                         f"Pass --input NAME=FILE.npy (or --random-inputs)")
    rng = np.random.default_rng(args.seed)
    dims = {**dict(args.dim or []), **bindings}
    for n in missing:
        feeds[n], sources[n] = _random_value(n, cm.input_types[n], dims, rng), f"random, seed {args.seed}"
    t0 = time.perf_counter()
    outs = cm.run(feeds)
    ms = (time.perf_counter() - t0) * 1e3
    say(args, f"ran {args.model} on target {cm.target} in {ms:.1f} ms")
    for n in cm.input_names:
        say(args, f"input  {n}: {_describe(feeds[n])}  ({sources[n]})")
    files = _output_filenames(cm.output_names)
    for n in cm.output_names:
        a = outs[n]
        if not isinstance(a, np.ndarray):  # a sequence (list of arrays) or an empty optional (None)
            print(f"output {n}: {_describe(a)}")
            continue
        print(f"output {n}: {_type_of(a)}  {_summary(a)}")
        if 0 < a.size <= _VALUES_SHOWN and not args.quiet:
            text = np.array2string(a, precision=4, suppress_small=True, separator=", ")
            print("        " + text.replace("\n", "\n        "))
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        out_files: dict[str, bytes] = {}
        for f, n in zip(files, cm.output_names):
            a = outs[n]
            stem = os.path.join(args.output_dir, f[:-len(".npy")])
            if isinstance(a, list):  # one file per element: NAME.0.npy, NAME.1.npy, ...
                out_files.update({f"{stem}.{k}.npy": npy_bytes(x) for k, x in enumerate(a)})
            elif a is not None:
                out_files[stem + ".npy"] = npy_bytes(a)
        write_files(out_files)
        say(args, f"wrote {', '.join(out_files) or 'nothing (every output is empty)'}")
    if args.profile is not None:
        _profile(args, cm, feeds)
    return 0


def _profile(args: argparse.Namespace, cm: Any, feeds: dict[str, np.ndarray]) -> None:
    prof = cm.profile(feeds, runs=args.profile_runs)
    print(prof.to_table())
    if isinstance(args.profile, str):
        trace = json.dumps(prof.to_chrome_trace(), indent=1) + "\n"
        write_files({args.profile: trace.encode()})
        say(args, f"wrote {args.profile} (open it in ui.perfetto.dev or chrome://tracing)")




def add_run_command(sub: Any) -> None:
    r = sub.add_parser("run", formatter_class=Formatter, help="run a model on inputs from .npy files",
                       description="Compile MODEL (or load a saved .so/.nnc) and run it once. Inputs come from .npy "
                                   "files (numpy.save); each output is printed with its shape, dtype and "
                                   "min/max/mean, and saved as NAME.npy with --output-dir.",
                       epilog="examples:\n"
                              "  nnc run examples/mlp.onnx --input x=examples/mlp_input.npy\n"
                              "  nnc run examples/cnn.onnx --target x86 --random-inputs --dim N=1 --output-dir out/\n"
                              "  nnc run examples/cnn.onnx --target x86 --random-inputs --profile trace.json\n"
                              "  nnc run mlp.so --random-inputs")
    r.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx), nnc text IR (.nnc), .pt2, or a saved .so")
    r.add_argument("--input", "-i", action="append", type=_input_spec, metavar="NAME=FILE.npy",
                   help="an input array; repeat for each input")
    r.add_argument("--random-inputs", action="store_true",
                   help="generate the inputs not given with --input (standard normal floats, integers 0..9)")
    r.add_argument("--seed", type=int, default=0, help="seed for --random-inputs (default 0)")
    r.add_argument("--output-dir", "-o", metavar="DIR", help="write each output to DIR/NAME.npy")
    r.add_argument("--profile", nargs="?", const=True, metavar="TRACE.json",
                   help="x86: also time every kernel inside the compiled code and print them sorted by time; with "
                        "a path, write a Chrome-trace/Perfetto JSON there (docs/profiling.md)")
    r.add_argument("--profile-runs", type=positive_int, default=10, metavar="N",
                   help="runs the profile takes the median of (default 10)")
    add_compile_flags(r, "reference", mode=False,
                      dims_help="fix a symbolic input dim at compile time (and size random inputs), e.g. --dim N=1")
    r.set_defaults(fn=cmd_run)
