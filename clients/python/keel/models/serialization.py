"""Pickling of model objects, shared by the flavors.

Security: unpickling runs code chosen by whoever wrote the file.  Only load models from a
registry or path you trust.  keel never imports a module named inside a model directory;
the flavor loaders are a fixed allowlist (see ``keel.models.flavor_registry``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

# Modules that live in the interpreter's own trees are importable wherever the requirements
# are installed, so they are pickled by reference; anything else (a training script, a local
# package) is pickled by value so the model loads without that source.
_INSTALLED_ROOTS = tuple(
    os.path.realpath(p)
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)


def _is_local_module(module: ModuleType) -> bool:
    name = module.__name__
    if name == "__main__" or name.split(".")[0] in ("keel", "keel_server", "builtins"):
        return False  # __main__ is by value already; keel is a declared requirement
    file = getattr(module, "__file__", None)
    if not file:
        return False
    return not os.path.realpath(file).startswith(_INSTALLED_ROOTS)


def _modules_of(objects: Iterable[Any]) -> set[ModuleType]:
    found: set[ModuleType] = set()
    for obj in objects:
        for owner in (obj, type(obj)):
            mod = sys.modules.get(getattr(owner, "__module__", "") or "")
            if mod is not None and _is_local_module(mod):
                found.add(mod)
    return found


@contextlib.contextmanager
def pickle_local_code_by_value(objects: Iterable[Any], enabled: bool = True) -> Iterator[None]:
    """While active, cloudpickle embeds the code of local (non-installed) modules that define
    ``objects``' classes or functions.  Turned off when the caller ships ``code_paths``."""
    import cloudpickle

    modules = _modules_of(objects) if enabled else set()
    registered = []
    try:
        for mod in modules:
            with contextlib.suppress(ValueError):  # already registered by the user
                cloudpickle.register_pickle_by_value(mod)
                registered.append(mod)
        yield
    finally:
        for mod in registered:
            cloudpickle.unregister_pickle_by_value(mod)


def dump(obj: Any, path: str, by_value_for: Iterable[Any] = (), by_value: bool = True) -> None:
    import cloudpickle

    with pickle_local_code_by_value(by_value_for, by_value), open(path, "wb") as f:
        cloudpickle.dump(obj, f)


def load(path: str) -> Any:
    """Unpickle a model file.  Only for models from a trusted source (see module docstring)."""
    import cloudpickle

    with open(path, "rb") as f:
        return cloudpickle.load(f)
