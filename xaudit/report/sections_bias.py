"""Report sections for the bias checks: design, performance by group, masked inputs, probes,
feature roles, TCAV and SpRAy. Each reads its check's part of ``audit.json`` (the dicts
written by `xaudit.analysis.bias`) and returns a `Section`; a skipped check becomes a one-line note.
"""

from __future__ import annotations

from xaudit.report.document import Note, Paragraph, Section, Table
from xaudit.report.figures_charts import masked_input_png, performance_png, probes_png
from xaudit.report.figures_maps import MapRow, map_grid_png
from xaudit.report.format import fmt_ci, fmt_num, fmt_p, fmt_pct, humanize
from xaudit.report.sections_common import maps_usable, notes, safe_figure, skipped

ROLE_TAGS = {
    "group-signature": "varies with a group (site, scanner) and not with the label",
    "pathology": "varies with the label within each group value",
    "mixed": "varies with both the label and a group",
    "confounded": "varies with the label, but the design cannot rule out a group signature",
    "neutral": "varies with neither",
}


def design_section(check: dict | None) -> Section:
    """Group x label counts per split, Cramér's V and whether the design is confounded."""
    section = Section("Design: groups against labels", "design")
    if skipped(section, check, "The design check"):
        return section
    section.add(Paragraph("If a group (site, scanner) and the label split the subjects the same way, no statistic "
                          "can tell a site signature from pathology. Cramér's V is 0 for independence, 1 for a "
                          "full confound."))
    tables = check.get("tables") or []
    overall = {t.get("column"): t.get("counts") for t in tables if t.get("scope") == "all"}
    for table in tables:
        counts = table.get("counts") or {}
        if table.get("scope") != "all" and counts == overall.get(table.get("column")):
            section.add(Note(f"Split {table.get('scope')}: the same counts as all subjects (the only split audited)."))
            continue
        classes = list(dict.fromkeys(c for row in counts.values() for c in row))
        rows = [[str(value), *[fmt_num(row.get(c, 0)) for c in classes], fmt_num(sum(row.values()))]
                for value, row in counts.items()]
        within = ", ".join(f"{c}: {'yes' if ok else 'no'}" for c, ok in (table.get("within_class") or {}).items())
        caption = (f"{table.get('column')} x label, split {table.get('scope')} (n={fmt_num(table.get('n'))}): "
                   f"Cramér's V {fmt_num(table.get('cramers_v'))}, chi² p {fmt_p(table.get('p_value'))}, "
                   f"fully confounded: {'yes' if table.get('fully_confounded') else 'no'}. "
                   f"Within-class comparison possible: {within or 'n/a'}.")
        section.add(Table([str(table.get("column")), *classes, "total"], rows, caption=caption))
    return section.add(*notes(check))


def _overall_table(metrics: dict) -> Table | None:
    overall = metrics.get("overall") or {}
    if not overall:
        return None
    rows = [["all subjects", fmt_num(overall.get("n")), fmt_num(overall.get("accuracy")),
             fmt_num(overall.get("balanced_accuracy")), fmt_num(overall.get("roc_auc"))]]
    for column, values in (metrics.get("by_group") or {}).items():
        rows += [[f"{column}={value}", fmt_num(m.get("n")), fmt_num(m.get("accuracy")), fmt_num(m.get("balanced_accuracy")),
                  fmt_num(m.get("roc_auc"))] for value, m in values.items()]
    predicted = ", ".join(f"{c}: {fmt_num(k)}" for c, k in (metrics.get("prediction_counts") or {}).items())
    return Table(["Subjects", "n", "Accuracy", "Balanced accuracy", "ROC AUC"], rows,
                 caption=f"Point estimates on the labelled subjects. Predictions per class: {predicted or 'n/a'}.")


def performance_section(metrics: dict, check: dict | None) -> Section:
    """Overall metrics, per-group metrics with bootstrap CIs, per-cell recall and disparities."""
    section = Section("Performance by group", "performance")
    table = _overall_table(metrics)
    section.add(table if table else Note("No metrics in audit.json."))
    if not isinstance(check, dict) or "skipped" in check:
        reason = check.get("skipped") if isinstance(check, dict) else "no result in audit.json"
        return section.add(Note(f"Per-group metrics with confidence intervals were skipped: {reason}."))
    overall = check.get("overall") or {}
    names = list(overall) or ["accuracy", "balanced_accuracy", "roc_auc"]
    section.add(Paragraph(f"Bootstrap 95% confidence intervals, evaluated on {check.get('evaluated', 'the labelled subjects')}. "
                          "A model that leans on a site signature performs worse where the signature and the label disagree."))
    rows = [["overall", fmt_num((metrics.get("overall") or {}).get("n")), *[fmt_ci(overall.get(m)) for m in names]]]
    by_column: dict[str, list[dict]] = {}
    for g in check.get("groups") or []:
        by_column.setdefault(str(g.get("column")), []).append(g)
        rows.append([f"{g.get('column')}={g.get('value')}", fmt_num(g.get("n")), *[fmt_ci((g.get("metrics") or {}).get(m)) for m in names]])
    section.add(Table(["Subjects", "n", *[humanize(m) for m in names]], rows))
    if by_column:
        panels = list(by_column.items())
        section.add(safe_figure("performance_by_group", f"Metrics by {', '.join(by_column)} with 95% bootstrap CIs "
                                "(grey: all subjects; dotted line: 0.5).", lambda: performance_png(panels, overall, names)))
    cells = check.get("cells") or []
    if cells:
        section.add(_cells_table(cells))
    disparities = sorted(check.get("disparities") or [], key=lambda d: -((d.get("difference") or {}).get("value") or 0.0))
    if disparities:
        rows = [[str(d.get("column")), humanize(str(d.get("metric"))), str(d.get("class_name") or "all"), str(d.get("best")),
                 str(d.get("worst")), fmt_ci(d.get("difference"))] for d in disparities]
        section.add(Table(["Column", "Metric", "Class", "Best", "Worst", "Difference (95% CI)"], rows,
                          caption="Best minus worst group value of each metric, largest first.", numeric=[False] * 5 + [True]))
    return section.add(*notes(check))


