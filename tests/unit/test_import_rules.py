"""The import rules of keel, checked on the source (every file parsed, every import read).

* The server (``keel_server``) imports from the SDK only the generated stubs, ``keel.exceptions``,
  ``keel.shared``, ``keel.models``, ``keel.pyfunc`` and the flavors, plus ``keel.Client`` and
  ``keel.__version__`` from the package root; never a private module (``keel._*``, or any
  ``_name`` below ``keel``).
* The SDK is layered (see the docstring of ``keel/__init__.py``): a module imports only from
  its own layer or the ones before it. An import inside a function may point upward only where
  ``UPWARD_BY_DESIGN`` below lists it with its reason.
* The SDK's module-level imports form no cycle (a cycle there makes the import order matter),
  and neither do all its explicit imports, function-level ones included, once the few upward
  ones listed below are set aside.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ast_source import parse_file

REPO = Path(__file__).resolve().parents[2]
SDK_DIR = REPO / "clients" / "python" / "keel"
SERVER_DIR = REPO / "services"

# keel.<service>.v<N>[.<file>_pb2[_grpc]]: the generated stubs (and their packages).
STUBS = re.compile(r"keel\.[a-z_]+\.v\d+(\.[a-z0-9_]+_pb2(_grpc)?)?")


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module
    module: str  # what the statement names: ``import a.b`` -> a.b; ``from a.b import c`` -> a.b
    names: tuple[str, ...]  # the names of ``from ... import``; () for ``import``
    line: int
    module_level: bool  # runs when the importer is imported (not in a function, not type-only)
    path: Path

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of a package directory (generated stubs left out), by dotted name."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _imports(module: str, path: Path) -> Iterator[Import]:
    tree = parse_file(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def absolute(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        return f"{base}.{node.module}" if node.module else base

    def walk(nodes: list[ast.stmt], module_level: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, (), node.lineno, module_level, path)
            elif isinstance(node, ast.ImportFrom):
                names = tuple(alias.name for alias in node.names)
                yield Import(module, absolute(node), names, node.lineno, module_level, path)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(list(ast.iter_child_nodes(node)), False)  # type: ignore[arg-type]
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, False)
                yield from walk(node.orelse, module_level)
            else:
                yield from walk(list(ast.iter_child_nodes(node)), module_level)  # type: ignore[arg-type]

    yield from walk(tree.body, True)


def _targets(imp: Import, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` an import statement names (``from pkg import mod`` names
    ``pkg.mod`` when that is a module, else ``pkg``)."""
    out: set[str] = set()
    candidates = [f"{imp.module}.{name}" for name in imp.names] if imp.names else [imp.module]
    for candidate in candidates:
        name = candidate
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


# ---------------------------------------------------------------------------------------------
# The server's imports of the SDK
# ---------------------------------------------------------------------------------------------

# keel.channels: how a keel client opens a channel; the server's HTTP front doors (MLflow REST
# port, console) are clients of keel's own services.
SERVER_MAY_IMPORT = ("keel.exceptions", "keel.channels", "keel.shared", "keel.models", "keel.pyfunc", "keel.sklearn", "keel.pytorch")
# Public names of the package root the server may use: the version it reports, and the client
# of a remote keel that the standalone model server (keel models serve) is by design.
SERVER_MAY_USE_FROM_ROOT = ("__version__", "Client")


def _server_violation(imp: Import, root_uses: set[str]) -> str | None:
    """Why the server may not make this import of ``keel...``, or None."""
    dotted = [f"{imp.module}.{n}" for n in imp.names] if imp.names else [imp.module]
    for full in dotted:
        below_root = full.split(".")[1:]
        if imp.module == "keel" and imp.names:  # from keel import X
            if below_root[0] in SERVER_MAY_USE_FROM_ROOT:
                continue
        private = [p for p in below_root if p.startswith("_")]
        if private:
            return f"{full} is private to the SDK ({private[0]})"
        if full == "keel":  # import keel: only the root's public names may be used
            bad = sorted(u for u in root_uses if u not in SERVER_MAY_USE_FROM_ROOT and f"keel.{u}" not in _allowed(u))
            if bad:
                return f"import keel, then keel.{bad[0]}: only keel.{' and keel.'.join(SERVER_MAY_USE_FROM_ROOT)} from the root"
            continue
        if STUBS.fullmatch(full) or any(full == p or full.startswith(p + ".") for p in SERVER_MAY_IMPORT):
            continue
        if imp.names and (STUBS.fullmatch(imp.module) or any(imp.module == p for p in SERVER_MAY_IMPORT)):
            continue  # from keel.models import Model: a name of an allowed module
        return f"{full} is not one of the SDK parts the server may use ({', '.join(SERVER_MAY_IMPORT)}, the stubs)"
    return None


