"""Model evaluation: ``keel.evaluate`` (MLflow's default evaluator, metric names included) and
validation thresholds.

>>> result = keel.evaluate(model, (X_test, y_test), model_type="classifier",
...                        baseline_model=baseline,
...                        validation_thresholds={"accuracy_score": MetricThreshold(threshold=0.8)})
>>> result.metrics["accuracy_score"]

With shap installed, ``evaluate`` also logs SHAP explanations (``explainability``);
``Client.compare_model_versions`` puts versions' runs and evaluation results side by side
(``comparison``). scikit-learn, pandas, matplotlib and shap load when ``evaluate`` runs, not at
import.
"""

from keel.evaluation.evaluator import EvaluationArtifact, EvaluationResult, evaluate
from keel.evaluation.validation import (
    MetricThreshold,
    MetricValidationFailure,
    ModelValidationFailedException,
)

__all__ = [
    "EvaluationArtifact",
    "EvaluationResult",
    "MetricThreshold",
    "MetricValidationFailure",
    "ModelValidationFailedException",
    "evaluate",
]
