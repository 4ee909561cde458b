"""The package boundaries hold: `sampler` is a library that never imports `edgeagent`, `otel`
imports neither, and no module imports itself back through others (imports inside functions
count: a lazy import only hides a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edgeagent", "sampler", "otel")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages (a package is its __init__)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that `module` imports anywhere in its file: at the top, in functions, under TYPE_CHECKING."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import module` names the module itself
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in out if name in known and name != module}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {module: _imported(module, path, known) for module, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _edges_into(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    return sorted(f"{module} -> {imported}" for module, imports in graph.items() if module.split(".")[0] == source
                  for imported in imports if imported.split(".")[0] == target)


def test_sampler_never_imports_edgeagent():
    assert _edges_into(_graph(), "sampler", "edgeagent") == []


def test_otel_imports_neither_edgeagent_nor_sampler():
    graph = _graph()
    assert _edges_into(graph, "otel", "edgeagent") + _edges_into(graph, "otel", "sampler") == []


def test_no_module_imports_itself_back_through_others():
    assert _cycles(_graph()) == []


def test_the_checker_sees_a_cycle_hidden_in_a_function(tmp_path):
    source = "def later():\n    from sampler.b import x\n"
    tree = {"sampler.a": {"sampler.b"}, "sampler.b": {"sampler.a"}}
    assert _cycles(tree) == [["sampler.a", "sampler.b"]]
    path = tmp_path / "a.py"
    path.write_text(source)
    assert _imported("sampler.a", path, {"sampler.a": path, "sampler.b": path}) == {"sampler.b"}
