"""The package's imports flow one way: each layer imports only layers below it (lazy imports
inside functions included), so a model never depends on training, or loading on inference."""

import ast
from pathlib import Path

import futuretoken

LAYERS = [
    {"version", "storage", "config", "devices"},
    {"data", "model"},
    {"checkpoint"},
    {"training", "infer"},
    {"eval", "hf", "bench"},
    {"study"},
    {"demo"},
    {"cli", "__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
ROOT = Path(futuretoken.__file__).parent


def imported_components(path: Path) -> set[str]:
    """Top-level components of futuretoken that `path` imports (futuretoken.X or relative)."""
    package = path.relative_to(ROOT).parts[:-1]  # e.g. ("eval",) for eval/paper.py
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = list(package[: len(package) - (node.level - 1)]) if node.level > 1 else list(package)
                parts = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "futuretoken":
                parts = node.module.split(".")[1:]
            else:
                continue
            # `from futuretoken import X` / `from .. import X` at the top: the package root itself
            found.add(parts[0] if parts else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "futuretoken":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def component(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_imports_only_go_down_the_layers():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        own = component(path)
        for name in imported_components(path) - {own}:
            if RANK[name] >= RANK[own]:
                wrong.append(f"{path.relative_to(ROOT)} ({own}, layer {RANK[own]}) imports {name} (layer {RANK[name]})")
    assert not wrong, "\n".join(wrong)


def test_every_component_has_a_layer():
    names = {component(p) for p in ROOT.rglob("*.py")}
    assert names <= set(RANK), names - set(RANK)
