"""Findings and feature roles of two runs, matched by their stable names.

A finding's ``id`` (e.g. ``looking.background.gradcam``) names what was tested, so the
same id in two runs is the same question; its status is ``persisting``, ``appearing``
(only in the other run) or ``disappearing`` (only in the reference).
"""

from __future__ import annotations

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def compare_findings(ref_findings: list[dict], other_findings: list[dict]) -> dict:
    """Findings that persist (with any severity change), appear or disappear.

    Returns:
        ``{"persisting": [...], "appearing": [...], "disappearing": [...], "counts": {...}}``;
        persisting entries carry ``severity_reference``, ``severity_other`` and ``change``
        (``same`` | ``escalated`` | ``deescalated``) and both titles.
    """
    ref = {f["id"]: f for f in ref_findings}
    oth = {f["id"]: f for f in other_findings}
    persisting = []
    for fid in sorted(set(ref) & set(oth), key=lambda i: (-_rank(oth[i]), i)):
        a, b = ref[fid], oth[fid]
        delta = _rank(b) - _rank(a)
        persisting.append({
            "id": fid, "check": b.get("check", ""), "severity_reference": a.get("severity"),
            "severity_other": b.get("severity"), "change": "same" if delta == 0 else ("escalated" if delta > 0 else "deescalated"),
            "title_reference": a.get("title", ""), "title_other": b.get("title", ""),
        })
    appearing = [_brief(oth[i]) for i in sorted(set(oth) - set(ref), key=lambda i: (-_rank(oth[i]), i))]
    disappearing = [_brief(ref[i]) for i in sorted(set(ref) - set(oth), key=lambda i: (-_rank(ref[i]), i))]
    return {
        "persisting": persisting, "appearing": appearing, "disappearing": disappearing,
        "counts": {"persisting": len(persisting), "appearing": len(appearing), "disappearing": len(disappearing),
                   "escalated": sum(p["change"] == "escalated" for p in persisting)},
    }


def new_critical(findings_diff: dict) -> list[dict]:
    """Findings critical in the other run that were absent or less severe in the reference."""
    out = [{"id": f["id"], "title": f["title"], "was": None} for f in findings_diff["appearing"] if f["severity"] == "critical"]
    out += [{"id": f["id"], "title": f["title_other"], "was": f["severity_reference"]}
            for f in findings_diff["persisting"] if f["severity_other"] == "critical" and f["change"] == "escalated"]
    return out


def compare_roles(ref_audit: dict, other_audit: dict) -> dict:
    """Changes in the share of features per role tag, and features whose tag changed.

    Features are matched by name (``layer:channel``); between two different models the
    same name need not mean the same unit, which the note says.
    """
    a, b = _roles(ref_audit), _roles(other_audit)
    if a is None or b is None:
        return {"skipped": "the feature-roles check did not run in " + ("the reference" if a is None else "the other run")}
    tags = sorted(set(a["tag_shares"]) | set(b["tag_shares"]))
    shares = {t: {"reference": a["tag_shares"].get(t), "other": b["tag_shares"].get(t),
                  "difference": _sub(b["tag_shares"].get(t), a["tag_shares"].get(t))} for t in tags}
    tag_a = {f["name"]: f["tag"] for f in a.get("features", [])}
    tag_b = {f["name"]: f["tag"] for f in b.get("features", [])}
    common = sorted(set(tag_a) & set(tag_b))
    changed = [{"feature": n, "reference": tag_a[n], "other": tag_b[n]} for n in common if tag_a[n] != tag_b[n]]
    return {"tag_shares": shares, "n_common_features": len(common), "n_changed": len(changed), "changed": changed[:100],
            "only_reference": len(set(tag_a) - set(tag_b)), "only_other": len(set(tag_b) - set(tag_a))}


def _roles(audit: dict) -> dict | None:
    checks = ((audit.get("bias") or {}).get("checks") or {}) if isinstance(audit.get("bias"), dict) else {}
    roles = checks.get("roles")
    if not isinstance(roles, dict) or "tag_shares" not in roles:
        return None
    return roles


def _rank(finding: dict) -> int:
    return SEVERITY_RANK.get(str(finding.get("severity")), 0)


def _brief(finding: dict) -> dict:
    return {"id": finding["id"], "check": finding.get("check", ""), "severity": finding.get("severity"),
            "title": finding.get("title", "")}


def _sub(b, a):
    return None if a is None or b is None else b - a
