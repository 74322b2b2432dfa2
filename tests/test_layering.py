"""The layers' arrows point down (ARCHITECTURE.md section 1), and the driver has no import circle.

Every import in the source (module level or inside a function: a late import is still a
dependency) is read with ``ast``:

- ``ir/`` imports nothing from frontends, passes, backends or the driver;
- ``frontends/`` nothing from passes, backends or the driver; ``passes/`` nothing from backends or
  the driver; ``backends/`` nothing from the driver (``nnc.api``, ``nnc.cli``, ``nnc.training``,
  ``nnc.loading``..., or the ``nnc`` package itself);
- the driver's modules (``nnc/``) form no import cycle (networkx finds one if there is).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"ir": "ir", "frontends": "frontends", "passes": "passes", "backends": "backends"}
SUBPACKAGES = set(LAYERS)
# what each layer may not import (subpackages of nnc), "driver" meaning any nnc.<module> of nnc/
FORBIDDEN = {"ir": {"frontends", "passes", "backends", "driver"}, "frontends": {"passes", "backends", "driver"},
             "passes": {"backends", "driver"}, "backends": {"driver"}}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["nnc"] + (parts[1:] if parts[0] == "nnc" else parts))


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of the modules a file imports (relative imports resolved), with line numbers."""
    tree = ast.parse(path.read_text(), str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
            # `from nnc import api` / `from . import training`: the names may be modules themselves
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names]
    return out


def _kind(name: str) -> str | None:
    """Which layer an absolute module name belongs to: a subpackage, "driver", or None (not nnc)."""
    parts = name.split(".")
    if parts[0] != "nnc":
        return None
    if len(parts) == 1:
        return "driver"  # the nnc package itself: its __init__ imports the API
    return parts[1] if parts[1] in SUBPACKAGES else "driver"


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("layer", list(LAYERS))
def test_no_import_points_up_the_layers(layer: str) -> None:
    bad = []
    for path in _sources(layer):
        for name, line in _imports(path):
            if _kind(name) in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    assert not bad, "\n".join(bad)


def test_no_backend_imports_the_driver_modules_named_by_the_issue() -> None:
    """The three modules issue #11 names, checked by name as well (a rename must not hide one)."""
    for layer in LAYERS:
        for path in _sources(layer):
            for name, line in _imports(path):
                assert not name.startswith(("nnc.api", "nnc.cli", "nnc.training")), \
                    f"{path.relative_to(ROOT)}:{line}: imports {name}"


def test_driver_modules_form_no_import_cycle() -> None:
    g = nx.DiGraph()
    driver = {_module_name(p): p for p in _sources("nnc")}
    for me, path in driver.items():
        g.add_node(me)
        for name, _ in _imports(path):
            # the longest prefix of the imported name that is a driver module
            parts = name.split(".")
            target = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in driver),
                          None)
            if target and target != me and _kind(name) == "driver":
                g.add_edge(me, target)
    assert "nnc.training" not in nx.descendants(g, "nnc.training") and "nnc.api" not in nx.descendants(g, "nnc.api")
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles among nnc/ modules: {cycles}"
    # the CLI's commands depend on the shared module, not on each other
    commands = [m for m in driver if m.startswith("nnc.cli.") and m.endswith(("_cmd", ".views"))]
    assert len(commands) >= 6
    for a in commands:
        for b in commands:
            assert a == b or not g.has_edge(a, b), f"{a} imports the command module {b}"
