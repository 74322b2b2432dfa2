"""The x86 backend: every op lowered to LLVM IR through llvmlite, compiled for the host CPU name and
feature list, and run through one native entry point over a planned arena.

``compile(module, options)`` prepares the graph (freeze, fold constants, remove dead code), plans
memory, generates and optimises LLVM IR, and returns an ``X86Executable``. Options: ``cpu``,
``target_features``, ``opt`` (LLVM level, default 3).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from nnc.ir import Module, TargetError, verify_module
from nnc.passes import PassManager

from .codegen import ENTRY, CodeGen
from .executable import X86Executable
from .jit import JitModule, optimize
from .storage import assign_storage
from .target import resolve

PREPARE = "freeze,fold-constants,fold-dynamic,dce"


def prepare(module: Module) -> Module:
    # copy the graph, share the (large, read-only) constant arrays
    m = copy.deepcopy(module, memo={id(a): a for a in module.constants.values()})
    PassManager(PREPARE).run(m)
    g = m.main
    for v in list(g.params) + [r for op in g.ops for r in op.results]:
        if not v.type.is_static:
            raise TargetError(f"x86: %{v.name} has a dynamic type {v.type}; compile with static input shapes")
    return m


def generate(module: Module, options: Mapping[str, Any] | None = None):
    """The prepared module, its storage map, the target and the LLVM IR text."""
    options = dict(options or {})
    info = resolve(options.get("cpu"), options.get("target_features"))
    m = prepare(module)
    storage = assign_storage(m, m.main)
    ll = CodeGen(m, m.main, storage, info).emit()
    return m, storage, info, str(ll)


def compile(module: Module, options: Mapping[str, Any] | None = None) -> X86Executable:  # noqa: A001
    options = dict(options or {})
    verify_module(module)
    m, storage, info, text = generate(module, options)
    mod, tm = optimize(text, info, int(options.get("opt", 3)))
    jit = JitModule(mod, tm)
    return X86Executable(m, m.main, storage, jit.address(ENTRY), jit)
