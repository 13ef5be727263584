"""Parsing keel's own source files for the layering and extras checks.

CPython 3.11 keeps the recursion counter of ``ast.parse``'s AST-to-object conversion in
interpreter-wide state, so a parse that overlaps another thread's can fail with "SystemError:
AST constructor recursion depth mismatch" although the source is fine (seen late in full runs,
when earlier tests have left library threads behind; never in these tests alone). So every
source file is parsed once when this module is imported, during collection, before any test has
started a thread; a file not parsed then is parsed on demand, retried on that error.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (REPO / "services", REPO / "clients" / "python" / "keel")
ATTEMPTS = 20


def _parse(path: Path) -> ast.Module:
    source = path.read_text(encoding="utf-8")
    for attempt in range(ATTEMPTS):
        try:
            return ast.parse(source, str(path))
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


_TREES: dict[Path, ast.Module] = {
    path.resolve(): _parse(path) for root in SOURCE_ROOTS for path in root.rglob("*.py") if "_pb2" not in path.name
}


def parse_file(path: Path) -> ast.Module:
    """The module's AST (callers only read it)."""
    tree = _TREES.get(path.resolve())
    return tree if tree is not None else _parse(path)
