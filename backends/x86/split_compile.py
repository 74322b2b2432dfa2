"""Compiling one model's LLVM module on every core: split it into parts, optimise and emit each part
in its own process, and keep the objects together as one archive.

LLVM optimises and emits a module on one thread, and for a big model (ResNet-50, a BERT encoder)
that is most of a cold compile. But the module is mostly independent pieces: the entry point calls
one kernel per op, and a kernel, its outlined ``parallel_for`` tasks and its microkernels are
called from nowhere else. ``split`` cuts the LLVM IR *text* (whatever the code generator made of it)
into ``parts`` modules along those lines:

- part 0 holds the entry point, every function that is not internal, and every mutable global (the
  weights pointer, the thread pool's state), so there is one copy of each piece of state;
- each kernel, with the internal functions and constants only it reaches, goes whole to one part
  (largest first, into the least loaded part; the text's length stands in for LLVM's work);
- an internal function or constant several parts reach (vector math, the thread pool's code) is
  copied into each of them and stays internal: each kernel is optimised with the same helper bodies
  it would see in the whole module;
- a symbol defined in one part and used from another loses ``internal`` for ``hidden`` (never
  exported from a library) and is declared where it is used with default visibility, so that the
  using part reaches it through the GOT at any distance: the JIT may map each part on its own,
  more than 2 GiB from the others (``_declaration``).

Every function body is the text of the whole module, so each kernel is optimised from the same IR:
the outputs are bit-identical to a one-module compile (tests/backends/test_split_compile.py). What
changes is that kernels are no longer inlined into the entry point, which costs a call per kernel.

The parts' objects travel together as one ``ar`` archive (``pack``); ``members`` gives them back.
The compilation cache stores the archive as it stores a single object, the JIT links the members
into one JIT library (``executable.LoadedCode``), and ``aot.write_library`` links them into the
library, so every consumer runs the same machine code. A module is split only when it is large
enough (``SPLIT_MIN_BYTES`` of IR text) and there is more than one core to use;
``NNC_COMPILE_JOBS`` sets the number of parts (1: never split).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kernel_cache import KernelCache
    from .llvm_worker import Result
    from .target import TargetInfo

SPLIT_MIN_BYTES = 1 << 20  # ~1 s of LLVM work on one core: below this one process is as fast
JOBS_ENV = "NNC_COMPILE_JOBS"
_REF = re.compile(r'@"((?:[^"\\]|\\.)*)"|@([-a-zA-Z$._][-a-zA-Z$._0-9]*)')
_LINKAGE = frozenset({"internal", "private", "external", "hidden", "default", "protected", "dso_local",
                      "dso_preemptable", "unnamed_addr", "local_unnamed_addr"})
_LOCAL = frozenset({"internal", "private"})


MAX_JOBS = 8  # default cap: each part is a process (~60 MB), and parts past 8 gain little


def jobs() -> int:
    """How many parts a big module is split into: ``$NNC_COMPILE_JOBS``, else the usable cores (at
    most ``MAX_JOBS``)."""
    value = os.environ.get(JOBS_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_JOBS))


@dataclass
class Item:
    """One top-level entity of the module text."""

    kind: str  # "define" | "declare" | "global" | "common" (header, types, metadata: in every part)
    text: str
    name: str = ""
    refs: set[str] = field(default_factory=set)
    local: bool = False  # internal/private linkage
    constant: bool = False  # a global that is never written (may be copied)


def _name_at(s: str, at: int) -> tuple[str, int]:
    """The symbol name starting at ``s[at] == '@'`` and the index after it."""
    m = _REF.match(s, at)
    if m is None:
        raise ValueError(f"no symbol name at {s[at:at + 40]!r}")
    return (m.group(1) if m.group(1) is not None else m.group(2)), m.end()


def _refs(text: str, own: str) -> set[str]:
    names = {a if a else b for a, b in _REF.findall(text)}
    names.discard(own)
    return names


def parse(text: str) -> list[Item]:
    """The module text as a list of items, in order."""
    items: list[Item] = []
    pos, n = 0, len(text)
    while pos < n:
        eol = text.find("\n", pos)
        eol = n if eol < 0 else eol
        line = text[pos:eol]
        if line.startswith("define "):
            end = text.find("\n}\n", eol)
            end = n if end < 0 else end + 3
            body = text[pos:end]
            name, _ = _name_at(line, line.index("@"))
            words = line[len("define "):line.index("@")].split()
            items.append(Item("define", body, name, _refs(body, name), local=bool(_LOCAL & set(words))))
            pos = end
            continue
        if line.startswith("declare "):
            name, _ = _name_at(line, line.index("@"))
            items.append(Item("declare", line + "\n", name))
        elif line.startswith("@"):
            name, after = _name_at(line, 0)
            words = line[after:].split("=", 1)[1].split()
            kind = next((w for w in words if w in ("global", "constant")), "global")
            items.append(Item("global", line + "\n", name, _refs(line, name), local=bool(_LOCAL & set(words)),
                              constant=kind == "constant"))
        elif line.strip():
            items.append(Item("common", line + "\n"))
        pos = eol + 1
    return items


def _scan_type(s: str, at: int) -> int:
    """The index just after the LLVM type starting at ``s[at]`` (brackets balanced)."""
    while s[at] == " ":
        at += 1
    depth = 0
    i = at
    while i < len(s):
        c = s[i]
        if c in "[<{(":
            depth += 1
        elif c in "]>})":
            depth -= 1
        elif c in " ," and depth == 0:
            break
        i += 1
    while i < len(s) and s[i] == "*":
        i += 1
    return i


def _exported(item: Item) -> str:
    """``item``'s definition with internal linkage turned into hidden visibility."""
    if not item.local:
        return item.text
    if item.kind == "define":
        return re.sub(r"^define((?: [a-z_]+)*?) (?:internal|private) ", r"define\1 hidden ", item.text, count=1)
    return re.sub(r"= ((?:[a-z_]+ )*?)(?:internal|private) ", r"= \1hidden ", item.text, count=1)


