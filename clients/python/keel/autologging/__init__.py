"""Autologging: ``keel.autolog()`` turns on every integration whose library is installed:
scikit-learn (``keel.autologging.sklearn``) and PyTorch (``keel.autologging.pytorch``:
Lightning's ``Trainer.fit`` and ``torch.utils.tensorboard.SummaryWriter``). What they share
(patching, failure reporting, the run, background sending) is ``keel.autologging.common``.

Autologging never breaks the user's training: a failure to log is reported as a
``KeelAutologgingWarning`` (once per training call) and training goes on. Turning it on
imports no machine-learning library.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from typing import Any

from keel.autologging.common import KeelAutologgingWarning

# flavor name (MLflow's, for exclude_flavors) -> the import name that says it is installed
FLAVORS: dict[str, str] = {"sklearn": "sklearn", "pytorch": "torch"}


def autolog(
    log_models: bool = True,
    log_input_examples: bool = False,
    log_model_signatures: bool = True,
    disable: bool = False,
    silent: bool = False,
    max_tuning_runs: int | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    exclusive: bool = False,
    disable_for_unsupported_versions: bool = False,
    exclude_flavors: Iterable[str] | None = None,
    log_datasets: bool = False,
    log_traces: bool = False,
) -> None:
    """Enable (or, with ``disable=True``, disable) autologging for every supported library that
    is installed, except the ``exclude_flavors`` (``"sklearn"``, ``"pytorch"``), which are left
    as they are. The arguments mean what they mean for ``keel.autologging.sklearn.autolog`` and
    ``keel.autologging.pytorch.autolog``; ``log_input_examples`` and ``max_tuning_runs`` are
    scikit-learn's only. MLflow's ``log_datasets`` and ``log_traces`` ask for what keel does not
    do: anything but False is an ``InvalidArgument``.
    """
    from keel.autologging.common import refuse_not_done
    from keel.exceptions import InvalidArgument

    refuse_not_done("keel", log_datasets=log_datasets, log_traces=log_traces)
    excluded = set([exclude_flavors] if isinstance(exclude_flavors, str) else exclude_flavors or ())
    unknown = sorted(excluded - set(FLAVORS))
    if unknown:
        raise InvalidArgument(
            f"exclude_flavors names {unknown}; keel autologs {sorted(FLAVORS)}", reason="INVALID_ARGUMENT"
        )
    common: dict[str, Any] = {
        "log_models": log_models,
        "log_model_signatures": log_model_signatures,
        "disable": disable,
        "silent": silent,
        "extra_tags": extra_tags,
        "exclusive": exclusive,
        "disable_for_unsupported_versions": disable_for_unsupported_versions,
    }
    if "sklearn" not in excluded and importlib.util.find_spec(FLAVORS["sklearn"]) is not None:
        from keel.autologging import sklearn

        sklearn.autolog(log_input_examples=log_input_examples, max_tuning_runs=max_tuning_runs, **common)
    if "pytorch" not in excluded and importlib.util.find_spec(FLAVORS["pytorch"]) is not None:
        from keel.autologging import pytorch

        pytorch.autolog(**common)


__all__ = ["KeelAutologgingWarning", "autolog"]
