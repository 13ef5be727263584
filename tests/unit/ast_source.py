"""Parsing keel's own source files for the layering and extras checks.

CPython 3.11's ``ast.parse`` can fail with "SystemError: AST constructor recursion depth
mismatch" in a thread whose recursion counters something earlier in a long pytest session left
skewed (seen once in the whole suite, never in these tests alone). A fresh thread starts with
fresh counters, so the parse runs in one.
"""

from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def parse_file(path: Path) -> ast.Module:
    source = path.read_text(encoding="utf-8")
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(ast.parse, source, str(path)).result()
