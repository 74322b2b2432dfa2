"""The per-machine kernel cache: object code of single kernels, shared by every model compiled here.

Two models that share a layer shape (the same 3x3 conv over 64 channels at 56x56, the same GEMM)
generate the same kernel: the same LLVM IR once the names that depend on where the kernel sits in
the model are taken out. ``split_kernels`` cuts the module text (as ``split_compile.split`` does)
into part 0 (the entry point, the mutable state, everything that is not a kernel) and one module
per distinct kernel, holding the kernel, its tasks and microkernels, copies of the internal helpers
it calls (vector math; the thread pool's code stays in part 0 and is called), and declarations of
the rest. Each kernel part is made canonical, so it is the same
text in every model that has that kernel:

- the kernel and what it owns (``k12_fused``, ``k12_fused.micro1``...) are renamed after a hash of
  the part's own text (``nnck.<hash>``, ``nnck.<hash>.micro1``), and part 0 calls the new names;
- the helpers it copies and the declarations are sorted by name (their order in the module
  depends on which kernel happened to create them first);
- its metadata nodes (``!7``...) are renumbered in order of first use.

``KernelCache`` keys each part on its text, the target (CPU name and features), the LLVM
optimisation level and ``cache.code_fingerprint()``; the object file of a part found there is
used as it is, and only the missing parts and part 0 go to LLVM (``split_compile.machine_code``).
The objects are then one archive (``split_compile.pack``), exactly like a split compile's, so the
model's own cache entry, the JIT and ``save`` see no difference. Entries are files in
``<x86 cache>/kernels`` with the trust rules of ``cache.CompileCache`` (signed with a per-user
key, private folders, unusable when someone else could write them) and its size bound.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import TYPE_CHECKING

from .cache import CompileCache, Entry, code_fingerprint
from .split_compile import Item, Kernels, _declaration, _exported, _part_text

if TYPE_CHECKING:
    from .target import TargetInfo

KERNEL_PREFIX = "nnck."
_RUNTIME = ("nnc_pool.", "nnc_parallel_")  # runtime.py's thread pool
_META_DEF = re.compile(r"^!(\d+) = (.*)$", re.S)
_META_REF = re.compile(r"!(\d+)")
_STRING = re.compile(r'x i8\] c"')


def _renumber(body: str, meta: dict[int, str]) -> str:
    """``body`` followed by the metadata nodes it uses (transitively), numbered from 0 in order of
    first use."""
    order: dict[int, int] = {}
    todo = [body]
    while todo:
        text = todo.pop(0)
        for m in _META_REF.finditer(text):
            n = int(m.group(1))
            if n not in order and n in meta:
                order[n] = len(order)
                todo.append(meta[n])

    def sub(m: re.Match) -> str:
        n = int(m.group(1))
        return f"!{order[n]}" if n in order else m.group(0)

    defs = "".join(f"!{order[n]} = {_META_REF.sub(sub, meta[n])}\n" for n in sorted(order, key=order.get))
    return _META_REF.sub(sub, body) + defs


def _rename(text: str, names: dict[str, str]) -> str:
    """``text`` with the quoted symbols ``@"old"`` and ``@"old.<suffix>"`` of ``names`` renamed."""
    if not names:
        return text
    pattern = re.compile(r'@"(' + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) +
                         r')((?:\.[^"]*)?)"')
    return pattern.sub(lambda m: f'@"{names[m.group(1)]}{m.group(2)}"', text)


def split_kernels(text: str, entry: str) -> tuple[str, list[tuple[str, str]]] | None:
    """(part 0, [(kernel name, canonical kernel part)]) of the module ``text``, or None when it has
    no kernel or a kernel's symbols are not all quoted (then it is compiled as one module)."""
    if _STRING.search(text):  # a string constant might hold "!7": _renumber would rewrite it
        return None
    layout = Kernels.of(text, entry)
    if layout is None or not layout.names:
        return None
    # the thread pool's code is defined once, in part 0, and called from the kernels: copied into
    # every kernel it was ~10% more LLVM input (and its O3 work) per kernel, and calling it costs
    # one call per kernel run
    layout.shareable -= {n for n in layout.shareable if n.startswith(_RUNTIME)}
    items, defs, kernels, shareable, reach = layout.items, layout.defs, layout.names, layout.shareable, layout.reach
    kernel_set = set(kernels)

    meta: dict[int, str] = {}
    common: list[str] = []
    for it in items:
        if it.kind == "common":
            m = _META_DEF.match(it.text)
            if m:
                meta[int(m.group(1))] = m.group(2).rstrip("\n")
            elif not it.text.startswith("; ModuleID"):  # the model's name: not part of a kernel
                common.append(it.text)
    declares = {it.name: it for it in items if it.kind == "declare"}
    head = "".join(common)
    owned = {k: reach(k) for k in kernels}
    # a kernel's own items: its name or its name and a dot (codegen names tasks and tables so)
    own = {k: [n for n in owned[k] if n == k or n.startswith(k + ".")] for k in kernels}
    single = {n for n in defs if n not in shareable} | kernel_set
    part0: set[str] = set()
    for n in single - kernel_set:
        part0 |= reach(n)
    exported = set()  # part 0's definitions the kernel parts use
    renames: dict[str, str] = {}
    bodies: list[tuple[str, str]] = []
    order = {n: i for i, n in enumerate(defs)}
    for k in kernels:
        if f'@"{k}"' not in defs[k].text:
            return None  # an unquoted name: _rename would miss it
        members = owned[k]
        used = set().union(*(defs[n].refs for n in members)) - members
        exported |= {n for n in used if n in part0}
        body = head + _kernel_body(k, members, set(own[k]), used, defs, declares, order)
        digest = hashlib.sha256(_renumber(_rename(body, {k: KERNEL_PREFIX + "KERNEL"}), meta).encode()).hexdigest()
        renames[k] = KERNEL_PREFIX + digest[:24]
        bodies.append((k, body))
    out: dict[str, str] = {}  # two kernels the code generator kept apart may be one text here: one part
    for k, body in bodies:
        if renames[k] not in out:
            out[renames[k]] = _renumber(_rename(body, {k: renames[k]}), meta)
    used0 = set().union(*(defs[n].refs for n in part0)) if part0 else set()
    zero = _rename(_part_text(items, defs, part0, used0, exported), renames).splitlines(keepends=True)
    seen: set[str] = set()  # kernels renamed alike are declared once
    zero = [ln for ln in zero if not ln.startswith("declare") or not (ln in seen or seen.add(ln))]
    return "".join(zero), list(out.items())


