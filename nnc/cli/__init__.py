"""The ``nnc`` command line: ``compile``, ``run``, ``bench``, ``dump``, ``memory``, ``train``,
``generate``, ``asic-report``, ``asic-sweep``, ``tune`` and ``ops``, each a thin layer over the Python API
(``nnc.compile``, ``save``, ``nnc.load``, ``nnc.generate``). Each command is a module of this
package that depends only on ``common``.

Errors nnc raises on purpose (``NncError``) and failures to write an output (``OSError``) become one
line on stderr, ``nnc: error: <message>``, and exit status 1; argparse usage errors exit 2. Outputs
are written all-or-nothing, so an interrupted or failed command never leaves a half-written file.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from nnc.backends.artifact import nnc_version
from nnc.ir import NncError

from .asic_cmd import add_asic_command
from .bench_cmd import add_bench_command
from .common import PROG, Formatter, write_files
from .compile_cmd import add_compile_command
from .generate_cmd import add_generate_command
from .ops_cmd import add_ops_command, converter_table, function_expanded_ops
from .run_cmd import add_run_command
from .sweep_cmd import add_sweep_command
from .train_cmd import add_train_command
from .tune_cmd import add_tune_command
from .views import add_view_commands

__all__ = ["build_parser", "converter_table", "function_expanded_ops", "main", "write_files"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=Formatter,
        description="nnc: a neural-network compiler. Models are ONNX files (.onnx), nnc text IR (.nnc) or "
                    "torch.export programs (.pt2).",
        epilog="examples:\n"
               "  nnc run examples/mlp.onnx --input x=examples/mlp_input.npy\n"
               "  nnc compile examples/mlp.onnx --target x86 -o mlp.so\n"
               "  nnc dump examples/cnn.onnx\n"
               "  nnc bench examples/cnn.onnx -O3 --compare -O0\n"
               "  nnc ops\n\n"
               "Run 'nnc COMMAND --help' for a command's options.")
    p.add_argument("--version", action="version", version=f"{PROG} {nnc_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    add_compile_command(sub)
    add_run_command(sub)
    add_view_commands(sub)
    add_bench_command(sub)
    add_train_command(sub)
    add_generate_command(sub)
    add_asic_command(sub)
    add_sweep_command(sub)
    add_tune_command(sub)
    add_ops_command(sub)
    return p


def _one_line(msg: str) -> str:
    lines = [s.strip() for s in str(msg).splitlines() if s.strip()]
    if not lines:
        return "unknown error"
    return lines[0] + (f" (near: {' '.join(lines[1:])})" if len(lines) > 1 else "")


def _glue_compare(argv: list[str]) -> list[str]:
    """``--compare -O0``: argparse would take ``-O0`` for a flag of its own; make it ``--compare=-O0``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--compare" and i + 1 < len(argv):
            out.append(f"--compare={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = _glue_compare(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[argv.index(args.command) + 1:] if args.command in argv else []
    try:
        status = args.fn(args)
        sys.stdout.flush()  # so a closed pipe (nnc ops | head) surfaces here, not at exit
        return status
    except BrokenPipeError:
        # the reader went away (nnc ops | head): what it read is all it wanted, so that is success;
        # keep Python from complaining about the closed pipe while exiting
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
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
