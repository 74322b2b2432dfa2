"""LLVM optimisation and machine-code generation: JIT into this process, or object code for AOT."""

from __future__ import annotations

import llvmlite.binding as llvm

from .executable import LoadedCode
from .runtime import SHUTDOWN, add_shutdown_destructor
from .target import TRIPLE, TargetInfo, target_machine


def optimize(ll_text: str, info: TargetInfo, opt: int = 3):
    """Parse, verify and optimise LLVM IR text; return the llvmlite ModuleRef and target machine."""
    tm = target_machine(info, opt)
    mod = llvm.parse_assembly(ll_text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pto.loop_vectorization = opt >= 2
    pto.slp_vectorization = opt >= 2
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod, tm


def add_pool_destructor(mod) -> None:
    """Code with a thread pool joins its workers when it is unloaded as a shared library (dlclose or
    exit): link in an ``llvm.global_dtors`` entry for the runtime's shutdown function. Every compile
    gets it, so the JIT and a saved library run the same object code; the JIT never runs static
    destructors (its executables join their pools when collected, ``runtime.attach``)."""
    try:
        if mod.get_function(SHUTDOWN).is_declaration:
            return  # one part of a split module (split_compile.py): the part defining it gets the entry
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


class JitModule:
    """Machine code for one LLVM module, loaded into this process: its object code linked by the
    same JIT as every compiled model (``executable.LoadedCode``)."""

    def __init__(self, mod, tm):
        self._code = LoadedCode(tm.emit_object(mod))

    def address(self, name: str) -> int:
        return self._code.address(name)


def emit_object(mod, tm) -> bytes:
    return tm.emit_object(mod)


def emit_assembly(mod, tm) -> str:
    return tm.emit_assembly(mod)
