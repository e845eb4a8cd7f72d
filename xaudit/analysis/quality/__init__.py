"""Explanation-quality checks: do the maps explain the model?

- `deletion_insertion`: region perturbation curves against a random order
  (Samek et al. 2017; Petsiuk et al. 2018).
- `randomisation_sanity`: cascading model-parameter randomisation
  (Adebayo et al. 2018).

Both take a model, inputs, targets and maps (or a method) in batches and return
JSON-able dicts for ``audit.json``.
"""

from xaudit.analysis.quality.perturbation import deletion_insertion
from xaudit.analysis.quality.randomisation import randomisation_sanity

__all__ = ["deletion_insertion", "randomisation_sanity"]
