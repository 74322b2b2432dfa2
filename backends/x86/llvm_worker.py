"""LLVM optimisation and machine-code generation, moved to a worker process in long-lived programs.

Every x86 compile turns LLVM IR text into an object file (``object_code``). Done in this process,
each compile leaves ~180 KB behind for good: llvmlite's ``create_pass_builder`` allocates LLVM
``PassInstrumentationCallbacks`` that nothing frees (llvmlite 0.50), so a server compiling models
for days would grow without bound (issue #14: 132 -> 152 MB over 90 compiles).

So the first ``IN_PROCESS_FIRST`` compiles of a process run LLVM here (a one-shot ``nnc compile``
or a script pays nothing extra), and later ones go to a worker process (``serve`` below), which is
replaced every ``RECYCLE`` compiles: this process stays flat, and the worker's growth goes back
to the system when it exits. The worker is a plain subprocess speaking length-prefixed pickles over
its stdin/stdout (not multiprocessing, which would re-import the user's ``__main__`` in the child);
starting one costs ~0.6 s, once per ``RECYCLE`` compiles. A worker that dies mid-compile is a
``TargetError``, and the next compile starts a new one. ``NNC_LLVM_WORKER=never`` keeps LLVM in
this process; ``always`` uses the worker from the first compile (tests/backends/test_llvm_worker.py).

The machine code is the same either way: the same IR, target machine and passes.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO

from nnc.ir import TargetError

from .jit import add_pool_destructor, optimize
from .target import TargetInfo

IN_PROCESS_FIRST = 8  # compiles run in this process before the worker takes over
RECYCLE = 64  # compiles per worker process before it is replaced
ENV = "NNC_LLVM_WORKER"  # "never" | "always" | unset (after the first IN_PROCESS_FIRST compiles)
_LEN = struct.Struct("<Q")

Result = tuple[bytes, "str | None", "str | None"]


def _work(text: str, cpu: str, features: str, opt: int, keep_llvm: bool) -> Result:
    """Optimise ``text`` for the target; (object code, optimised IR text, assembly), the last two
    only when ``keep_llvm``."""
    mod, tm = optimize(text, TargetInfo(cpu, features), opt)
    add_pool_destructor(mod)
    obj = tm.emit_object(mod)
    if not keep_llvm:
        return obj, None, None
    return obj, str(mod), tm.emit_assembly(mod)


def _send(f: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(_LEN.pack(len(data)) + data)
    f.flush()


def _receive(f: BinaryIO) -> Any:
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError("the LLVM worker closed its pipe")
    (n,) = _LEN.unpack(head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError("the LLVM worker's answer was cut short")
    return pickle.loads(data)  # noqa: S301 - our own child process, over a private pipe


class _Worker:
    def __init__(self) -> None:
        code = f"import sys; from {__name__} import serve; sys.exit(serve())"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.tasks = 0

    def run(self, args: tuple) -> Result:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        _send(self.proc.stdin, args)
        status, *payload = _receive(self.proc.stdout)
        self.tasks += 1
        if status == "error":
            raise TargetError(f"x86: LLVM failed: {payload[0]}")
        return tuple(payload)  # type: ignore[return-value]

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the worker's loop ends at end of input
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


_lock = threading.Lock()
_worker: _Worker | None = None
_compiles = 0


def _close() -> None:
    global _worker
    w, _worker = _worker, None
    if w is not None:
        w.close()


atexit.register(_close)


def object_code(text: str, info: TargetInfo, opt: int = 3, keep_llvm: bool = False) -> Result:
    """(object file, optimised LLVM IR or None, assembly or None) for the LLVM IR ``text``."""
    global _compiles, _worker
    mode = os.environ.get(ENV, "")
    args = (text, info.cpu, info.features, opt, keep_llvm)
    with _lock:  # one compile at a time goes to the worker; other threads wait their turn
        _compiles += 1
        if mode == "never" or (mode != "always" and _compiles <= IN_PROCESS_FIRST):
            return _work(*args)
        if _worker is None or _worker.tasks >= RECYCLE or _worker.proc.poll() is not None:
            _close()
            _worker = _Worker()
        try:
            return _worker.run(args)
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            code = _worker.proc.poll()
            _close()
            raise TargetError(f"x86: the LLVM worker process died while compiling ({e}; exit status {code}); the "
                              f"next compile starts a new one ({ENV}=never compiles in this process)") from None


def serve() -> int:
    """The worker's loop: read a task, answer, until the parent closes the pipe."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    while True:
        try:
            args = _receive(inp)
        except EOFError:
            return 0
        try:
            _send(out, ("ok", *_work(*args)))
        except Exception as e:  # noqa: BLE001 - LLVM's errors go back to the parent as its TargetError
            _send(out, ("error", f"{type(e).__name__}: {e}"))
