"""Optional dependencies: which ``keel-ml`` extra brings which package, and one way to import
them.

``pip install keel-ml`` gives tracking, the registry, artifacts (local and S3), pyfunc models
and ``keel server``. Everything else is an extra (see ``docs/deploy.md``)::

    sklearn   scikit-learn, skops        keel.sklearn, sklearn autologging, serving sklearn models
    pytorch   torch                      keel.pytorch, serving PyTorch models
    eval      scikit-learn, matplotlib,  keel.evaluate (metrics, plots, SHAP explanations),
              pillow, shap               keel.log_image
    postgres  psycopg2-binary            KEEL_DB_URL=postgresql://...
    mysql     pymysql                    KEEL_DB_URL=mysql://...
    server    postgres + mysql + sklearn what a server image needs (deploy/Dockerfile)
    spark     pyspark, pyarrow           keel.pyfunc.spark_udf
    all       every one of the above

A feature whose package is missing raises ``keel.exceptions.MissingExtra`` (a
``FailedPrecondition``, also an ``ImportError``) naming the extra, never a bare
``ModuleNotFoundError`` from deep inside::

    sklearn = require("sklearn", "sklearn")          # the module, or MissingExtra
    # MissingExtra: scikit-learn is not installed: pip install 'keel-ml[sklearn]'

This module is public (the server may use it); it imports nothing optional itself.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType

from keel.exceptions import MissingExtra

DISTRIBUTION = "keel-ml"

# top-level import name -> the distribution pip installs it from (when they differ)
PACKAGES: dict[str, str] = {
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg",
    "pymysql": "pymysql",
    "MySQLdb": "mysqlclient",
}

# extra -> the distributions it adds to the core install (kept equal to pyproject.toml's
# [project.optional-dependencies] by tests/unit/test_extras.py)
EXTRAS: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn", "skops"),
    "pytorch": ("torch",),
    "eval": ("scikit-learn", "matplotlib", "pillow", "shap"),
    "postgres": ("psycopg2-binary",),
    "mysql": ("pymysql",),
    "server": ("psycopg2-binary", "pymysql", "scikit-learn", "skops"),
    "spark": ("pyspark", "pyarrow"),
    "all": (
        "scikit-learn",
        "skops",
        "torch",
        "matplotlib",
        "pillow",
        "shap",
        "psycopg2-binary",
        "pymysql",
        "pyspark",
        "pyarrow",
    ),
}


def install_command(extra: str) -> str:
    """``pip install 'keel-ml[<extra>]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def package_of(module: str) -> str:
    """The distribution that provides the import name ``module`` (``sklearn`` -> ``scikit-learn``)."""
    top = module.split(".")[0]
    return PACKAGES.get(top, top)


def missing_extra(module: str, extra: str, purpose: str = "", cause: BaseException | None = None) -> MissingExtra:
    """The error for a missing optional package: ``<package> is not installed[ (purpose)]: pip
    install 'keel-ml[<extra>]'``. ``cause`` (the ImportError) is named when it is about another
    module (a broken install rather than a missing one)."""
    package = package_of(module)
    state = "is not installed"
    if isinstance(cause, ImportError):
        missing = getattr(cause, "name", None)
        top = module.split(".")[0]
        if not (isinstance(cause, ModuleNotFoundError) and missing in (top, module)):
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            state = f"cannot be imported ({first})"
    why = f" ({purpose})" if purpose else ""
    return MissingExtra(
        f"{package} {state}{why}: {install_command(extra)}",
        extra=extra,
        package=package,
    )


def require(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """Imports and returns ``module``; when it cannot be imported, raises ``MissingExtra`` naming
    the ``keel-ml`` ``extra`` that installs it.

    ``purpose`` says what needed it (``"to load sklearn models"``), shown in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(module, extra, purpose, exc) from exc


def require_any(modules: Sequence[str], extra: str, *, purpose: str = "") -> ModuleType:
    """The first of ``modules`` that imports (alternative drivers, e.g. ``psycopg2`` or
    ``psycopg``); none: ``MissingExtra`` naming the first one and ``extra``."""
    first_error: ImportError | None = None
    for name in modules:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            continue
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            first_error = first_error or exc
    raise missing_extra(modules[0], extra, purpose, first_error)


# database URL scheme -> (extra, drivers peewee can use, preferred first)
DB_DRIVERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "postgresql": ("postgres", ("psycopg2", "psycopg")),
    "postgres": ("postgres", ("psycopg2", "psycopg")),
    "mysql": ("mysql", ("pymysql", "MySQLdb")),
}


def require_db_driver(url: str) -> None:
    """Checks that the driver of a ``postgresql://`` or ``mysql://`` database URL is installed
    (``MissingExtra`` naming ``keel-ml[postgres]`` / ``keel-ml[mysql]`` otherwise); other
    schemes need nothing."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    entry = DB_DRIVERS.get(scheme)
    if entry is not None:
        extra, drivers = entry
        require_any(drivers, extra, purpose=f"the driver of {scheme}:// database URLs")


def is_available(module: str) -> bool:
    """Whether ``module`` is installed (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


__all__ = [
    "DB_DRIVERS",
    "DISTRIBUTION",
    "EXTRAS",
    "PACKAGES",
    "install_command",
    "is_available",
    "missing_extra",
    "package_of",
    "require",
    "require_any",
    "require_db_driver",
]
