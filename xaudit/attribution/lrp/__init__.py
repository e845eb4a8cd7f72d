"""Layer-wise relevance propagation (LRP): rules, canonization, composites and the ``lrp`` method.

Modules: `rules` (epsilon, z+, alpha-beta, gamma, flat, w-square, z^B, and the `Ledger`
of absorbed relevance), `canonize` (BatchNorm folding, and the others as explicit linear
layers), `composite` (which layer gets which rule), `propagate` (the patched model copy,
squeeze-and-excitation gates, the relevance pass), `method` (the registered `LRP` method).
"""

from xaudit.attribution.lrp.method import LRP, LRPParams
from xaudit.attribution.lrp.propagate import prepare_model, relevance

__all__ = ["LRP", "LRPParams", "prepare_model", "relevance"]
