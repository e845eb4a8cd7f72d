"""The demo cohort and its small models (`xaudit sample-data`).

Modules: `anatomy` (MNI152 template on a working grid), `cohort` (per-subject anatomy and
lesions), `scanner` (site signatures), `design` (splits, labels, sites), `storage`
(atomic writes), `nets` (the demo network), `train` (training and prediction),
`shortcut` (per-cell accuracy check), `generate` (the entry point).
"""

from xaudit.sample.generate import default_sample_dir, generate_sample_data

__all__ = ["default_sample_dir", "generate_sample_data"]
