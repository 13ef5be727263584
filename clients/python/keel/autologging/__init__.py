"""Autologging: ``keel.autolog()`` turns on every integration whose library is installed
(today: scikit-learn, see ``keel.autologging.sklearn``).

Autologging never breaks the user's training: a failure to log is reported as a
``KeelAutologgingWarning`` and training goes on.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any


class KeelAutologgingWarning(UserWarning):
    """Something could not be logged; the training call itself went through."""


def autolog(
    log_models: bool = True,
    log_input_examples: bool = False,
    log_model_signatures: bool = True,
    disable: bool = False,
    silent: bool = False,
    max_tuning_runs: int | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    **ignored: Any,
) -> None:
    """Enable (or, with ``disable=True``, disable) autologging for every supported library that
    is installed. Arguments mean what they mean for ``keel.autologging.sklearn.autolog``.

    MLflow's other arguments (``exclusive``, ``log_datasets``, ``disable_for_unsupported_versions``,
    ...) are accepted and ignored so that MLflow code runs unchanged.
    """
    if importlib.util.find_spec("sklearn") is not None:
        from keel.autologging import sklearn

        sklearn.autolog(
            log_models=log_models,
            log_input_examples=log_input_examples,
            log_model_signatures=log_model_signatures,
            disable=disable,
            silent=silent,
            max_tuning_runs=max_tuning_runs,
            extra_tags=extra_tags,
        )


__all__ = ["KeelAutologgingWarning", "autolog"]
