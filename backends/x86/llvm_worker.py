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

A big module split into parts (``split_compile.py``) is compiled by ``object_codes``: one part in
this process when a one-module compile would run here, each other part in a worker of its own, all
at the same time. The driver starts those workers (``start_workers``) before code generation, so
their start-up overlaps it; they are recycled like the first one.

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


def _work(text: str | list[str], cpu: str, features: str, opt: int, keep_llvm: bool) -> Any:
    """Optimise ``text`` for the target; (object code, optimised IR text, assembly), the last two
    only when ``keep_llvm``. A list of texts (separate modules, the kernel cache's parts) gives
    (their object codes, None, None)."""
    if isinstance(text, list):
        return [_work(t, cpu, features, opt, False)[0] for t in text], None, None
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

    def usable(self) -> bool:
        return self.tasks < RECYCLE and self.proc.poll() is None

    def send(self, args: tuple) -> None:
        assert self.proc.stdin is not None
        _send(self.proc.stdin, args)

    def receive(self) -> Result:
        assert self.proc.stdout is not None
        status, *payload = _receive(self.proc.stdout)
        self.tasks += 1
        if status == "error":
            raise TargetError(f"x86: LLVM failed: {payload[0]}")
        return tuple(payload)  # type: ignore[return-value]

    def run(self, args: tuple) -> Result:
        self.send(args)
        return self.receive()

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the worker's loop ends at end of input
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


_lock = threading.Lock()
_worker: _Worker | None = None  # the worker of one-module compiles
_extra: list[_Worker] = []  # more workers, for the parts of a split compile (split_compile.py)
_compiles = 0


def _close() -> None:
    global _worker
    w, _worker = _worker, None
    if w is not None:
        w.close()
    while _extra:
        _extra.pop().close()


atexit.register(_close)


def _workers(n: int) -> list[_Worker]:
    """``n`` live workers (the first is ``_worker``), starting the missing ones; a worker that has
    served ``RECYCLE`` tasks or died is replaced. Starting one does not wait for it to be ready."""
    global _worker
    if n <= 0:
        return []
    if _worker is None or not _worker.usable():
        if _worker is not None:
            _worker.close()
        _worker = _Worker()
    for i, w in enumerate(_extra):
        if not w.usable():
            w.close()
            _extra[i] = _Worker()
    while len(_extra) < n - 1:
        _extra.append(_Worker())
    return [_worker, *_extra[:n - 1]]


def _in_process() -> bool:
    mode = os.environ.get(ENV, "")
    return mode == "never" or (mode != "always" and _compiles <= IN_PROCESS_FIRST)


def start_workers(n: int) -> None:
    """Start the worker processes a compile split in ``n`` parts will use (those missing), without
    waiting: the driver calls it before code generation, so their start-up overlaps it."""
    with _lock:
        mode = os.environ.get(ENV, "")
        if mode != "never":
            here = mode != "always" and _compiles + 1 <= IN_PROCESS_FIRST  # where the next compile's part 0 runs
            _workers(n - (1 if here else 0))


def _died(e: Exception) -> TargetError:
    code = _worker.proc.poll() if _worker is not None else None
    _close()
    return TargetError(f"x86: the LLVM worker process died while compiling ({e}; exit status {code}); the "
                       f"next compile starts a new one ({ENV}=never compiles in this process)")


def object_code(text: str, info: TargetInfo, opt: int = 3, keep_llvm: bool = False) -> Result:
    """(object file, optimised LLVM IR or None, assembly or None) for the LLVM IR ``text``."""
    global _compiles
    args = (text, info.cpu, info.features, opt, keep_llvm)
    with _lock:  # one compile at a time goes to the worker; other threads wait their turn
        _compiles += 1
        if _in_process():
            return _work(*args)
        worker = _workers(1)[0]
        try:
            return worker.run(args)
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            raise _died(e) from None


def object_codes(texts: list[Any], info: TargetInfo, opt: int = 3) -> list[Any]:
    """The object files of several LLVM IR module texts (the parts of one split module), compiled
    at the same time: one in this process when a one-module compile would run here, the others
    each in a worker process. Counts as one compile for ``IN_PROCESS_FIRST``. An item may be a list
    of module texts, compiled one after the other by one process: its answer is their objects."""
    global _compiles
    with _lock:
        _compiles += 1
        if os.environ.get(ENV, "") == "never":
            return [_work(t, info.cpu, info.features, opt, False)[0] for t in texts]
        local = _in_process()
        remote = texts[1:] if local else texts
        pending = _workers(len(remote))
        try:
            for w, t in zip(pending, remote):
                w.send((t, info.cpu, info.features, opt, False))
            here = [_work(texts[0], info.cpu, info.features, opt, False)[0]] if local else []
            answers, failure = [], None
            for w in list(pending):
                try:
                    answers.append(w.receive()[0])
                except TargetError as e:  # an LLVM error: the other answers are still read
                    failure = failure or e
                pending.remove(w)
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            raise _died(e) from None
        finally:
            if pending:  # an answer was never read: those workers are out of step, replace them
                _close()
        if failure is not None:
            raise failure
        return here + answers


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
