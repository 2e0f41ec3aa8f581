"""The module map holds: every import of every ctshm module obeys ``docs/modules.md``.

The layers and each module's place are read from the table in ``docs/modules.md`` (so the
document and the code cannot drift apart); the imports are parsed from the sources (module
level and function bodies alike; ``if TYPE_CHECKING:`` blocks are type-only and exempt).
"""

from __future__ import annotations

import ast
import os
import re
from typing import NamedTuple, Optional

import pytest

from .helpers import REPO_ROOT

PKG = os.path.join(REPO_ROOT, "ctshm")
MAP = os.path.join(REPO_ROOT, "docs", "modules.md")
RANK = {"platform": 0, "core": 1, "extension": 2, "tool": 3}
#: The one core module allowed to import extensions (lazily, inside functions).
DOOR = "_doors"
_ROW = re.compile(r"^\|\s*`([A-Za-z_][\w.]*)`\s*\|\s*(platform|core|extension|tool)\s*\|(.*)$")


class Import(NamedTuple):
    target: str  # "ctshm.x" or "ctshm.x.y"
    line: int
    in_function: bool


def read_map(path: str = MAP) -> tuple[dict[str, str], set[str]]:
    """Row name -> layer, and the rows marked planned."""
    layers: dict[str, str] = {}
    planned: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for ln in f:
            m = _ROW.match(ln.strip())
            if m:
                name, layer, rest = m.groups()
                assert name not in layers, f"docs/modules.md lists {name!r} twice"
                layers[name] = layer
                if "(planned" in rest:
                    planned.add(name)
    return layers, planned


def module_files(pkg: str = PKG) -> dict[str, str]:
    """Dotted module name -> path, for every module of the package."""
    out = {}
    for dp, dn, fn in os.walk(pkg):
        dn[:] = [d for d in dn if not d.startswith((".", "__pycache__"))]
        for f in fn:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dp, f), os.path.dirname(pkg))[:-3]
                name = rel.replace(os.sep, ".")
                out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = (
                    os.path.join(dp, f))
    return out


def row_of(module: str) -> str:
    """``ctshm`` -> ``ctshm``; ``ctshm.ring`` -> ``ring``; ``ctshm.ops.top`` -> ``ops``."""
    parts = module.split(".")
    return parts[0] if len(parts) == 1 else parts[1]


