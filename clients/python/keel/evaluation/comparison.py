"""Model versions side by side: ``Client.compare_model_versions`` and ``keel models compare``.

For each version: its source run's params and metrics, and its evaluation results (the metrics
``keel.evaluate`` logged on that run, and the mean absolute SHAP value per feature when it
explained the model). Each row says whether the versions differ; an evaluation metric with a
known direction also names the best version(s).

Evaluation metrics are told from training metrics by name, as ``keel.evaluate`` and MLflow's
default evaluator write them: one of the evaluator's metric names (``accuracy_score``,
``roc_auc``, ``root_mean_squared_error``...) after any metric prefix but ``training_``
(autologging's metrics on the training data). SHAP importances come from each
``<prefix>shap_feature_importance.json`` at the root of the run's artifacts (not the
``baseline_`` ones: they explain another model).

A version without a source run (registered from a path), or whose run is gone or unreadable,
is still listed, with a note saying so, and its cells are empty.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from keel.evaluation.explainability import BASELINE_PREFIX, IMPORTANCE_JSON
from keel.evaluation.metrics import CLASSIFIER_METRICS, LOWER_IS_BETTER, NO_DIRECTION, REGRESSOR_METRICS
from keel.exceptions import InvalidArgument, KeelError, NotFound, PermissionDenied

log = logging.getLogger(__name__)

SECTIONS = ("params", "metrics", "evaluation", "explanation")
# MLflow's evaluator metric names, longest first so that f1_score_macro wins over f1_score
_EVALUATION_NAMES = sorted(set(CLASSIFIER_METRICS) | set(REGRESSOR_METRICS), key=len, reverse=True)
_TRAINING_PREFIX = "training_"
MAX_VERSIONS = 20


@dataclass
class ComparedVersion:
    """One version and what was found of its source run."""

    version: str
    stage: str
    status: str
    run_id: str | None
    run_name: str | None = None
    run_status: str | None = None
    note: str | None = None  # why its cells are empty, when they are


@dataclass
class ComparisonRow:
    """One param, metric or evaluation result: version -> value (None where the version has
    none); ``differs`` when the versions whose source run was read do not all have the same
    value (a version without one has nothing to differ by)."""

    section: str
    key: str
    values: dict[str, Any]
    differs: bool
    best: list[str] | None = None  # evaluation metrics with a direction: the best version(s)


@dataclass
class ModelVersionComparison:
    name: str
    versions: list[ComparedVersion]
    rows: list[ComparisonRow] = field(default_factory=list)

    def section(self, name: str) -> list[ComparisonRow]:
        return [row for row in self.rows if row.section == name]

    @property
    def params(self) -> list[ComparisonRow]:
        return self.section("params")

    @property
    def metrics(self) -> list[ComparisonRow]:
        return self.section("metrics")

    @property
    def evaluation(self) -> list[ComparisonRow]:
        return self.section("evaluation")

    @property
    def explanation(self) -> list[ComparisonRow]:
        return self.section("explanation")

    def differences(self) -> list[ComparisonRow]:
        return [row for row in self.rows if row.differs]

    def row(self, section: str, key: str) -> ComparisonRow:
        for candidate in self.rows:
            if candidate.section == section and candidate.key == key:
                return candidate
        raise KeyError(f"{section}.{key}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``{"name", "versions": [...], "params": [...], "metrics": [...],
        "evaluation": [...], "explanation": [...]}``; NaN and infinities become strings."""
        out: dict[str, Any] = {"name": self.name, "versions": [asdict(v) for v in self.versions]}
        for section in SECTIONS:
            out[section] = [
                {k: v for k, v in asdict(row).items() if k != "section" and (k != "best" or v is not None)}
                | {"values": {ver: _jsonable(val) for ver, val in row.values.items()}}
                for row in self.section(section)
            ]
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------
# which metrics are evaluation results
# ---------------------------------------------------------------------------------------------


