"""Dataset-bias statistics: does the model decide on pathology or on a site/scanner signature?

One module per check, each a pure function on arrays returning a result with
``to_dict()``, ``findings`` and ``notes``:

    design         group x label contingency, Cramer's V, confounds      `check_design`
    probes         linear probes for group and label, within class        `run_probes`
    roles          per-feature group / label association, tags            `feature_roles`
    looking        attribution shares per region, group comparisons        `attribution_shares`,
                                                                           `compare_attribution_shares`
    mean_maps      running mean maps per class x group                     `MeanMapAccumulator`
    group_metrics  metrics per group and cell with bootstrap intervals     `group_metrics`
    masked_input   outputs with foreground / background blanked            `masked_input_summary`
    concepts       TCAV with group values as concepts                      `tcav`
    spray          spectral clustering of attribution maps (SpRAy)         `spray`
    findings       `Finding`, severities, `verdict`
    run            `run_bias_checks` over `BiasInputs` -> `BiasResult`

Support modules: ``params`` (`BiasParams`, the config's ``bias:`` section), ``inputs``
(`BiasInputs`, missing-value rules), ``bootstrap`` (stratified percentile intervals),
``logistic`` (batched L2 logistic regression for the probes' permutation tests),
``jsonable`` (NaN -> None for ``audit.json``).
"""

from xaudit.analysis.bias.bootstrap import Estimate
from xaudit.analysis.bias.concepts import concept_activation_vector, tcav, tcav_score
from xaudit.analysis.bias.design import check_design, cramers_v
from xaudit.analysis.bias.findings import (
    SEVERITIES,
    Finding,
    findings_at_or_above,
    max_severity,
    severity_rank,
    verdict,
)
from xaudit.analysis.bias.group_metrics import group_metrics
from xaudit.analysis.bias.inputs import BiasInputs
from xaudit.analysis.bias.looking import (
    attribution_shares,
    border_shell,
    compare_attribution_shares,
    foreground_from_image,
)
from xaudit.analysis.bias.masked_input import masked_input_summary
from xaudit.analysis.bias.mean_maps import MeanMapAccumulator
from xaudit.config.bias import BiasParams
from xaudit.analysis.bias.probes import linear_probe, run_probes
from xaudit.analysis.bias.roles import epsilon_squared, feature_roles
from xaudit.analysis.bias.run import BiasResult, run_bias_checks
from xaudit.analysis.bias.spray import downsample_map, spray

__all__ = [
    "SEVERITIES", "BiasInputs", "BiasParams", "BiasResult", "Estimate", "Finding", "MeanMapAccumulator",
    "attribution_shares", "border_shell", "check_design", "compare_attribution_shares",
    "concept_activation_vector", "cramers_v", "downsample_map", "epsilon_squared", "feature_roles",
    "findings_at_or_above", "foreground_from_image", "group_metrics", "linear_probe",
    "masked_input_summary", "max_severity", "run_bias_checks", "run_probes", "severity_rank",
    "spray", "tcav", "tcav_score", "verdict",
]