def _cells_table(cells: list[dict]) -> Table:
    """Recall per class x group value, with the cell's size in the training split when it was audited."""
    with_train = any(c.get("n_train") for c in cells)
    rows = [[f"{c.get('column')}={c.get('value')}", str(c.get("class_name")), fmt_num(c.get("n")),
             *([fmt_num(c.get("n_train"))] if with_train else []), fmt_ci(c.get("accuracy"))] for c in cells]
    caption = ("Recall per class within each group value: the cells that were rare in a confounded training set are "
               "where a shortcut fails.")
    if not with_train:
        caption += " (The training split was not audited, so how rare each cell was in training is not shown.)"
    return Table(["Group", "Class", "n", *(["n in training split"] if with_train else []), "Recall (95% CI)"], rows,
                 caption=caption, numeric=[False, False] + [True] * (3 if with_train else 2))


def masked_input_section(check: dict | None) -> Section:
    """How well the model separates the classes with the anatomy or the background blanked."""
    section = Section("Masked-input tests", "masked-input")
    if skipped(section, check, "The masked-input test"):
        return section
    section.add(Paragraph("The model is run again with the foreground (anatomy) blanked and with the background "
                          "blanked. If it still separates the classes from the background alone, it reads something "
                          "other than pathology (scanner noise, field of view, markers). Blanked inputs are out of "
                          "distribution, so a low AUC is weaker evidence than a high one."))
    variants = check.get("variants") or {}
    rows = [[humanize(name), fmt_ci(v.get("auc_vs_label")), fmt_ci(v.get("auc_vs_prediction")), fmt_pct(v.get("agreement")),
             fmt_num(v.get("accuracy"))] for name, v in variants.items()]
    if rows:
        section.add(Table(["Input", "ROC AUC vs label", "ROC AUC vs full-image prediction", "Agreement with full image",
                           "Accuracy"], rows))
        section.add(safe_figure("masked_input", "ROC AUC against the true label for each input variant (95% CI).",
                                lambda: masked_input_png(variants)))
    return section.add(*notes(check))


def probes_section(check: dict | None) -> Section:
    """Linear probes on the layer features: can the label, or a group, be read from them?"""
    section = Section("Probes: what the features encode", "probes")
    if skipped(section, check, "The probes"):
        return section
    section.add(Paragraph("Cross-validated linear probes on the layer features, with permutation p-values. A group "
                          "that is decodable within one class (scope class=...) is encoded by the network beyond "
                          "what the label explains."))
    scores = check.get("scores") or []
    rows = [[str(s.get("target")), str(s.get("scope")), fmt_num(s.get("n")), fmt_num(s.get("balanced_accuracy")),
             fmt_num(s.get("roc_auc")), fmt_p(s.get("p_value")), fmt_num(s.get("chance")), fmt_num(s.get("null_mean"))]
            for s in scores]
    if rows:
        section.add(Table(["Target", "Scope", "n", "Balanced accuracy", "ROC AUC", "p", "Chance", "Null mean"], rows,
                          numeric=[False, False] + [True] * 6))
        section.add(safe_figure("probes", "Balanced accuracy of each probe; the tick marks chance.", lambda: probes_png(scores)))
    else:
        section.add(Note("No probe could run."))
    return section.add(*notes(check))


