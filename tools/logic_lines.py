"""Lines of logic per Python module: code lines, without docstrings, comments and blank lines.

docs/architecture.md ("Layers") caps a module at about 600 lines of logic, so that each one
can be read in a sitting; tests/test_architecture.py checks it. Run it by hand to see the
largest modules: `python tools/logic_lines.py $(git ls-files '*.py')`.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

_SKIP = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def logic_lines(path: Path) -> int:
    """The number of lines of `path` that hold code other than a docstring."""
    source = path.read_text(encoding="utf-8")
    docstrings = _docstring_lines(ast.parse(source, filename=str(path)))
    code: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in _SKIP:
            continue
        code.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(code)


def main(argv: list[str]) -> int:
    for count, name in sorted((logic_lines(Path(p)), p) for p in argv[1:]):
        print(f"{count:5d} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
