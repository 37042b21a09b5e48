"""The package's import graph: no cycle, and imports that point one way.

Read from the source with `ast` (nothing is imported), so it also prints:

    python tests/test_imports.py

lists each module's imports of other keras_mixer modules and any cycle.
"""

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "keras_mixer"

# Which keras_mixer modules each part may import at module level (the
# module's own part is always allowed). The model side sits on top of the
# checkpoint side, which works on variable paths and arrays only.
ALLOWED = {
    "keras_mixer.atomic": (),
    "keras_mixer.checks": (),
    "keras_mixer.presets": (),
    "keras_mixer.layers": ("keras_mixer.checks",),
    "keras_mixer.checkpoints": ("keras_mixer.atomic", "keras_mixer.presets"),
    "keras_mixer.models": (
        "keras_mixer.checks", "keras_mixer.layers", "keras_mixer.checkpoints",
        "keras_mixer.presets",
    ),
}

# An import inside a function is for a heavy optional dependency only.
LAZY_OK = ("tensorflow", "torch", "safetensors", "matplotlib", "huggingface_hub")


def modules():
    """{module name: path} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _targets(node, names):
    """The keras_mixer modules an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
    if node.module is None or node.module.split(".")[0] != PACKAGE:
        return []
    found = []
    for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        found.append(sub if sub in names else node.module)
    return found


def graph():
    """({module: sorted module-level imports}, {module: [(function,
    imported module)] of imports inside functions})."""
    names = modules()
    edges, lazy = {}, {}
    for name, path in names.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        top = set()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                top.update(_targets(node, names))
        edges[name] = sorted(top - {name})
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import):
                        lazy.setdefault(name, []).extend(
                            (function.name, a.name) for a in node.names)
                    elif isinstance(node, ast.ImportFrom):
                        lazy.setdefault(name, []).append(
                            (function.name, node.module or "."))
    return edges, lazy


def cycles(edges):
    """Every strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def _part(name):
    for part in sorted(ALLOWED, key=len, reverse=True):
        if name == part or name.startswith(part + "."):
            return part
    return None


def test_no_import_cycle():
    edges, _ = graph()
    assert cycles(edges) == []


def test_cycle_detection_can_fail():
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [
        ["a", "b", "c"]
    ]


def test_imports_point_one_way():
    edges, _ = graph()
    wrong = []
    for name, targets in edges.items():
        part = _part(name)
        if part is None:
            continue
        for target in targets:
            if _part(target) != part and _part(target) not in ALLOWED[part]:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_model_and_checkpoint_side_import_lazily_only_heavy_optional_deps():
    _, lazy = graph()
    wrong = [
        f"{name}.{function}: {module}"
        for name, imports in lazy.items()
        if _part(name) is not None
        for function, module in imports
        if module.split(".")[0] not in LAZY_OK
    ]
    assert wrong == []


if __name__ == "__main__":
    edges, lazy = graph()
    for name in sorted(edges):
        print(f"{name} -> {', '.join(edges[name]) or '(none)'}")
    found = cycles(edges)
    print("cycles:", found or "none")
    sys.exit(1 if found else 0)
