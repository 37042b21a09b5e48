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
# module's own part is always allowed). Models <- checkpoints <- training /
# export <- commands <- cli: the model side sits on the checkpoint side (which
# works on variable paths and arrays only); training and export use both but
# not each other; only the command line sees everything. The package root
# (the public API) and __main__ are not a part: they may import any.
_BASE = ("keras_mixer.atomic", "keras_mixer.checks", "keras_mixer.labels",
         "keras_mixer.presets")
_MODEL_SIDE = ("keras_mixer.layers", "keras_mixer.checkpoints",
               "keras_mixer.models")
ALLOWED = {
    "keras_mixer.atomic": (),
    "keras_mixer.checks": (),
    "keras_mixer.labels": (),
    "keras_mixer.presets": (),
    "keras_mixer.tf_logs": (),
    "keras_mixer.version": (),
    # The bounded decoder and evaluation crops (TensorFlow ops) that training
    # and export share.
    "keras_mixer.images": (),
    "keras_mixer.layers": ("keras_mixer.checks",),
    "keras_mixer.checkpoints": ("keras_mixer.atomic", "keras_mixer.presets"),
    "keras_mixer.models": (
        "keras_mixer.checks", "keras_mixer.layers", "keras_mixer.checkpoints",
        "keras_mixer.presets",
    ),
    "keras_mixer.training": _BASE + _MODEL_SIDE + ("keras_mixer.images",),
    "keras_mixer.export": _BASE + _MODEL_SIDE + ("keras_mixer.images",),
    "keras_mixer.visualize": _BASE + _MODEL_SIDE,
    "keras_mixer.benchmark": _BASE + _MODEL_SIDE,
    "keras_mixer.commands": _BASE + _MODEL_SIDE + (
        "keras_mixer.images", "keras_mixer.training", "keras_mixer.export",
        "keras_mixer.visualize", "keras_mixer.benchmark"),
    "keras_mixer.cli": ("keras_mixer.commands", "keras_mixer.tf_logs",
                        "keras_mixer.training"),
}

# An import inside a function is for a heavy optional dependency only:
# TensorFlow (under another backend), torch, JAX, matplotlib, the ONNX and
# LiteRT converters and runtimes, tensorflow-datasets, huggingface_hub, timm.
LAZY_OK = ("tensorflow", "torch", "jax", "safetensors", "matplotlib",
           "huggingface_hub", "onnxruntime", "tf2onnx", "ai_edge_litert",
           "tensorflow_datasets", "timm", "keras.src.backend.tensorflow")
# keras_mixer modules imported inside functions, and why: they import
# TensorFlow when they load, and the importer also runs without it (the
# command line's --help and model-only commands, and the benchmark, under JAX
# or PyTorch), so only the function that needs them loads them.
LAZY_EXCEPTIONS = {
    "keras_mixer.commands": ("keras_mixer.training.train",
                             "keras_mixer.training.data",
                             "keras_mixer.training.sources",
                             "keras_mixer.export"),
    "keras_mixer.benchmark.keras_paths": ("keras_mixer.export",),
}


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
    """({module: sorted module-level imports of keras_mixer modules},
    {module: [(function, imported module)] of imports inside functions})."""
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
                    if not isinstance(node, (ast.Import, ast.ImportFrom)):
                        continue
                    found = _targets(node, names) or (
                        [a.name for a in node.names]
                        if isinstance(node, ast.Import) else
                        [node.module or "."])
                    lazy.setdefault(name, []).extend(
                        (function.name, module) for module in found)
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


def _lazy_ok(name, module):
    return any(module == ok or module.startswith(ok + ".")
               for ok in LAZY_OK + LAZY_EXCEPTIONS.get(name, ()))


def test_imports_inside_functions_are_heavy_optional_deps_only():
    _, lazy = graph()
    wrong = [
        f"{name}.{function}: {module}"
        for name, imports in lazy.items()
        if _part(name) is not None
        for function, module in imports
        if not _lazy_ok(name, module)
    ]
    assert wrong == []


def test_every_module_belongs_to_a_part():
    """A new module gets a row in ALLOWED (or joins a part), so that its
    imports are checked too."""
    unplaced = [name for name in modules()
                if _part(name) is None
                and name not in ("keras_mixer", "keras_mixer.__main__")]
    assert unplaced == []


if __name__ == "__main__":
    edges, lazy = graph()
    for name in sorted(edges):
        print(f"{name} -> {', '.join(edges[name]) or '(none)'}")
    for name in sorted(lazy):
        inside = sorted({m for _, m in lazy[name] if m.startswith(PACKAGE)})
        if inside:
            print(f"{name} (inside functions) -> {', '.join(inside)}")
    found = cycles(edges)
    print("cycles:", found or "none")
    sys.exit(1 if found else 0)
