"""Package-level promises."""

import subprocess
import sys

import gaussood


def test_import_does_not_import_torch():
    code = "import sys, gaussood; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_api():
    for name in gaussood.__all__:
        assert hasattr(gaussood, name)


def _import_graph():
    """{module: modules it imports}, for every module of the gaussood package.

    Read from the source with ``ast``: every import statement, module-level or inside
    a function (a deferred import closes a cycle as surely, only later), relative ones
    resolved. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module
    of the package, else to ``pkg``.
    """
    import ast
    from pathlib import Path

    root = Path(gaussood.__file__).parent
    files = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        files[".".join(parts)] = (path, is_package)
    graph = {}
    for module, (path, is_package) in files.items():
        package = module if is_package else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in files else target)
        graph[module] = {edge for edge in edges if edge in files and edge != module}
    return graph


def test_import_graph_has_no_cycle():
    """No module of gaussood (gaussood.deep included) imports itself through others."""
    graph = _import_graph()
    assert {"gaussood._base", "gaussood.persistence", "gaussood.deep.train"} <= set(graph)
    assert graph["gaussood.persistence"] >= {"gaussood._registry"}
    assert "gaussood._base" not in graph["gaussood.persistence"]
    state, stack = {}, []  # state: 1 on the current path, 2 done

    def visit(module):
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
