"""Self-checks of the maps themselves: a finding when a method's own accounting fails.

LRP's relevance must add up: the input map's total plus what the rules give to biases and
stabilisers equals the explained logit (`xaudit.attribution.lrp.method`). Float32 rounding
keeps the relative error near 1e-5 on the models tested (the MONAI zoo suite); an error
above `CONSERVATION_TOLERANCE` means relevance was lost or made up somewhere the rules do not
reach (an operation without a rule, such as a functional multiplication, or a numerical
breakdown), and that subject's map is not to be trusted as a decomposition of the logit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from xaudit.analysis.bias.findings import Finding

#: relative conservation error above which a map is flagged (1 %; measured <= 1e-3 on the zoo)
CONSERVATION_TOLERANCE = 0.01


def conservation_findings(
    stats: Mapping[str, Mapping[str, np.ndarray]], subject_ids: Sequence[str], tolerance: float = CONSERVATION_TOLERANCE
) -> list[Finding]:
    """One warning per method whose ``conservation_error`` exceeds ``tolerance`` for some subject.

    Args:
        stats: method -> {stat name -> per-subject values ``(n,)``} (`Cohort.stats`).
        subject_ids: the subjects, in the order of the values.
        tolerance: the relative error that fires.

    Returns:
        The findings (``check`` ``attribution``, ``points_to`` ``neutral``), one per method.
    """
    findings = []
    for method, values in stats.items():
        errors = values.get("conservation_error")
        if errors is None:
            continue
        errors = np.asarray(errors, dtype=float)
        bad = ~(errors <= tolerance)  # NaN counts as a failure of the check
        if not bad.any():
            continue
        worst = [subject_ids[i] for i in np.argsort(-np.nan_to_num(errors, nan=np.inf))[: min(5, int(bad.sum()))]]
        largest = float(np.nanmax(errors)) if np.isfinite(errors).any() else float("nan")
        findings.append(Finding(
            id=f"attribution.conservation.{method}",
            check="attribution",
            severity="warning",
            title=f"{method}: relevance not conserved for {int(bad.sum())} of {errors.size} subjects (largest error {largest:.3g})",
            message=(
                f"For these subjects the map's total plus what the rules give to biases and stabilisers differs from the "
                f"explained logit by more than {tolerance:.0%} (worst: {', '.join(worst)}). Relevance was lost or made up "
                "where no rule applies (a functional operation inside forward(), e.g. a multiplication of two "
                "activations) or the propagation broke down numerically: do not read these maps as a decomposition "
                "of the decision. Try composite 'epsilon_plus_flat' or 'zplus', or a gradient method."
            ),
            evidence={"subjects_over": int(bad.sum()), "subjects": int(errors.size), "max_error": largest,
                      "median_error": float(np.nanmedian(errors)) if np.isfinite(errors).any() else None, "worst": worst},
            threshold={"conservation_error": tolerance},
        ))
    return findings
