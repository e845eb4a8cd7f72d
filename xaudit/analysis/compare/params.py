"""What a comparison is asked to do: resampling sizes, seed, rule depth, regression thresholds.

Field names are part of the public Python interface (``compare_runs(..., params)``) and are
recorded in ``compare.json`` so a comparison can be repeated exactly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xaudit.errors import ConfigError, XauditUsageError, choices_message

METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "roc_auc")
"""Metrics compared between runs (recomputed from each run's predictions.csv)."""

FINDINGS_ONLY = "findings"
"""``--fail-on-regression findings``: only a new critical finding is a regression."""


class CompareParams(BaseModel):
    """Parameters of `xaudit.analysis.compare.compare_runs`.

    Uncertainty: metric differences get percentile bootstrap intervals (Efron & Tibshirani
    1993, ch. 13), subjects resampled within each run; attribution-share differences get a
    permutation test (two-sample, or sign-flip when the runs hold the same subjects).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for metric CIs (0 = no CIs).")
    permutations: int = Field(2000, ge=0, description="Permutations for the attribution-share tests (0 = no test).")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Level of the bootstrap intervals.")
    seed: int = Field(0, ge=0, description="Seed of every resampling; same seed, same numbers.")
    pairing: Literal["auto", "independent"] = Field(
        "auto",
        description=(
            "'auto' resamples the same subjects in both runs when their labelled subjects are"
            " identical (e.g. model v1 vs v2 on one cohort), which is the right design for paired"
            " data; 'independent' always resamples each run on its own."
        ),
    )
    top_n_rules: int = Field(10, ge=1, description="Ranked rules compared per run.")
    allow_partial: bool = Field(
        False, description="Compare the common part of incompatible runs and list what was left out."
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="metric -> largest tolerated drop (e.g. {'accuracy': 0.05}); see `regressions`.",
    )


def make_params(**kwargs) -> CompareParams:
    """`CompareParams` from keyword arguments; a bad value raises `ConfigError` naming the key."""
    try:
        params = CompareParams(**kwargs)
    except ValidationError as exc:
        problems = "; ".join(
            f"`compare.{'.'.join(str(p) for p in e['loc'])}` {e['msg']}. Got {e.get('input')!r} instead." for e in exc.errors()
        )
        raise ConfigError(problems) from None
    check_thresholds(params.thresholds)
    return params


def check_thresholds(thresholds: dict[str, float]) -> None:
    """Raise `ConfigError` for an unknown metric or a negative threshold."""
    for metric, value in thresholds.items():
        if metric not in METRICS:
            raise ConfigError(choices_message("metric", metric, METRICS))
        if not value >= 0:  # also rejects NaN
            raise ConfigError(f"the threshold of {metric!r} must be a number >= 0. Got {value!r} instead.")


def parse_thresholds(text: str) -> dict[str, float]:
    """``"accuracy:0.05,roc_auc:0.05"`` -> ``{"accuracy": 0.05, "roc_auc": 0.05}``.

    ``"findings"`` alone gives ``{}``: no metric threshold, only new critical findings count.

    Raises:
        XauditUsageError: malformed text, unknown metric or negative value.
    """
    text = (text or "").strip()
    if text == FINDINGS_ONLY:
        return {}
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or number is None:
            raise XauditUsageError(
                f"--fail-on-regression expects metric:drop pairs separated by commas, e.g."
                f" 'accuracy:0.05,roc_auc:0.05' (or 'findings'). Got {item!r} in {text!r}."
            )
        out[name.strip()] = number
    if not out:
        raise XauditUsageError(
            "--fail-on-regression needs at least one metric:drop pair, e.g. 'accuracy:0.05' (or 'findings')."
        )
    try:
        check_thresholds(out)
    except ConfigError as exc:
        raise XauditUsageError(f"--fail-on-regression: {exc}") from None
    return out
