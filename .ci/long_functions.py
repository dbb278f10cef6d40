"""Fail when a function of the package has more than 80 lines of code.

Lines of code: the function's lines less blank lines, comment lines and docstrings (a long
docstring documents; it does not make a function do more).

Usage: python .ci/long_functions.py [package_dir] [limit]
"""

import ast
import pathlib
import sys


def docstring_lines(node):
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return set(range(body[0].lineno, body[0].end_lineno + 1))
    return set()


def code_lines(node, source_lines):
    skip = set()
    for inner in ast.walk(node):
        if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            skip |= docstring_lines(inner)
    count = 0
    for number in range(node.lineno, node.end_lineno + 1):
        text = source_lines[number - 1].strip()
        if text and not text.startswith("#") and number not in skip:
            count += 1
    return count


def main(argv):
    root = pathlib.Path(argv[1] if len(argv) > 1 else "cnnlab")
    limit = int(argv[2]) if len(argv) > 2 else 80
    found = 0
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        lines = source.split("\n")
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = code_lines(node, lines)
                if count > limit:
                    print(f"{path}:{node.lineno}: {node.name} has {count} lines of code (limit {limit})")
                    found += 1
    if found:
        print(f"{found} function(s) over {limit} lines of code", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