def _declaration(item: Item) -> str:
    """A declaration of ``item`` (defined in another part) for a part that uses it.

    Always with default visibility, never ``hidden`` (which makes the symbol ``dso_local``): the
    parts' objects are linked by the JIT, which may map each one on its own, anywhere in the address
    space. A ``dso_local`` symbol is reached with a 32-bit PC-relative displacement, which
    overflows when two parts land more than 2 GiB apart (LLVM asserts in
    ``resolveX86_64Relocation`` and the process aborts: seen in a long test process that had
    loaded hundreds of models). A preemptible declaration is reached through the GOT (data and
    taken addresses; calls too, being ``nonlazybind``), which the JIT linker builds inside the using
    part's own mapping. The definition stays ``hidden``, so a library still exports nothing more, and the
    static linker relaxes those GOT loads back to direct ones (all parts are in one ``.so``)."""
    if item.kind == "define":
        header = item.text[:item.text.index("\n")]
        at = header.index("@")
        words = [w for w in header[len("define "):at].split() if w not in _LINKAGE]
        # the attribute group list after the parameters is dropped: nonlazybind is all it needs
        params_end = _matching_paren(header, header.index("(", at))
        return f"declare {' '.join(words)} {header[at:params_end + 1]} nonlazybind\n"
    line = item.text.rstrip("\n")
    _, after = _name_at(line, 0)
    rhs = line[after:].split("=", 1)[1]
    m = re.search(r"\b(global|constant) ", rhs)
    assert m is not None, line
    end = _scan_type(rhs, m.end())
    align = re.search(r", align \d+", rhs[end:])
    return f"@{_quote(item.name)} = external {m.group(1)} {rhs[m.end():end].strip()}" \
           f"{align.group(0) if align else ''}\n"


def _matching_paren(text: str, start: int) -> int:
    """The index of the ``)`` closing the ``(`` at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in {text!r}")


def _quote(name: str) -> str:
    return f'"{name}"'


@dataclass
class Kernels:
    """The module's items, and its kernels: the internal functions the entry point calls."""

    items: list[Item]
    defs: dict[str, Item]
    names: list[str]
    shareable: set[str]  # internal functions and constants: may be copied into several parts

    @classmethod
    def of(cls, text: str, entry: str) -> Kernels | None:
        items = parse(text)
        defs = {it.name: it for it in items if it.kind in ("define", "global")}
        root = defs.get(entry)
        if root is None or root.kind != "define":
            return None
        kernels = [n for n in sorted(root.refs) if n in defs and defs[n].kind == "define" and defs[n].local]
        shareable = {n for n, it in defs.items() if it.local and (it.kind == "define" or it.constant)}
        return cls(items, defs, kernels, shareable)

    def reach(self, start: str) -> set[str]:
        """What ``start`` reaches through functions and constants it could own (not other kernels)."""
        kernel_set = set(self.names)
        seen, todo = {start}, [start]
        while todo:
            for r in self.defs[todo.pop()].refs:
                if r in self.shareable and r not in seen and r not in kernel_set:
                    seen.add(r)
                    todo.append(r)
        return seen


