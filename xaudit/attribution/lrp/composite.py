"""LRP composites: which rule each layer of a network gets.

A composite assigns rules by a layer's position and kind, as recommended by Montavon
et al. (2019) and Kohlbrenner et al. (2020, "Towards best practice in
explaining neural network decisions with LRP"): near the output, dense layers take
LRP-epsilon (with a tiny epsilon, LRP-0: they are few and entangled little);
the many convolutional layers in the middle take z+ (alpha=1, beta=0), alpha-beta or
gamma, which favour positive evidence and give less noisy maps; the first layer, which
reads pixel/voxel values rather than ReLU activations, takes a rule made for inputs:
flat, w-square or z^B (bounded inputs).

"The usual composite" here is ``epsilon_plus_flat``: epsilon for Linear layers, z+ for
convolutions, flat for the layer that reads the input. Flat gives relevance to zero-
valued voxels too (background after skull stripping can matter: it is part of the
signal the network sees); ``epsilon_plus`` keeps z+ at the input, where zero voxels
get no relevance.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from xaudit.attribution.lrp.rules import (
    AlphaBeta,
    Box,
    Epsilon,
    Flat,
    Gamma,
    InputRule,
    MiddleRule,
    WSquare,
)

#: composite name -> (rule for Linear, rule for ConvNd, rule for the input layer or None = by kind)
COMPOSITES: dict[str, tuple[str, str, str | None]] = {
    "epsilon": ("epsilon", "epsilon", None),
    "zplus": ("zplus", "zplus", None),
    "alpha_beta": ("alpha_beta", "alpha_beta", None),
    "epsilon_plus": ("epsilon", "zplus", None),
    "epsilon_alpha_beta": ("epsilon", "alpha_beta", None),
    "epsilon_plus_flat": ("epsilon", "zplus", "flat"),
    "epsilon_plus_wsquare": ("epsilon", "zplus", "wsquare"),
    "epsilon_plus_box": ("epsilon", "zplus", "box"),
    "epsilon_gamma_box": ("epsilon", "gamma", "box"),
}


@dataclass(frozen=True)
class RuleSettings:
    """The numeric settings shared by the rules (from the method's parameters)."""

    epsilon: float = 1e-6
    gamma: float = 0.25
    alpha: float = 2.0
    beta: float = 1.0
    input_low: float | None = None
    input_high: float | None = None


def make_rule(name: str, settings: RuleSettings) -> MiddleRule | InputRule:
    """The rule object for a rule name (see `rules.MIDDLE_RULES` and `rules.INPUT_RULES`)."""
    factories = {
        "epsilon": lambda: Epsilon(settings.epsilon),
        "zero": lambda: Epsilon(0.0),
        "zplus": lambda: AlphaBeta(1.0, 0.0, name="zplus"),
        "alpha_beta": lambda: AlphaBeta(settings.alpha, settings.beta),
        "gamma": lambda: Gamma(settings.gamma),
        "flat": Flat,
        "wsquare": WSquare,
        "box": lambda: Box(settings.input_low, settings.input_high),
    }
    return factories[name]()


@dataclass(frozen=True)
class LayerRules:
    """The rules of one layer: used where it reads the model input, and elsewhere."""

    at_input: MiddleRule | InputRule
    elsewhere: MiddleRule | InputRule


def assign_rules(
    layers: dict[str, nn.Module], composite: str, settings: RuleSettings, overrides: dict[str, str]
) -> dict[str, LayerRules]:
    """Rules for every rule layer, from the composite and the per-layer overrides.

    Args:
        layers: dotted name -> Linear/ConvNd module.
        composite: a key of `COMPOSITES`.
        settings: epsilon, gamma, alpha, beta and input bounds.
        overrides: dotted name -> rule name; wins over the composite for that layer.

    Returns:
        dotted name -> `LayerRules`.
    """
    dense, conv, first = COMPOSITES[composite]
    assigned = {}
    for name, module in layers.items():
        kind_rule = make_rule(dense if isinstance(module, nn.Linear) else conv, settings)
        if name in overrides:
            rule = make_rule(overrides[name], settings)
            assigned[name] = LayerRules(at_input=rule, elsewhere=rule)
        else:
            at_input = make_rule(first, settings) if first else kind_rule
            assigned[name] = LayerRules(at_input=at_input, elsewhere=kind_rule)
    return assigned
