"""The shape of the package (docs/architecture.md): imports point down, private names stay where they belong."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "autotimm"

# Lowest first; a module may import from its own package and from packages in lower rows.
LAYERS = [
    ["_atomic", "_compat", "_deprecation", "_errors", "_version", "_warnings", "geometry"],
    ["backbones", "loggers", "losses", "metrics", "optim"],
    ["data", "models"],
    ["export", "inference"],
    ["tasks"],
    ["runs"],
    ["analysis"],
    ["callbacks", "tuner"],
    ["trainer"],
    ["cli"],
    ["__init__", "__main__"],
]
ROW = {name: row for row, names in enumerate(LAYERS) for name in names}


def _modules() -> list[tuple[str, Path, ast.Module]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found.append((".".join(("autotimm", *parts)), path, ast.parse(path.read_text(encoding="utf-8"))))
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(tree: ast.Module) -> list[ast.ImportFrom]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("autotimm")]


def test_every_package_has_a_row_in_the_layer_table() -> None:
    packages = {_package(module) for module, _, _ in _modules()}
    assert packages <= set(ROW), f"add {sorted(packages - set(ROW))} to LAYERS and to docs/architecture.md"


def test_imports_point_down() -> None:
    upward = []
    for module, path, tree in _modules():
        own = _package(module)
        for node in _imports(tree):
            target = _package(node.module)
            if target != own and ROW[target] >= ROW[own] and own != "__main__":
                upward.append(f"{path.relative_to(SRC)}:{node.lineno} ({own}) imports {node.module} ({target})")
    assert not upward, "\n".join(upward)


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for module, path, tree in _modules():
        for node in _imports(tree):
            parent = module.rsplit(".", 1)[0]
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and node.module not in (module, parent):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} imports {node.module}.{alias.name}")
    assert not found, "\n".join(found)


def _own_private_attributes(trees: list[ast.Module]) -> set[str]:
    """Private names autotimm itself defines: assigned attributes and variables, functions, methods, classes."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
    return {name for name in names if name.startswith("_")}


def test_private_names_of_other_libraries_are_only_reached_through_compat() -> None:
    modules = _modules()
    own = _own_private_attributes([tree for _, _, tree in modules])
    reached = []
    for module, path, tree in modules:
        if module == "autotimm._compat":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if node.attr not in own:
                    reached.append(f"{path.relative_to(SRC)}:{node.lineno} reaches {ast.unparse(node)}")
        for node in _imports_of_other_libraries(tree):
            reached.extend(f"{path.relative_to(SRC)}:{node.lineno} imports {node.module}.{a.name}" for a in node.names)
    assert not reached, "move these into autotimm/_compat.py, each with a test:\n" + "\n".join(reached)


def _imports_of_other_libraries(tree: ast.Module) -> list[ast.ImportFrom]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and not (node.module or "").startswith("autotimm")
        and node.level == 0
        and (any(a.name.startswith("_") and not a.name.startswith("__") for a in node.names) or "._" in node.module)
    ]


@pytest.mark.parametrize("name", [n for row in LAYERS for n in row if n not in ("__init__", "__main__")])
def test_the_architecture_page_describes_each_package(name: str) -> None:
    page = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert f"`{name}" in page, f"docs/architecture.md does not mention `{name}`"