def _allowed(name: str) -> set[str]:
    return {f"keel.{name}"} if f"keel.{name}" in SERVER_MAY_IMPORT else set()


def _root_uses(path: Path) -> set[str]:
    """The attributes read off the name ``keel`` in a file (``keel.__version__`` -> __version__)."""
    tree = parse_file(path)
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "keel"
    }


def test_the_server_imports_only_the_public_shared_layers_of_the_sdk() -> None:
    server = _modules(SERVER_DIR, "keel_server")
    assert len(server) > 30, "the server's modules were not found"
    violations = []
    seen = 0
    for module, path in server.items():
        uses = _root_uses(path)
        for imp in _imports(module, path):
            if imp.module != "keel" and not imp.module.startswith("keel."):
                continue
            seen += 1
            why = _server_violation(imp, uses)
            if why:
                violations.append(f"{imp.where}: {why}")
    assert seen > 20, "no import of the SDK was found in the server: the walk is broken"
    assert not violations, "the server reaches into the SDK:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("from keel._inference_client import V2_DATATYPES", False),
        ("from keel.artifacts._transfer import frame_chunk", False),
        ("import keel._transport", False),
        ("from keel import _transport", False),
        ("from keel.client import Client", False),
        ("from keel.artifacts import download_artifacts", False),
        ("import keel\nkeel.set_tracking_uri('x')", False),
        ("from keel.shared.chunks import frame_chunk", True),
        ("from keel.models.uri import parse_models_uri", True),
        ("from keel.artifacts.v1 import artifacts_pb2", True),
        ("from keel.artifacts.v1.artifacts_pb2 import FileInfo", True),
        ("from keel.exceptions import KeelError as SdkError", True),
        ("from keel import Client", True),
        ("import keel\nprint(keel.__version__)", True),
        ("import keel.pyfunc", True),
    ],
)
def test_the_server_rule_tells_allowed_from_forbidden(tmp_path: Path, source: str, allowed: bool) -> None:
    """The checker itself: each forbidden form is caught, each allowed one passes."""
    path = tmp_path / "probe.py"
    path.write_text(f"def f():\n    {source.replace(chr(10), chr(10) + '    ')}\n", encoding="utf-8")
    uses = _root_uses(path)
    found = [_server_violation(imp, uses) for imp in _imports("keel_server.probe", path)]
    assert len(found) == 1
    assert (found[0] is None) == allowed, found[0]


def test_the_shared_layer_is_pure() -> None:
    """keel.shared imports the standard library, numpy, keel.exceptions and itself: no network
    client, no database, no protobuf stub (whose SDK package would import the transfer code)."""
    shared = _modules(SDK_DIR / "shared", "keel.shared")
    assert {"keel.shared.uris", "keel.shared.tensors", "keel.shared.chunks", "keel.shared.pages"} <= set(shared)
    violations = []
    for module, path in shared.items():
        for imp in _imports(module, path):
            top = imp.module.split(".")[0]
            if top in sys.stdlib_module_names or top == "numpy" or imp.module == "__future__":
                continue
            if imp.module in ("keel.exceptions", "keel.shared") or imp.module.startswith("keel.shared."):
                continue
            violations.append(f"{imp.where}: {imp.module}")
    assert not violations, "keel.shared imports more than it may:\n" + "\n".join(violations)


# ---------------------------------------------------------------------------------------------
# The SDK's layers
# ---------------------------------------------------------------------------------------------

LAYERS = (
    "exceptions",
    "channels",
    "shared grammar and format",
    "flavors",
    "pyfunc",
    "evaluation and autologging",
    "client and fluent",
    "cli",
)
ROOT = len(LAYERS)  # keel/__init__.py: the composition root, above everything


