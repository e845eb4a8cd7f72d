"""Interrogating a trained network: what its representations keep at several depths.

- `inversion`: the input whose layer activations match a subject's (Mahendran & Vedaldi 2015).
- `maximisation`: the input a channel responds to most (Erhan et al. 2009), regularised.
- `retention`: per depth and region, how much of the original the inversion reproduces;
  a finding when a background/border artefact survives while the lesion fades.
The stage that runs all of it on a finished run is `xaudit.stages.interrogate`.
"""

from xaudit.config.interrogate import InterrogateParams

__all__ = ["InterrogateParams"]
