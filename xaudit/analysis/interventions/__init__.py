"""Counterfactual interventions: move one site-specific property of an image, keep the anatomy,
and count how many decisions follow it.

Evidence that does not need a balanced design: when every image of a class comes from one
site, accuracy within a class cannot be compared across sites, but a model whose decision
flips when a patient's intensities are mapped onto the control site's (the anatomy kept)
decides on the scanner, whatever the design.

    operations  the image operations (transplant, landmark standardisation, noise, blur)
    trials      `run_interventions`: which subject gets which property of which site
    effects     `Trial`, `CellEffect`, `InterventionsResult`: flip rates (Wilson), mean
                probability changes (bootstrap), findings
"""

from xaudit.analysis.interventions.effects import WHY, CellEffect, InterventionsResult, Trial, summarise_trials
from xaudit.analysis.interventions.trials import Sample, run_interventions

__all__ = ["WHY", "CellEffect", "InterventionsResult", "Sample", "Trial", "run_interventions", "summarise_trials"]