def _base_name(key: str) -> str | None:
    """The evaluator metric name ``key`` ends with (``val_f1_score_macro`` -> ``f1_score_macro``)."""
    for name in _EVALUATION_NAMES:
        if key.endswith(name):
            return name
    return None


def evaluation_keys(metrics: dict[str, float]) -> set[str]:
    """The metric keys of a run that ``keel.evaluate`` (or MLflow's evaluator) logged."""
    return {key for key in metrics if not key.startswith(_TRAINING_PREFIX) and _base_name(key) is not None}


def _best(values: dict[str, Any], key: str) -> list[str] | None:
    name = _base_name(key)
    if name is None or name in NO_DIRECTION:
        return None
    present = {
        v: float(x) for v, x in values.items() if isinstance(x, int | float) and math.isfinite(float(x))
    }
    if len(present) < 2:
        return None
    pick = min if name in LOWER_IS_BETTER else max
    target = pick(present.values())
    return [v for v, x in present.items() if x == target]


# ---------------------------------------------------------------------------------------------
# gathering
# ---------------------------------------------------------------------------------------------


@dataclass
class _Found:
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)
    explanation: dict[str, float] = field(default_factory=dict)
    run_read: bool = False


def _explanations(client: Any, run_id: str) -> tuple[dict[str, float], str | None]:
    """``<prefix>mean_abs_shap.<feature>`` -> value from each evaluation's SHAP importance file;
    a note when a file could not be read."""
    out: dict[str, float] = {}
    problems = []
    try:
        listed = [f.path for f in client.list_artifacts(run_id) if not f.is_dir]
    except KeelError as exc:
        return out, f"artifacts unreadable: {exc.message}"
    for path in sorted(listed):
        prefix = path[: -len(IMPORTANCE_JSON)]
        if not path.endswith(IMPORTANCE_JSON) or prefix.endswith(BASELINE_PREFIX):
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="keel-compare-") as tmp:
                local = client.download_artifacts(run_id, path, tmp)
                with open(
                    local if os.path.isfile(local) else os.path.join(local, os.path.basename(path))
                ) as f:
                    report = json.load(f)
            for feature, value in report["mean_abs_shap"].items():
                out[f"{prefix}mean_abs_shap.{feature}"] = float(value)
        except (KeelError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{path}: {exc}")
    return out, ("SHAP importances unreadable (" + "; ".join(problems) + ")") if problems else None


def _gather(client: Any, version: Any) -> tuple[ComparedVersion, _Found]:
    compared = ComparedVersion(
        version=str(version.version),
        stage=version.current_stage,
        status=version.status,
        run_id=version.run_id or None,
    )
    found = _Found()
    if not version.run_id:
        compared.note = "no source run (registered from a path, not from a run)"
        return compared, found
    try:
        run = client.get_run(version.run_id)
    except NotFound:
        compared.note = f"source run {version.run_id} not found (deleted?)"
        return compared, found
    except PermissionDenied as exc:
        compared.note = f"source run {version.run_id} cannot be read: {exc.message}"
        return compared, found
    found.run_read = True
    compared.run_name = run.info.run_name or None
    compared.run_status = run.info.status
    if run.info.lifecycle_stage == "deleted":
        compared.note = "source run is deleted (in the trash)"
    metrics = dict(run.data.metrics)
    evaluated = evaluation_keys(metrics)
    found.params = dict(run.data.params)
    found.metrics = {k: v for k, v in metrics.items() if k not in evaluated}
    found.evaluation = {k: v for k, v in metrics.items() if k in evaluated}
    found.explanation, problem = _explanations(client, version.run_id)
    if problem:
        compared.note = problem if compared.note is None else f"{compared.note}; {problem}"
    return compared, found


def _rows(
    section: str, versions: list[str], per_version: dict[str, dict[str, Any]], with_run: set[str]
) -> list[ComparisonRow]:
    keys = sorted({key for values in per_version.values() for key in values})
    rows = []
    for key in keys:
        values = {v: per_version[v].get(key) for v in versions}
        distinct = {json.dumps(_jsonable(x), sort_keys=True) for v, x in values.items() if v in with_run}
        row = ComparisonRow(section, key, values, differs=len(distinct) > 1)
        if section == "evaluation":
            row.best = _best(values, key)
        rows.append(row)
    return rows


def _version_list(versions: Sequence[int | str]) -> list[str]:
    if isinstance(versions, str | int) or not isinstance(versions, Sequence):
        raise InvalidArgument(
            "versions must be a list of version numbers, e.g. [1, 2, 3]", reason="INVALID_VERSIONS"
        )
    out = []
    for v in versions:
        text = str(v).strip()
        if isinstance(v, bool) or not text.isdigit() or int(text) < 1:
            raise InvalidArgument(
                f"version {v!r} is not a version number (a positive integer)", reason="INVALID_VERSIONS"
            )
        out.append(str(int(text)))
    duplicates = sorted({v for v in out if out.count(v) > 1}, key=int)
    if duplicates:
        raise InvalidArgument(f"versions {duplicates} are listed twice", reason="INVALID_VERSIONS")
    if not 2 <= len(out) <= MAX_VERSIONS:
        raise InvalidArgument(
            f"compare needs 2 to {MAX_VERSIONS} versions, got {len(out)}", reason="INVALID_VERSIONS"
        )
    return out


def compare_model_versions(client: Any, name: str, versions: Sequence[int | str]) -> ModelVersionComparison:
    """Compare ``versions`` of registered model ``name`` through ``client`` (a ``keel.Client``).
    An unknown model or version is ``NotFound``, as ``get_model_version`` says."""
    wanted = _version_list(versions)
    model_versions = [client.get_model_version(name, v) for v in wanted]
    gathered = [_gather(client, mv) for mv in model_versions]
    comparison = ModelVersionComparison(name=name, versions=[compared for compared, _ in gathered])
    by_version = {compared.version: found for compared, found in gathered}
    with_run = {compared.version for compared, found in gathered if found.run_read}
    for section in SECTIONS:
        per_version = {v: getattr(found, section) for v, found in by_version.items()}
        comparison.rows.extend(_rows(section, wanted, per_version, with_run))
    return comparison


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_text(comparison: ModelVersionComparison, only_differences: bool = False) -> str:
    """The comparison as aligned text: the versions, then one table per section with a ``*``
    before each row whose values differ (and a BEST column for evaluation metrics)."""
    versions = [v.version for v in comparison.versions]
    lines = [f"model: {comparison.name}", ""]
    header = ("VERSION", "STAGE", "STATUS", "RUN", "RUN STATUS", "NOTE")
    table = [
        (v.version, v.stage, v.status, v.run_id or "-", v.run_status or "-", v.note or "")
        for v in comparison.versions
    ]
    lines += _aligned([header, *table])
    for section in SECTIONS:
        rows = comparison.section(section)
        shown = [r for r in rows if r.differs] if only_differences else rows
        lines.append("")
        if not rows:
            lines.append(f"{section.upper()}: none")
            continue
        if not shown:
            lines.append(f"{section.upper()}: all {len(rows)} equal")
            continue
        with_best = section == "evaluation"
        head = ("", section.upper(), *(f"v{v}" for v in versions), *(("BEST",) if with_best else ()))
        body = [
            (
                "*" if row.differs else "",
                row.key,
                *(_cell(row.values.get(v)) for v in versions),
                *((",".join(f"v{b}" for b in row.best or []),) if with_best else ()),
            )
            for row in shown
        ]
        lines += _aligned([head, *body])
    differing = len(comparison.differences())
    lines += ["", f"* differs ({differing} of {len(comparison.rows)} rows); - : the version has no value"]
    return "\n".join(lines)


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
