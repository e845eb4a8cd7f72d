"""The analyses: pure computations on arrays and results, each returning a typed result.

    metrics       accuracy, balanced accuracy, ROC AUC overall and per group
    stats         the one AUC and the one bootstrap / proportion interval everything uses
    rules         surrogate forest -> rules -> ranking
    bias          design check, probes, feature roles, where the model looks, group metrics, TCAV, SpRAy, verdict
    interventions counterfactual images that move one site property (transplant, harmonisation,
                  bias field, noise, resolution); flip rates with Wilson intervals
    quality       deletion/insertion and randomisation checks of the maps
    interrogate   representation inversion, activation maximisation, retention
    compare       differences between finished runs

An analysis never writes files and never imports `stages`, `workflows` or `report`.
"""
