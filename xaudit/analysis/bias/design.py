"""Design check: is a group column (site, scanner, ...) confounded with the label?

When healthy subjects come from one site and patients from another, site and label are the
same partition of the data and no statistic can tell a site signature from pathology
(Zech et al. 2018, PLoS Med 15:e1002683). This check tabulates each group column against
the label, per split and overall, and measures the association with the bias-corrected
Cramer's V (Bergsma 2013, J. Korean Stat. Soc. 42:323) and a chi-square test. It also
lists, per class, the group values the class spans: within-class analyses (probes, share
comparisons) can only run where a class spans two or more values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import chi2_contingency

from xaudit.analysis.bias.findings import Finding, severity_rank
from xaudit.analysis.bias.inputs import group_strings
from xaudit.core.jsonable import to_jsonable
from xaudit.config.bias import BiasParams

ALL = "all"


@dataclass
class ContingencyTable:
    """One group column against the label within one scope (a split or ``all``).

    Attributes:
        counts: group value -> class name -> count.
        class_spans: class name -> the group values it occurs in.
        within_class: class name -> True when it spans >= 2 values with at least
            ``min_group_size`` subjects each (within-class analyses can run).
        cramers_v, chi2, p_value, dof: None when the table has one row or one column.
    """

    column: str
    scope: str
    n: int
    counts: dict[str, dict[str, int]]
    class_spans: dict[str, list[str]]
    within_class: dict[str, bool]
    cramers_v: float | None
    chi2: float | None
    p_value: float | None
    dof: int | None

    @property
    def fully_confounded(self) -> bool:
        """Each class lies in a single group value, and there are >= 2 of each."""
        spans = [s for s in self.class_spans.values() if s]
        return len(self.counts) >= 2 and len(spans) >= 2 and all(len(s) == 1 for s in spans)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__ | {"fully_confounded": self.fully_confounded})


@dataclass
class DesignResult:
    """Contingency tables of every group column, per scope, and their findings."""

    tables: list[ContingencyTable] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature_tests: int = 0  # a design check cannot detect a signature, only a confound

    def table(self, column: str, scope: str = ALL) -> ContingencyTable | None:
        """The table of ``column`` in ``scope``, or None when it was not built."""
        return next((t for t in self.tables if t.column == column and t.scope == scope), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables": [t.to_dict() for t in self.tables],
            "notes": list(self.notes),
            "findings": [f.id for f in self.findings],
        }


def cramers_v(table: np.ndarray) -> tuple[float | None, float | None, float | None, int | None]:
    """Bias-corrected Cramer's V (Bergsma 2013) and the chi-square test of a count table.

    Args:
        table: ``(r, c)`` counts with no empty row or column.

    Returns:
        ``(v, chi2, p, dof)``; all None when r < 2 or c < 2.
    """
    r, c = table.shape
    n = table.sum()
    if r < 2 or c < 2 or n < 2:
        return None, None, None, None
    chi2, p, dof, _ = chi2_contingency(table, correction=False)
    phi2 = chi2 / n
    phi2_corr = max(0.0, phi2 - (r - 1) * (c - 1) / (n - 1))
    r_corr = r - (r - 1) ** 2 / (n - 1)
    c_corr = c - (c - 1) ** 2 / (n - 1)
    denom = min(r_corr - 1, c_corr - 1)
    v = float(np.sqrt(phi2_corr / denom)) if denom > 0 else None
    return v, float(chi2), float(p), int(dof)


def contingency_table(
    column: str, scope: str, values: np.ndarray, labels: np.ndarray,
    class_names: list[str], min_group_size: int,
) -> ContingencyTable:
    """Tabulate known group values against known labels (rows with either missing drop)."""
    strings, known = group_strings(values)
    keep = known & (labels >= 0)
    rows = sorted(set(strings[keep]))
    cols = sorted(set(labels[keep].tolist()))
    counts = np.zeros((len(rows), len(cols)), dtype=int)
    for i, row in enumerate(rows):
        for j, cls in enumerate(cols):
            counts[i, j] = int(np.sum(keep & (strings == row) & (labels == cls)))
    v, chi2, p, dof = cramers_v(counts)
    names = [class_names[c] for c in cols]
    spans = {name: [rows[i] for i in np.flatnonzero(counts[:, j])] for j, name in enumerate(names)}
    within = {name: int(np.sum(counts[:, j] >= min_group_size)) >= 2 for j, name in enumerate(names)}
    table = {row: {name: int(counts[i, j]) for j, name in enumerate(names)} for i, row in enumerate(rows)}
    return ContingencyTable(column, scope, int(keep.sum()), table, spans, within, v, chi2, p, dof)


def check_design(
    labels: np.ndarray, groups: dict[str, np.ndarray], class_names: list[str],
    params: BiasParams, splits: np.ndarray | None = None,
) -> DesignResult:
    """Contingency tables, Cramer's V and confound findings for every group column.

    Findings are raised for the ``all`` scope; a split gets its own finding only when it
    is more severely confounded than the whole data (e.g. a test split from one site).

    Args:
        labels: ``(n,)`` class indices, -1 unknown.
        groups: group column -> ``(n,)`` values.
        class_names: the class names.
        params: thresholds (``confound_cramers_v``, ``confound_cramers_v_critical``,
            ``min_group_size``).
        splits: ``(n,)`` split names, or None.

    Returns:
        A `DesignResult`.
    """
    result = DesignResult()
    if not groups:
        result.notes.append("No group columns were given; the design check has nothing to tabulate.")
        return result
    if not np.any(labels >= 0):
        result.notes.append("No subject has a known label; the design check needs labels.")
        return result
    scopes = [(ALL, np.ones(len(labels), dtype=bool))]
    if splits is not None:
        scopes += [(str(s), splits == s) for s in sorted(set(splits.tolist()))]
    for column, values in groups.items():
        overall = None
        for scope, rows in scopes:
            table = contingency_table(
                column, scope, np.asarray(values)[rows], labels[rows], class_names, params.min_group_size
            )
            result.tables.append(table)
            finding = _confound_finding(table, params)
            if scope == ALL:
                overall = finding
                _note_degenerate(table, result.notes)
            elif finding is None or (overall is not None and
                                     severity_rank(finding.severity) <= severity_rank(overall.severity)):
                continue
            if finding is not None:
                result.findings.append(finding)
    return result


def _note_degenerate(table: ContingencyTable, notes: list[str]) -> None:
    if len(table.counts) < 2:
        notes.append(
            f"Group column {table.column!r} has {len(table.counts)} known value(s); "
            "it cannot be compared between values."
        )
    if len(table.class_spans) < 2:
        notes.append(f"Only {len(table.class_spans)} class has known labels; no label association to test.")


def _confound_finding(table: ContingencyTable, params: BiasParams) -> Finding | None:
    """Critical when fully or nearly confounded, warning when V or a class span says so."""
    if len(table.counts) < 2 or len(table.class_spans) < 2:
        return None
    v = table.cramers_v if table.cramers_v is not None else 0.0
    single = sorted(name for name, span in table.class_spans.items() if len(span) == 1)
    spans_text = "; ".join(f"{name}: {', '.join(span)}" for name, span in table.class_spans.items())
    usable = sorted(name for name, ok in table.within_class.items() if ok)
    where = "" if table.scope == ALL else f" in split {table.scope!r}"
    if table.fully_confounded or v >= params.confound_cramers_v_critical:
        severity = "critical"
    elif v >= params.confound_cramers_v or single:
        severity = "warning"
    else:
        return None
    if table.fully_confounded:
        title = f"{table.column} is fully confounded with the label{where} (each class from one {table.column} value)"
        message = (
            f"Every class comes from a single {table.column} value{where} ({spans_text}). "
            f"{table.column} and label split the subjects the same way, so no statistic can "
            f"separate a {table.column} signature from pathology here, and within-class "
            f"analyses of {table.column} are impossible."
        )
    else:
        title = f"{table.column} is associated with the label{where} (Cramer's V {v:.2f})"
        message = (
            f"The classes are unevenly spread over {table.column} values{where} ({spans_text}). "
            + (f"Classes found in a single {table.column} value ({', '.join(single)}) cannot be "
               f"told apart from that value. " if single else "")
            + (f"Within-class comparisons of {table.column} can run for: {', '.join(usable)}."
               if usable else f"No class spans two {table.column} values with >= "
               f"{params.min_group_size} subjects each, so within-class comparisons cannot run.")
        )
    suffix = "" if table.scope == ALL else f".{table.scope}"
    return Finding(
        id=f"design.confounded.{table.column}{suffix}", check="design", severity=severity,
        title=title, message=message, points_to="design", column=table.column,
        evidence={"cramers_v": table.cramers_v, "chi2": table.chi2, "p_value": table.p_value,
                  "n": table.n, "counts": table.counts, "class_spans": table.class_spans,
                  "single_value_classes": single},
        threshold={"confound_cramers_v": params.confound_cramers_v,
                   "confound_cramers_v_critical": params.confound_cramers_v_critical},
    )