def _kernel_body(k: str, members: set[str], own: set[str], used: set[str], defs: dict[str, Item],
                 declares: dict[str, Item], order: dict[str, int]) -> str:
    """The kernel part without its header and metadata: declarations and copied helpers sorted by
    name (their place in the module depends on other kernels), then the kernel's own items in the
    order the code generator made them."""
    lines = [declares[n].text for n in sorted(used) if n in declares]
    lines += [_declaration(defs[n]) for n in sorted(used) if n in defs]
    lines += [defs[n].text for n in sorted(members - own)]
    for n in sorted(own, key=lambda n: (n != k, order[n])):
        lines.append(_exported(defs[n]) if n == k else defs[n].text)  # part 0 calls the kernel
    return "".join(lines)


class KernelCache:
    """Kernel objects on disk, keyed by part text, target, optimisation level and nnc's code."""

    def __init__(self, model_cache: CompileCache):
        # signed with the model cache's key, in a folder below it that must be ours as well
        self.store = CompileCache(os.path.join(model_cache.dir, "kernels"), model_cache.max_bytes, signer=model_cache)

    @staticmethod
    def key(text: str, info: TargetInfo, opt: int) -> str:
        h = hashlib.sha256(f"kernel\0{code_fingerprint()}\0{info.key()}\0O{opt}\0".encode())
        h.update(text.encode())
        return h.hexdigest()

    def get(self, key: str) -> bytes | None:
        entry, _ = self.store.get(key)
        return None if entry is None else entry.object_code

    def put(self, key: str, obj: bytes, name: str) -> None:
        self.store.put(key, Entry(obj, b"", {"kernel": name}))