def layer(module: str) -> int:
    if module == "keel":
        return ROOT
    if module in ("keel.exceptions", "keel.extras"):
        return LAYERS.index("exceptions")
    if module == "keel.models.flavor_registry" or module == "keel.pyfunc" or module.startswith("keel.pyfunc."):
        return LAYERS.index("pyfunc")  # the registry is pyfunc's allowlist of flavor loaders
    if module == "keel.channels":
        return LAYERS.index("channels")
    if module.startswith(("keel.shared", "keel.models")) or STUBS.fullmatch(module):
        return LAYERS.index("shared grammar and format")
    if module in ("keel.sklearn", "keel.pytorch"):
        return LAYERS.index("flavors")
    if module.startswith(("keel.evaluation", "keel.autologging")):
        return LAYERS.index("evaluation and autologging")
    if module in ("keel.cli", "keel.__main__") or module.startswith("keel.cli."):
        return LAYERS.index("cli")
    return LAYERS.index("client and fluent")


# (importer, imported): why this import inside a function points upward. Nothing else may.
UPWARD_BY_DESIGN = {
    ("keel.sklearn", "keel.autologging.sklearn"): (
        "keel.sklearn.autolog, MLflow's spelling, is keel.autologging.sklearn.autolog (module __getattr__)"
    ),
    ("keel.autologging.sklearn", "keel.client"): "autologging logs a fit's params, metrics and model to the run",
    ("keel.autologging.sklearn", "keel.entities"): "the metric, param and tag entities it logs in one batch",
    ("keel.pytorch", "keel.autologging.pytorch"): (
        "keel.pytorch.autolog, MLflow's spelling, is keel.autologging.pytorch.autolog (module __getattr__)"
    ),
    # the sender thread has no fluent run of its own: it logs to the training's run by id
    ("keel.autologging.common", "keel.client"): "autologging's background sender logs to a run by id",
    ("keel.autologging.common", "keel.entities"): "the metric, param and tag entities it sends in batches",
}


def _sdk_imports() -> tuple[dict[str, Path], list[tuple[Import, str]]]:
    sdk = _modules(SDK_DIR, "keel")
    edges: list[tuple[Import, str]] = []
    for module, path in sdk.items():
        for imp in _imports(module, path):
            for target in _targets(imp, sdk):
                if target != module and not module.startswith(target + "."):  # not its own package
                    edges.append((imp, target))
    return sdk, edges


def test_sdk_imports_follow_the_layers() -> None:
    _, edges = _sdk_imports()
    assert len(edges) > 100, "the SDK's imports were not found"
    violations = []
    used = set()
    for imp, target in edges:
        if layer(target) <= layer(imp.importer):
            continue
        why = UPWARD_BY_DESIGN.get((imp.importer, target))
        if why is None:
            violations.append(
                f"{imp.where}: {imp.importer} ({LAYERS[layer(imp.importer)]}) imports {target} "
                f"({LAYERS[layer(target)] if layer(target) < ROOT else 'the package root'})"
            )
        elif imp.module_level:
            violations.append(f"{imp.where}: {imp.importer} imports {target} when it is imported ({why})")
        used.add((imp.importer, target))
    assert not violations, "imports against the layering (keel/__init__.py):\n" + "\n".join(violations)
    assert used == set(UPWARD_BY_DESIGN), f"listed but no longer made: {set(UPWARD_BY_DESIGN) - used}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _describe(cycles: list[list[str]], graph: dict[str, set[str]]) -> str:
    lines = []
    for members in cycles:
        lines.append(" <-> ".join(members))
        lines.extend(f"    {m} -> {sorted(graph[m] & set(members))}" for m in members)
    return "\n".join(lines)


def test_sdk_module_level_imports_form_no_cycle() -> None:
    """What runs at import time, with the parent packages every import of a submodule runs first."""
    sdk, edges = _sdk_imports()
    graph: dict[str, set[str]] = {m: set() for m in sdk}
    for imp, target in edges:
        if not imp.module_level:
            continue
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            parent = ".".join(parts[:i])
            if parent in sdk and parent != imp.importer and not imp.importer.startswith(parent + "."):
                graph[imp.importer].add(parent)
    cycles = _cycles(graph)
    assert not cycles, "import cycles at module level:\n" + _describe(cycles, graph)


def test_sdk_has_no_import_circles() -> None:
    """Every explicit import, inside functions and type-only ones too, but the upward ones listed
    in UPWARD_BY_DESIGN: no module depends on itself through others."""
    sdk, edges = _sdk_imports()
    graph: dict[str, set[str]] = {m: set() for m in sdk}
    for imp, target in edges:
        if (imp.importer, target) not in UPWARD_BY_DESIGN:
            graph[imp.importer].add(target)
    cycles = _cycles(graph)
    assert not cycles, "import circles:\n" + _describe(cycles, graph)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