def split(text: str, parts: int, entry: str) -> list[str] | None:
    """The module ``text`` as up to ``parts`` module texts whose objects, linked together, are the
    whole module; None when it cannot be split usefully (fewer than two kernels, no ``entry``)."""
    if parts < 2:
        return None
    layout = Kernels.of(text, entry)
    if layout is None or len(layout.names) < 2:
        return None
    items, defs, kernels, shareable, kernel_set, reach = (layout.items, layout.defs, layout.names, layout.shareable,
                                                          set(layout.names), layout.reach)
    owned = {k: reach(k) for k in kernels}
    cost = {n: len(it.text) for n, it in defs.items()}
    # part 0: the entry point, the state, the non-internal functions, and what they reach
    single = {n for n in defs if n not in shareable} | kernel_set  # defined in exactly one part
    members: list[set[str]] = [set() for _ in range(parts)]
    for n in single - kernel_set:
        members[0] |= reach(n)
    load = [sum(cost[n] for n in members[0])] + [0] * (parts - 1)
    for k in sorted(kernels, key=lambda k: (-sum(cost[n] for n in owned[k]), k)):
        p = min(range(parts), key=lambda i: (load[i], i))
        load[p] += sum(cost[n] for n in owned[k] - members[p])
        members[p] |= owned[k]
    members = [m for m in members if m]
    if len(members) < 2:
        return None
    home = {n: p for p, m in enumerate(members) for n in m if n in single}
    used = [set().union(*(defs[n].refs for n in m)) for m in members]
    exported = {n for n, p in home.items() if any(n in u for q, u in enumerate(used) if q != p)}
    return [_part_text(items, defs, m, u, exported) for m, u in zip(members, used)]


def _part_text(items: list[Item], defs: dict[str, Item], member: set[str], used: set[str],
               exported: set[str]) -> str:
    """One part: the shared header and metadata, its definitions (those used elsewhere exported),
    and declarations of what it uses from other parts and from outside."""
    out: list[str] = []
    for it in items:
        if it.kind == "common":
            out.append(it.text)
        elif it.kind == "declare":
            if it.name in used:
                out.append(it.text)
        elif it.name in member:
            out.append(_exported(it) if it.name in exported else it.text)
        elif it.name in used:
            out.append(_declaration(it))
    return "".join(out)


# -- the parts' objects as one archive ---------------------------------------------------------
_AR_MAGIC = b"!<arch>\n"


def _ar_header(name: str, size: int) -> bytes:
    return b"%-16s%-12d%-6d%-6d%-8s%-10d`\n" % (name.encode(), 0, 0, 0, b"644", size)


def _even(data: bytes) -> bytes:
    return data + b"\n" if len(data) % 2 else data


def pack(objects: list[bytes]) -> bytes:
    """Object files as one ``ar`` archive (members ``part0.o``, ``part1.o``... after a GNU symbol
    index, so ``ld`` links it as it is: ``nnc compile --emit obj`` gives it); a single object is
    returned as it is."""
    if len(objects) == 1:
        return objects[0]
    from .executable import defined_symbols  # the ELF reader; it imports this module

    symbols = [(i, name) for i, obj in enumerate(objects) for name in sorted(defined_symbols(obj))]
    names = b"".join(name.encode() + b"\0" for _, name in symbols)
    index_size = 4 + 4 * len(symbols) + len(names)
    offsets, pos = [], len(_AR_MAGIC) + 60 + index_size + index_size % 2
    for obj in objects:
        offsets.append(pos)
        pos += 60 + len(obj) + len(obj) % 2
    index = len(symbols).to_bytes(4, "big") + b"".join(offsets[i].to_bytes(4, "big") for i, _ in symbols) + names
    out = [_AR_MAGIC, _ar_header("/", len(index)), _even(index)]
    for i, obj in enumerate(objects):
        out += [_ar_header(f"part{i}.o/", len(obj)), _even(obj)]
    return b"".join(out)


