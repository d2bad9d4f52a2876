"""The shape of the codebase: dependencies point one way, and ``import pigeon`` is enough."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pigeon"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the pigeon modules it imports (at module level or inside functions). A
    package's ``__init__`` importing its own children is not counted."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".") if is_package else module.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target) if target.split(".")[0] == "pigeon" else None
                if found and found != module and not (is_package and found.startswith(module + ".")):
                    graph[module].add(found)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(start: str) -> None:
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
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

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles_among_pigeon_modules():
    assert _cycles(_import_graph()) == []


def test_layers_of_the_pipeline_depend_one_way():
    graph = _import_graph()

    def reaches(module: str, prefix: str) -> list[str]:
        return sorted(t for t in graph[module] if t == prefix or t.startswith(prefix + "."))

    for module in graph:
        if module.startswith("pigeon.ir"):
            for other in ("pigeon.passes", "pigeon.codegen", "pigeon.runtime", "pigeon.tune", "pigeon.nn"):
                assert not reaches(module, other), f"{module} imports {reaches(module, other)}"
        if module.startswith("pigeon.reference"):
            for other in ("pigeon.ir", "pigeon.passes", "pigeon.codegen", "pigeon.runtime"):
                assert not reaches(module, other), f"{module} imports {reaches(module, other)}"
        if module.startswith("pigeon.runtime") or module.startswith("pigeon.passes"):
            assert not reaches(module, "pigeon.tune"), f"{module} imports {reaches(module, 'pigeon.tune')}"
        if module.startswith("pigeon.codegen"):
            assert not reaches(module, "pigeon.runtime"), f"{module} imports {reaches(module, 'pigeon.runtime')}"
        # Nothing inside the package imports its root for a name (the version lives in a leaf).
        assert "pigeon" not in graph[module] or module == "pigeon", f"{module} imports the package root"


def test_import_pigeon_is_enough_for_the_user_facing_modules():
    code = ("import pigeon, torch\n"
            "layer = pigeon.nn.RGCN(8, 8, 3)\n"
            "assert layer.compiled.backend == 'auto', layer.compiled.backend\n"
            "g = pigeon.HeteroGraph(torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]), torch.tensor([0, 1, 2]))\n"
            "ref = pigeon.reference.RGCN(8, 8, 3)\n"
            "ref.load_state_dict(layer.state_dict())\n"
            "x = torch.randn(3, 8)\n"
            "torch.testing.assert_close(layer(g, x), ref(g, x), rtol=1e-5, atol=1e-5)\n"
            "print(pigeon.data.load, pigeon.tune, pigeon.__version__)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
