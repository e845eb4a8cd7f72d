"""Ranked rules of two runs: which of the top-N persist, appear or disappear.

Thresholds move whenever a model or cohort changes, so two rules are "the same" when they
predict the same class from the same features with the same directions (``feature <=``
or ``feature >``), whatever the thresholds; both texts are shown. The Jaccard overlap of
the features the top-N rules use measures how far the network's apparent reasoning moved.
"""

from __future__ import annotations


def rule_signature(rule: dict) -> str:
    """'lesion <- f1 >, f7 <=': predicted class and the sorted (feature, direction) pairs."""
    tests = sorted({(c["feature"], c["op"]) for c in rule.get("conditions", [])})
    return f"{rule.get('predicted_class')} <- " + ", ".join(f"{f} {op}" for f, op in tests)


def rule_features(rules: list[dict]) -> set[str]:
    return {c["feature"] for r in rules for c in r.get("conditions", [])}


def jaccard(a: set, b: set) -> float | None:
    """|a & b| / |a | b|; None when both are empty."""
    union = a | b
    return len(a & b) / len(union) if union else None


def compare_rules(ref, other, top_n: int) -> dict:
    """Top-N rules that persist, appear or disappear, and the overlap of their features.

    Returns:
        ``{"top_n", "persisting", "appearing", "disappearing", "feature_jaccard",
        "features_reference", "features_other", "fidelity": {...}}``, or ``{"skipped": why}``.
    """
    if ref.rules is None or other.rules is None:
        missing = ref if ref.rules is None else other
        return {"skipped": f"no rules in {missing.name}: {missing.rules_note}"}
    top_a, top_b = ref.rules[:top_n], other.rules[:top_n]
    by_sig_a = _first_by_signature(top_a)
    by_sig_b = _first_by_signature(top_b)
    persisting = [
        {"signature": s, "rank_reference": by_sig_a[s]["rank"], "rank_other": by_sig_b[s]["rank"],
         "text_reference": by_sig_a[s]["text"], "text_other": by_sig_b[s]["text"]}
        for s in sorted(set(by_sig_a) & set(by_sig_b), key=lambda s: by_sig_a[s]["rank"])
    ]
    appearing = [_brief(by_sig_b[s], s) for s in sorted(set(by_sig_b) - set(by_sig_a), key=lambda s: by_sig_b[s]["rank"])]
    disappearing = [_brief(by_sig_a[s], s) for s in sorted(set(by_sig_a) - set(by_sig_b), key=lambda s: by_sig_a[s]["rank"])]
    feats_a, feats_b = rule_features(top_a), rule_features(top_b)
    return {
        "top_n": top_n, "n_reference": len(top_a), "n_other": len(top_b),
        "persisting": persisting, "appearing": appearing, "disappearing": disappearing,
        "feature_jaccard": jaccard(feats_a, feats_b),
        "features_reference": sorted(feats_a), "features_other": sorted(feats_b),
        "fidelity": {"reference": ref.rules_fidelity, "other": other.rules_fidelity,
                     "difference": None if ref.rules_fidelity is None or other.rules_fidelity is None
                     else other.rules_fidelity - ref.rules_fidelity},
    }


def _first_by_signature(rules: list[dict]) -> dict[str, dict]:
    """signature -> the best-ranked rule with it (rules arrive sorted by rank)."""
    out: dict[str, dict] = {}
    for rule in rules:
        out.setdefault(rule_signature(rule), rule)
    return out


def _brief(rule: dict, signature: str) -> dict:
    return {"signature": signature, "rank": rule["rank"], "text": rule["text"], "predicted_class": rule.get("predicted_class"),
            "importance": rule.get("importance"), "support": rule.get("support")}