def _type_only(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for n in node.body:
                skip.update(id(x) for x in ast.walk(n))
    return skip


def imports_of(module: str, path: str, known: set[str]) -> list[Import]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    skip = _type_only(tree)
    is_pkg = path.endswith("__init__.py")
    out: list[Import] = []

    def visit(node: ast.AST, in_fn: bool) -> None:
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if id(child) not in skip:
                for t in _targets(child, module, is_pkg, known):
                    out.append(Import(t, getattr(child, "lineno", 0), fn))
            visit(child, fn)

    visit(tree, False)
    return out


def _targets(node: ast.AST, module: str, is_pkg: bool, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "ctshm"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        stem = ".".join(base + ([node.module] if node.module else []))
    elif node.module and node.module.split(".")[0] == "ctshm":
        stem = node.module
    else:
        return []
    subs = [f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in known]
    return subs if subs and not node.module else [stem, *subs]


def violations(files: dict[str, str], layers: dict[str, str]) -> list[str]:
    """Every import that breaks the rules of docs/modules.md, as readable lines."""
    known = set(files)
    bad = []
    for mod, path in sorted(files.items()):
        src_row = row_of(mod)
        src = layers[src_row]
        for imp in imports_of(mod, path, known):
            dst_row = row_of(imp.target)
            if dst_row == src_row or (imp.target not in known and dst_row not in layers):
                continue
            why = _why(src_row, src, dst_row, layers[dst_row], imp.in_function)
            if why:
                bad.append(f"{os.path.relpath(path, REPO_ROOT)}:{imp.line}: {mod} imports "
                           f"{imp.target} ({why})")
    return bad


def _why(src_row: str, src: str, dst_row: str, dst: str, lazy: bool) -> Optional[str]:
    if RANK[dst] > RANK[src]:
        if src_row == DOOR and dst == "extension" and lazy:
            return None
        return f"{src} may not import {dst}" + (
            "; the door imports extensions only inside functions" if src_row == DOOR else "")
    if src in ("extension", "tool") and dst == "core" and dst_row.startswith("_"):
        return f"a private core module, off limits to a {src}"
    return None


def private_ring_uses(files: dict[str, str], layers: dict[str, str]) -> list[str]:
    """``ring._x`` (or ``self._ring._x``) in extension and tool modules."""
    bad = []
    for mod, path in sorted(files.items()):
        if layers[row_of(mod)] not in ("extension", "tool"):
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            v = node.value
            owner = v.id if isinstance(v, ast.Name) else v.attr if isinstance(
                v, ast.Attribute) else ""
            if owner.lstrip("_") in ("ring", "rg", "rings"):
                bad.append(f"{os.path.relpath(path, REPO_ROOT)}:{node.lineno}: "
                           f"{ast.unparse(node)}")
    return bad


def test_every_module_is_on_the_map_and_every_row_is_a_module() -> None:
    layers, planned = read_map()
    files = module_files()
    rows = {row_of(m) for m in files}
    assert rows - set(layers) == set(), "modules missing from docs/modules.md"
    assert set(layers) - rows - planned == set(), "rows of docs/modules.md with no module"
    assert {layers[r] for r in layers} == set(RANK)


def test_imports_follow_the_layers() -> None:
    layers, _ = read_map()
    bad = violations(module_files(), layers)
    assert not bad, "imports against docs/modules.md:\n" + "\n".join(bad)


def test_no_private_ring_attribute_outside_the_core() -> None:
    layers, _ = read_map()
    bad = private_ring_uses(module_files(), layers)
    assert not bad, "private ring attributes used outside the core:\n" + "\n".join(bad)


def test_the_door_is_the_only_core_module_naming_an_extension() -> None:
    """And importing ctshm loads no extension (the door is lazy)."""
    layers, _ = read_map()
    files = module_files()
    known = set(files)
    upward = {(row_of(m), row_of(i.target)) for m, p in files.items()
              for i in imports_of(m, p, known)
              if layers[row_of(m)] == "core" and layers.get(row_of(i.target)) == "extension"}
    assert {src for src, _ in upward} == {DOOR}, upward
    assert {dst for _, dst in upward} == {"aio", "objects", "channel"}


# -- the checker itself can fail -------------------------------------------------------------

@pytest.mark.parametrize(("module", "code", "expect"), [
    ("ring", "from . import aio\n", "core may not import extension"),
    ("_doors", "from .aio import aget\n", "only inside functions"),
    ("records", "from ._header import Header\n", "private core module"),
    ("layout", "def f():\n    from .ring import ShmTraceRing\n", "platform may not import core"),
])
def test_an_upward_or_private_import_is_caught(tmp_path: os.PathLike[str], module: str,
                                               code: str, expect: str) -> None:
    """A mutant tree: one module gains one forbidden import; the checker names it."""
    layers, _ = read_map()
    files = dict(module_files())
    path = os.path.join(str(tmp_path), f"{module}.py")
    with open(files[f"ctshm.{module}"], encoding="utf-8") as f:
        original = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(original + "\n" + code)
    files[f"ctshm.{module}"] = path
    bad = violations(files, layers)
    assert any(expect in b for b in bad), bad


def test_a_private_ring_attribute_in_an_extension_is_caught(tmp_path: os.PathLike[str]
                                                            ) -> None:
    layers, _ = read_map()
    files = dict(module_files())
    path = os.path.join(str(tmp_path), "channel.py")
    with open(files["ctshm.channel"], encoding="utf-8") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n\ndef peek(ring):\n    return ring._hq\n")
    files["ctshm.channel"] = path
    assert any("ring._hq" in b for b in private_ring_uses(files, layers))


def import_cycles(files: dict[str, str]) -> list[list[str]]:
    """Cycles among the imports of the package, lazy ones included (a function-level import
    back into a module that imports it is a cycle too: ``ops`` reading ``cli`` was one).
    Exempt: the door's lazy imports (its one documented way up) and a module
    ``__getattr__`` that keeps moved names importable from their old module."""
    known = set(files)
    graph = {m: sorted({i.target for i in imports_of(m, p, known)
                        if i.target in known and not (row_of(m) == DOOR and i.in_function)
                        and i.line not in _old_path_lines(p)} - {m})
             for m, p in files.items()}
    cycles, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if m.startswith(d + "."):
                continue  # a module of a package naming its own package
            if state[d] == 1:
                cycles.append([*stack[stack.index(d):], d] if d in stack else [m, d])
            elif state[d] == 0:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if state[m] == 0:
            visit(m, [m])
    return cycles


def _old_path_lines(path: str) -> set[int]:
    """Lines of a module-level ``__getattr__`` (PEP 562: names moved to another module)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    return {n.lineno for fn in tree.body
            if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__"
            for n in ast.walk(fn) if hasattr(n, "lineno")}


def test_no_import_cycles() -> None:
    cycles = import_cycles(module_files())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_an_import_cycle_is_caught(tmp_path: os.PathLike[str]) -> None:
    """The mutant: ops' parser reading its help texts from the main parser again."""
    files = dict(module_files())
    path = os.path.join(str(tmp_path), "cli.py")
    with open(files["ctshm.ops.cli"], encoding="utf-8") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n\ndef texts():\n    from .. import cli\n    return cli.COMMANDS\n")
    files["ctshm.ops.cli"] = path
    assert any("ctshm.cli" in c and "ctshm.ops.cli" in c for c in import_cycles(files))
