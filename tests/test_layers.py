"""The architecture's import rules (``../shared/DESIGN.md``), checked on the source with ``ast``.

Layers, top to bottom: server → otc → routing → trading → history/cluster → marketdata →
venues → store → core. A module imports only from its own layer or the layers below it, and
the ``astra`` package has no import cycle. Every import counts: at module level, inside
functions, and under ``if TYPE_CHECKING:`` (a type-only import still ties the modules together;
a Protocol in the lower module, or passing what is needed, breaks such a tie).

Placed by this test where DESIGN.md is silent: ``net`` (networking helpers shared by the
gateway and the simulator) sits just above ``core``; ``sim`` (the simulator, its own process)
may use ``venues`` and below (the venue's wire schemas) and only the entry points (``cli``,
``__main__``) import it; the entry points sit on top. A new package must be placed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "astra"

ENTRY = 100  # astra itself, cli, __main__
RANK = {
    "core": 0,
    "telemetry": 0.5,  # astra.telemetry: the metrics families; imports nothing from astra
    "net": 1,
    "store": 2,
    "tape": 2.5,  # recorded market data on disk (history writes it, the simulator replays it)
    "venues": 3,
    "sim": 3.5,
    "marketdata": 4,
    "history": 5,
    "cluster": 5,
    "trading": 6,
    "routing": 7,
    "otc": 8,
    "server": 9,
    "web": 9,  # the terminal's static files, served by server
    "client": 9,  # the SDK: talks to the server over HTTP/WS only
}
ENTRY_POINTS = {"astra", "astra.cli", "astra.__main__"}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts.pop()
        out[".".join(parts)] = (path, package)
    return out


def _imports(name: str, path: Path, package: bool, modules: set[str]) -> set[str]:
    """The astra modules ``name`` imports (``from X import y``: ``X.y`` when it is a module,
    else ``X``)."""
    here = name if package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    out = set()
    for target in found:
        while target and target not in modules and "." in target:  # `import a.b.c` names a.b.c
            target = target.rpartition(".")[0]
        if target in modules and target != name:
            out.add(target)
    return out


def _layer(name: str) -> str:
    return "entry" if name in ENTRY_POINTS else name.split(".")[1]


def _rank(name: str) -> float:
    return ENTRY if name in ENTRY_POINTS else RANK[_layer(name)]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    return {n: _imports(n, p, pkg, names) for n, (p, pkg) in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_every_package_has_a_layer():
    unplaced = {_layer(n) for n in _modules() if n not in ENTRY_POINTS} - set(RANK)
    assert not unplaced, f"place these packages in RANK: {sorted(unplaced)}"


def test_no_module_imports_a_higher_layer():
    upward = sorted(
        f"{src} -> {dst}"
        for src, targets in _graph().items()
        for dst in targets
        if _rank(dst) > _rank(src)
        or (_layer(dst) == "sim" and _layer(src) not in ("sim", "entry"))
    )
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_type_only_and_relative_imports(tmp_path):
    """The checker itself: a cycle made only of a TYPE_CHECKING import is found, relative
    imports resolve, and ``from pkg import submodule`` points at the submodule."""
    pkg = tmp_path / "astra" / "sim"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import thing\n"
    )
    (pkg / "c.py").write_text("def f():\n    from astra.sim import a\n")
    modules = {"astra.sim", "astra.sim.a", "astra.sim.b", "astra.sim.c"}
    graph = {
        name: _imports(name, pkg / f"{name.rpartition('.')[2]}.py", False, modules)
        for name in ("astra.sim.a", "astra.sim.b", "astra.sim.c")
    }
    assert graph == {"astra.sim.a": {"astra.sim.b"}, "astra.sim.b": {"astra.sim.a"},
                     "astra.sim.c": {"astra.sim.a"}}
    assert _cycles(graph) == [["astra.sim.a", "astra.sim.b"]]