def members(code: bytes) -> list[bytes]:
    """The object files of ``code``: the members of an archive ``pack`` made, or ``[code]``."""
    data = bytes(code)
    if not data.startswith(_AR_MAGIC):
        return [data]
    out, pos = [], len(_AR_MAGIC)
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise ValueError("a damaged archive member header")
        size = int(header[48:58].decode().strip())
        pos += 60
        if not header.startswith(b"/"):  # "/": the symbol index, "//": long names
            out.append(data[pos:pos + size])
        pos += size + (size % 2)
    return out


# -- the driver's entry points ----------------------------------------------------------------
PRESTART_MIN_OPS = 24  # a graph this big usually makes more than SPLIT_MIN_BYTES of IR


def start_early(op_count: int) -> None:
    """Before code generation: start the worker processes a split compile of a graph of
    ``op_count`` ops would use, so their start-up (~0.5 s) overlaps code generation."""
    n = jobs()
    if n > 1 and op_count >= PRESTART_MIN_OPS:
        from .llvm_worker import start_workers

        start_workers(n)


def machine_code(text: str, info: TargetInfo, opt: int, keep_llvm: bool, entry: str,
                 kernels: KernelCache | None = None, counts: dict[str, int] | None = None) -> Result:
    """(object code, optimised IR, assembly) of the module ``text``, the way ``llvm_worker.object_code``
    gives them, but split over the cores when the module is big: the object code is then an
    archive of the parts' objects (``pack``). ``keep_llvm`` compiles one module (the IR and
    assembly it shows are of one module). With a kernel cache (``kernel_cache.py``) the module is
    cut into one part per kernel, and the kernels found in the cache are not compiled again;
    ``counts`` gets how many kernel objects came from the cache and how many were compiled."""
    from .llvm_worker import object_code, object_codes

    if kernels is not None and not keep_llvm:
        obj = _with_kernel_cache(text, info, opt, entry, kernels, counts if counts is not None else {})
        if obj is not None:
            return obj, None, None
    n = jobs()
    parts = None if keep_llvm or n < 2 or len(text) < SPLIT_MIN_BYTES else split(text, n, entry)
    if parts is None:
        return object_code(text, info, opt, keep_llvm)
    return pack(object_codes(parts, info, opt)), None, None


def _with_kernel_cache(text: str, info: TargetInfo, opt: int, entry: str, kernels: KernelCache,
                       counts: dict[str, int]) -> bytes | None:
    from .kernel_cache import split_kernels
    from .llvm_worker import object_code, object_codes

    pieces = split_kernels(text, entry)
    if pieces is None:
        return None
    part0, parts = pieces
    keys = [kernels.key(t, info, opt) for _, t in parts]
    objects = [kernels.get(k) for k in keys]
    missing = [i for i, o in enumerate(objects) if o is None]
    texts = [part0] + [parts[i][1] for i in missing]
    n = min(jobs(), len(texts))
    if n < 2 or sum(map(len, texts)) < SPLIT_MIN_BYTES:
        compiled = object_code(texts, info, opt)[0]  # type: ignore[arg-type]
    else:  # the parts over n processes, largest first into the least loaded
        groups: list[list[int]] = [[] for _ in range(n)]
        load = [0] * n
        for i in sorted(range(len(texts)), key=lambda i: -len(texts[i])):
            g = min(range(n), key=lambda g: (load[g], g))
            groups[g].append(i)
            load[g] += len(texts[i])
        groups = [g for g in groups if g]
        answers = object_codes([[texts[i] for i in g] for g in groups], info, opt)
        compiled = [b""] * len(texts)
        for g, objs in zip(groups, answers):
            for i, o in zip(g, objs):
                compiled[i] = o
    for i, obj in zip(missing, compiled[1:]):
        objects[i] = obj
        kernels.put(keys[i], obj, parts[i][0])
    counts["from_cache"] = len(parts) - len(missing)
    counts["compiled"] = len(missing)
    return pack([compiled[0], *objects])  # type: ignore[list-item]
