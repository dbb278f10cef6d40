"""Fail when a module uses another module's private name (outside cnnlab/kernels/).

A private name is one with a single leading underscore.  Two kinds of use are found:
``from cnnlab.x import _name`` (or ``from .x import _name``) and ``something._name`` where
``_name`` is not defined in the module that reads it (as a function, class, assignment or
``self._name = ...``).  ``self._name``/``cls._name`` and dunder names are always allowed.

Usage: python .ci/private_names.py [package_dir]   (exit status 1 and one line per use found)
"""

import ast
import pathlib
import sys


def defined_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def is_private(name):
    return name.startswith("_") and not name.startswith("__")


def uses(path, package):
    tree = ast.parse(path.read_text(), str(path))
    own = defined_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            internal = node.level > 0 or (node.module or "").split(".")[0] == package
            if internal:
                for alias in node.names:
                    if is_private(alias.name):
                        found.append((node.lineno, f"imports {alias.name} from {'.' * node.level}{node.module or ''}"))
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in own:
                continue
            found.append((node.lineno, f"uses .{node.attr}"))
    return found


def main(argv):
    root = pathlib.Path(argv[1] if len(argv) > 1 else "cnnlab")
    package = root.name
    failures = 0
    for path in sorted(root.rglob("*.py")):
        if "kernels" in path.relative_to(root).parts:
            continue
        for line, what in uses(path, package):
            print(f"{path}:{line}: {what}")
            failures += 1
    if failures:
        print(f"{failures} private name(s) used across modules", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
