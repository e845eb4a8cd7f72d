"""Explanation-quality checks: do the maps explain the model?

- `deletion_insertion`: region perturbation curves against a random order
  (Samek et al. 2017; Petsiuk et al. 2018).
- `randomisation_sanity`: cascading model-parameter randomisation
  (Adebayo et al. 2018).
- `conservation_findings`: a warning when LRP's relevance does not add up for a subject.

Both take a model, inputs, targets and maps (or a method) in batches and return
JSON-able dicts for ``audit.json``.
"""

from xaudit.analysis.quality.conservation import CONSERVATION_TOLERANCE, conservation_findings
from xaudit.analysis.quality.perturbation import deletion_insertion
from xaudit.analysis.quality.randomisation import randomisation_sanity

__all__ = ["CONSERVATION_TOLERANCE", "conservation_findings", "deletion_insertion", "randomisation_sanity"]
