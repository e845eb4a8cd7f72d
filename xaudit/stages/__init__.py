"""The stages of an audit, one module each, in the order `xaudit.workflows.audit` runs them:

    validate       config + manifest + images + model -> `Setup` (nothing heavy)
    subject_pass   per subject: predictions, features, attribution maps (NIfTI), record
    ---- dataset level (read the records: resumable, re-run after `merge`) ----
    metrics        classification metrics overall and per group
    attribution    self-check summaries and mean maps per class x group
    rules          surrogate rules (rules.json, rules.md) and their feature maps
    bias           the bias checks and the verdict
    interventions  counterfactual interventions on the images (site properties moved, anatomy kept)
    interventions  site properties moved on a few subjects per cell; the verdict again, with them
    quality        explanation-quality checks on a sample of subjects
    interrogate    what each depth of the network retains (optional)
    report         report.html, report.md, figures/

Each is a plain function taking its inputs and its own config section, returning a frozen
result (``to_dict()`` for ``audit.json``) and writing its own artifact.
"""
