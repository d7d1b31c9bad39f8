"""The import graph: no circles, and no module imports a layer above its own.

The layers are the ones of docs/ARCHITECTURE.md, bottom to top. Imports inside functions count
too (a lazy import is still a dependency). A package's ``__init__`` belongs to its package.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

LAYERS: list[tuple[str, ...]] = [
    (
        "atomic",
        "flow",
        "sequence",
        "features",
        "conditions",
        "weights",
        "device",
        "precision",
        "console",
        "configs",
        "allocator",
    ),
    # ^ 0: the foundations
    ("media",),  # 1: decode, resample, mel, mux
    ("network",),  # 2: the velocity network
    ("objectives", "sampling", "encoders", "exact_flow"),  # 3: losses, samplers, frozen encoders
    ("evaluation", "data"),  # 4: metrics and embedders; caches, extraction, open data
    ("spec", "registry", "models", "hub", "pipeline"),  # 5: the run spec, weight registry, inference API
    ("training", "generate", "bench", "demo", "scale", "doctor"),  # 6: trainer, batch generation, benchmarks, Ray
    ("cli", "__main__"),  # 7: the command line
]


def _layer(module: str) -> int:
    head = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module}: no layer in tests/test_layers.py (add its package to LAYERS)")


def import_graph() -> dict[str, set[str]]:
    files = {}
    for path in (SRC / "soundvcm").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    graph = import_graph()
    assert "soundvcm.network.checkpoint" in graph["soundvcm.pipeline"]  # a known edge
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_no_import_circles():
    assert _cycles(import_graph()) == []


def test_no_upward_imports():
    graph = import_graph()
    upward = sorted(
        f"{a} (layer {_layer(a)}) -> {b} (layer {_layer(b)})"
        for a, targets in graph.items()
        if a != "soundvcm"
        for b in targets
        if b != "soundvcm" and _layer(b) > _layer(a)
    )
    assert upward == []


def test_size_limits():
    """No source file over 400 lines and no function over 60 (issue 14's goals)."""
    long_files, long_functions = [], []
    for path in (SRC / "soundvcm").rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            long_files.append(f"{path.relative_to(SRC)}: {len(text.splitlines())}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert long_files == [] and long_functions == []
