"""The metrics stage: accuracy, balanced accuracy, ROC AUC and counts, overall and per group."""

from __future__ import annotations

from dataclasses import dataclass

from xaudit.analysis.metrics import classification_metrics, metrics_by_group
from xaudit.data.cohort import Cohort


@dataclass(frozen=True)
class MetricsResult:
    """``audit.json``'s ``metrics``: overall, per group value, and how often each class is predicted."""

    overall: dict
    by_group: dict
    prediction_counts: dict[str, int]

    def to_dict(self) -> dict:
        return {"overall": self.overall, "by_group": self.by_group, "prediction_counts": self.prediction_counts}


def metrics_stage(cohort: Cohort) -> MetricsResult:
    """Classification metrics of the network on the audited subjects."""
    return MetricsResult(
        overall=classification_metrics(cohort.labels, cohort.probs),
        by_group=metrics_by_group(cohort.labels, cohort.probs, cohort.groups),
        prediction_counts={c: int((cohort.predicted == k).sum()) for k, c in enumerate(cohort.classes)},
    )
