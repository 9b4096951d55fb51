"""The shape of the code: imports run one way, no cycles, files and functions fit in a head.

The layers, bottom to top (see the README's "Layout"): a module may import its own layer
and the layers below it, never one above; the extensions of layer 6 do not import each
other. Imports inside functions count (a lazy import is still a dependency); imports under
``if TYPE_CHECKING:`` do not, but they must not point up either.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "tidings"
LAYERS: list[set[str]] = [
    {"tidings.core"},
    {"tidings.engine"},
    {"tidings.queues"},
    {"tidings.worker"},
    {"tidings.routing"},  # topics: below the extensions, so schedules may target a topic
    {"tidings.flow", "tidings.ordering", "tidings.scheduling", "tidings.observability",
     "tidings.ledger", "tidings.security", "tidings.integrations"},
    {"tidings.app", "tidings.sync", "tidings.errors"},  # the app and its blocking face
    {"tidings.api", "tidings.dashboard"},  # the HTTP API and the web dashboard
    {"tidings.cli", "tidings.__main__", "tidings.demo"},
]
INDEPENDENT = LAYERS[5]  # the extensions: none imports another
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 60


def parse(source: str) -> ast.Module:
    return ast.parse(source)


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement and whether it is type-only, anywhere in the module."""
    stack: list[tuple[ast.AST, bool]] = [(n, False) for n in tree.body]
    while stack:
        node, typing_only = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, typing_only
            continue
        if isinstance(node, ast.If) and _type_checking(node):
            stack += [(n, True) for n in node.body] + [(n, typing_only) for n in node.orelse]
            continue
        stack += [(n, typing_only) for n in ast.iter_child_nodes(node)]


def targets(module: str, path: Path, node: ast.Import | ast.ImportFrom,
            known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("tidings")]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    if not name.startswith("tidings"):
        return []
    subs = [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in known]
    return subs or [name]


def graph(typing_too: bool) -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for node, typing_only in imports(parse(path.read_text())):
            if typing_only and not typing_too:
                continue
            edges[module] |= {t for t in targets(module, path, node, known)
                              if t in known and t != module}
    return edges


def layer_of(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return index
    return None  # the package root (tidings/__init__) may import anything


def top_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def cycles() -> list[list[str]]:
    edges = graph(typing_too=False)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        on_stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = on_stack.pop()
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    return found


def upward(typing_too: bool) -> list[str]:
    bad = []
    for module, deps in graph(typing_too).items():
        mine = layer_of(module)
        if mine is None:
            continue
        for dep in deps:
            theirs = layer_of(dep)
            if theirs is None or theirs > mine:
                bad.append(f"{module} -> {dep}")
            elif (theirs == mine and LAYERS[mine] is INDEPENDENT
                  and top_of(dep) != top_of(module)):
                bad.append(f"{module} -> {dep} (extensions must not import each other)")
    return sorted(bad)


def strays() -> list[str]:
    return [m for m in modules() if m != "tidings" and layer_of(m) is None]


def long_files() -> dict[str, int]:
    return {str(p.relative_to(SRC)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}


def long_functions() -> list[str]:
    long = []
    for path in ROOT.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str) and len(body) > 1):
                body = body[1:]  # the docstring is not code to read
            size = (node.end_lineno or node.lineno) - body[0].lineno + 1
            reason = "# long:" in lines[node.lineno - 1]
            if size > MAX_FUNCTION_LINES and not reason:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({size})")
    return long


def findings() -> dict[str, object]:
    return {"cycles": cycles(), "upward": upward(False), "upward_typing": upward(True),
            "strays": strays(), "long_files": long_files(), "long_functions": long_functions()}


@pytest.fixture(scope="module")
def found() -> dict[str, object]:
    """The findings, computed in a fresh interpreter: CPython 3.11.7 can fail ast.parse with
    "AST constructor recursion depth mismatch" after other tests ran in the process."""
    out = subprocess.run([sys.executable, __file__], capture_output=True, text=True,
                         check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_there_is_no_import_cycle(found: dict[str, object]) -> None:
    assert found["cycles"] == []


@pytest.mark.parametrize("kind", ["upward", "upward_typing"], ids=["runtime", "type-only"])
def test_imports_never_point_up_a_layer(found: dict[str, object], kind: str) -> None:
    assert found[kind] == []


def test_every_module_belongs_to_a_layer(found: dict[str, object]) -> None:
    assert found["strays"] == []


def test_files_fit_in_one_head(found: dict[str, object]) -> None:
    assert found["long_files"] == {}


def test_functions_fit_on_a_screen_or_say_why(found: dict[str, object]) -> None:
    assert found["long_functions"] == []


def test_the_key_space_names_the_keys_in_the_order_the_scripts_read_them() -> None:
    """The Python names of a queue's (and a partition's) keys and the Lua includes agree."""
    import re

    from tidings.core.keys import PARTITION_KEY_ORDER, QUEUE_KEY_ORDER

    lua = ROOT / "engine" / "lua" / "includes"

    def lua_order(name: str) -> list[str]:
        text = (lua / f"{name}.lua").read_text()
        assignments = re.findall(r"^local ([A-Z_, ]+) = (KEYS\[[^\n]+)$", text, re.MULTILINE)
        order: dict[int, str] = {}
        for names, values in assignments:
            for var, value in zip(names.split(", "), values.split(", "), strict=True):
                if value.startswith("KEYS["):
                    order[int(value[5:-1])] = var.lower()
            lanes = re.search(r"local LANES = \{KEYS\[1\], KEYS\[2\], KEYS\[3\]\}", text)
            if lanes:
                order.update({1: "high", 2: "normal", 3: "low"})
        return [order[i] for i in sorted(order)]

    aliases = {"bodies": "delayed_bodies", "consumers": "consumers", "config": "config"}
    assert [aliases.get(n, n) for n in lua_order("common")] == list(QUEUE_KEY_ORDER)
    assert lua_order("ordered") == list(PARTITION_KEY_ORDER)


if __name__ == "__main__":
    print(json.dumps(findings()))
