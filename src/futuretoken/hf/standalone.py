"""The self-contained modeling file of an export: hf/modeling.py and every futuretoken module it needs,
in one file that imports only torch and transformers (the Hub's convention for remote code).

Generated from the installed package at export time, so it is always today's model code: the
modules hf/modeling.py imports (transitively) are concatenated in dependency order, their imports
of each other removed (the names then live in one namespace) and `from __future__` lifted to the
top. A name defined at the top level of two of these modules would silently shadow the other, so
generation refuses it.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT_MODULE = "futuretoken.hf.modeling"
PACKAGE = "futuretoken"


def _source_path(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"cannot find the source of {module}")
    return Path(spec.origin)


def _own_imports(tree: ast.Module, module: str) -> list[tuple[ast.ImportFrom | ast.Import, list[str]]]:
    """The import statements of `module` that import futuretoken modules, with the modules they import."""
    package = module.removesuffix(".__init__") if module.endswith(".__init__") else module.rpartition(".")[0]
    out = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                submodules = [f"{target}.{a.name}" for a in node.names if importlib.util.find_spec(f"{target}.{a.name}")
                              ] if _is_package(target) else []
                out.append((node, [target, *submodules]))
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names):
            raise ValueError(f"{module}: `import {node.names[0].name}` cannot be inlined; use `from ... import`")
    return out


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def _module_order(root: str) -> list[str]:
    """`root` and the futuretoken modules it imports, each after the modules it imports."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(module: str) -> None:
        if module in order:
            return
        if module in visiting:
            raise ValueError(f"import cycle through {module}: it cannot be inlined")
        visiting.add(module)
        tree = ast.parse(_source_path(module).read_text())
        for _, targets in _own_imports(tree, _key(module)):
            for target in targets:
                visit(target)
        visiting.discard(module)
        order.append(module)

    visit(root)
    return order


def _key(module: str) -> str:
    """A package's own module name for resolving its relative imports (futuretoken.model -> its __init__)."""
    return f"{module}.__init__" if _is_package(module) else module


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names - {"__all__"}


def standalone_source() -> str:
    """The text of the self-contained modeling file."""
    parts, seen = [], {}
    for module in _module_order(ROOT_MODULE):
        path = _source_path(module)
        text = path.read_text()
        tree = ast.parse(text)
        for name in _top_level_names(tree):
            if name in seen:
                raise ValueError(f"{name} is defined in both {seen[name]} and {module}: rename one, or the "
                                 "self-contained modeling file would keep only the second")
            seen[name] = module
        drop = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                drop |= set(range(node.lineno, node.end_lineno + 1))
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                drop |= set(range(node.lineno, node.end_lineno + 1))
        for node, _ in _own_imports(tree, _key(module)):
            drop |= set(range(node.lineno, node.end_lineno + 1))
        lines = [line for i, line in enumerate(text.splitlines(), start=1) if i not in drop]
        parts.append(f"# ---- {module} " + "-" * max(0, 90 - len(module)) + "\n" + "\n".join(lines).strip() + "\n")
    source = ("# Generated by futuretoken's export (futuretoken/hf/standalone.py): its model code in one file that needs\n"
              "# only torch and transformers. Edit futuretoken, not this file.\n"
              "from __future__ import annotations\n\n" + "\n\n".join(parts))
    source = source.replace("\nSELF_CONTAINED = False", "\nSELF_CONTAINED = True", 1)
    compile(source, "modeling_futuretoken.py", "exec")  # a syntax error here, not on a user's machine
    return source