def roles_section(check: dict | None) -> Section:
    """Share of features per role tag and of the rules' importance, and the most group-laden features."""
    section = Section("Feature roles", "roles")
    if skipped(section, check, "The feature-role analysis"):
        return section
    shares = check.get("tag_shares") or {}
    importance = check.get("importance_shares") or {}
    rows = [[tag, fmt_pct(shares.get(tag)), fmt_pct(importance.get(tag)) if importance else "n/a", ROLE_TAGS.get(tag, "")]
            for tag in shares]
    section.add(Table(["Role", "Share of features", "Share of rule importance", "Meaning"], rows,
                      numeric=[False, True, True, False]))
    features = check.get("features") or []

    def group_strength(f: dict) -> float:
        values = [v for v in (f.get("group_effect_within_class") or {}).values() if v is not None]
        return max(values, default=float("-inf"))  # a negative epsilon² means no effect: rank it last

    top = sorted(features, key=group_strength, reverse=True)[:10]
    if top:
        rows = [[str(f.get("name")), str(f.get("tag")), fmt_num(f.get("label_effect")),
                 "; ".join(f"{k}: {fmt_num(v)}" for k, v in (f.get("group_effect") or {}).items()),
                 "; ".join(f"{k}: {fmt_num(v)}" for k, v in (f.get("group_effect_within_class") or {}).items())]
                for f in top]
        section.add(Table(["Feature", "Role", "Label effect", "Group effect", "Group effect within class"], rows,
                          caption=f"The {len(top)} features most associated with a group within class "
                                  f"(effect sizes: epsilon²), of {len(features)}.", numeric=[False, False, True, False, False]))
    return section.add(*notes(check))


def concepts_section(check: dict | None) -> Section:
    """TCAV: is a group value a concept the network's decision is sensitive to?"""
    section = Section("TCAV: group values as concepts", "tcav")
    if skipped(section, check, "TCAV"):
        return section
    scores = check.get("scores") or []
    if not scores:
        return section.add(Note("No TCAV score could be computed."), *notes(check))
    section.add(Paragraph("TCAV score: the share of a class's subjects whose target logit rises along the direction "
                          "of a group-value concept. \"Random\" scores random subject sets of the concept's size and "
                          "class mix the same way; p is the concept's rank among them. A score far from the random "
                          "ones means the decision is sensitive to the group, not just to any set of subjects."))
    rows = [[f"{s.get('column')}={s.get('value')}", str(s.get("class_name")), fmt_num(s.get("n_concept")), fmt_num(s.get("n_class")),
             f"{fmt_num(s.get('score_mean'))} ± {fmt_num(s.get('score_std'))}",
             f"{fmt_num(s.get('random_mean'))} ± {fmt_num(s.get('random_std'))}", fmt_p(s.get("p_value")),
             fmt_p(s.get("p_adjusted")), "yes" if s.get("class_matched") else "no"] for s in scores]
    section.add(Table(["Concept", "Class", "n concept", "n class", "TCAV score", "Random", "p", "p adjusted", "Class matched"],
                      rows, numeric=[False, False, True, True, True, True, True, True, False]))
    return section.add(*notes(check))


def _counts(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _maps_count(cls: dict) -> str:
    """The maps clustered, and of how many when the class was subsampled (``bias.spray_max_maps``)."""
    total = cls.get("n_class")
    return f"{fmt_num(cls.get('n'))} of {fmt_num(total)}" if total else fmt_num(cls.get("n"))


def spray_section(check: dict | None, method: str | None, cohort, config) -> Section:
    """SpRAy strategy clusters per class, their composition, and their representatives' maps."""
    section = Section("SpRAy: decision strategies", "spray")
    if skipped(section, check, "SpRAy"):
        return section
    section.add(Paragraph(f"Spectral clustering of the {method or 'attribution'} maps of each class: each cluster is a "
                          "strategy. Clusters that follow a group more than the label (adjusted mutual information, "
                          "AMI) mean the model looks at different places depending on the site."))
    classes = check.get("classes") or []
    rows = [[str(c.get("class_name")), _maps_count(c), fmt_num(c.get("n_clusters")), str(c.get("chosen_by")),
             fmt_num(c.get("ami_label")), _counts({k: fmt_num(v) for k, v in (c.get("ami_groups") or {}).items()})] for c in classes]
    if not rows:
        return section.add(Note("No class had enough maps to cluster."), *notes(check))
    section.add(Table(["Class", "Maps", "Clusters", "Chosen by", "AMI with label", "AMI with groups"], rows,
                      numeric=[False, True, True, False, True, False]))
    cluster_rows, map_rows = [], []
    for c in classes:
        for cl in c.get("clusters") or []:
            groups = "; ".join(f"{col}: {_counts(v)}" for col, v in (cl.get("group_counts") or {}).items())
            cluster_rows.append([str(c.get("class_name")), fmt_num(cl.get("index")), fmt_num(cl.get("size")),
                                 str(cl.get("representative")), _counts(cl.get("label_counts") or {}), groups])
            map_rows.append((f"{c.get('class_name')} cluster {cl.get('index')} (n={cl.get('size')})\n"
                             f"representative {cl.get('representative')}", cl.get("representative_index")))
    section.add(Table(["Class", "Cluster", "Size", "Representative", "Labels", "Groups"], cluster_rows,
                      numeric=[False, True, True, False, False, False]))
    if method and maps_usable(cohort, method) and map_rows:
        rows = [MapRow(label, cohort.images_small[i], cohort.maps[method][i]) for label, i in map_rows[:8]
                if isinstance(i, int) and 0 <= i < cohort.n]
        if rows:
            section.add(safe_figure("spray_representatives", f"{method} map of each cluster's representative subject "
                                    "(the member closest to the cluster centre).",
                                    lambda: map_grid_png(rows, cohort.input_affines[0], config.report.slices, f"{method}\nattribution")))
    return section.add(*notes(check))
