"""Attribution methods, registered by name in one explicit table.

Add a method: write ``xaudit/attribution/<family>.py`` with a subclass of
`AttributionMethod`, import it here and add it to ``_METHODS``. The conformance
suite (``tests/test_attribution_conformance.py``) then covers it automatically.
"""

from __future__ import annotations

from xaudit.attribution.base import (
    AttributionContext,
    AttributionMethod,
    AttributionResult,
    MethodParams,
)
from xaudit.attribution.saliency import InputXGradient, Saliency
from xaudit.attribution.deeplift import DeepLift
from xaudit.attribution.gradcam import GradCAM, GradCAMPlusPlus, GuidedGradCAM
from xaudit.attribution.guided import Deconvnet, GuidedBackprop
from xaudit.attribution.integrated_gradients import IntegratedGradients
from xaudit.attribution.lime import Lime
from xaudit.attribution.lrp import LRP
from xaudit.attribution.occlusion import Occlusion
from xaudit.attribution.shap import GradientShap
from xaudit.attribution.smoothgrad import SmoothGrad, VarGrad
from xaudit.errors import ConfigError, choices_message

_METHODS: list[type[AttributionMethod]] = [
    Saliency,
    InputXGradient,
    IntegratedGradients,
    SmoothGrad,
    VarGrad,
    GuidedBackprop,
    Deconvnet,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    DeepLift,
    GradientShap,
    Occlusion,
    Lime,
    LRP,
]

REGISTRY: dict[str, type[AttributionMethod]] = {cls.name: cls for cls in _METHODS}


def get_method(name: str) -> type[AttributionMethod]:
    """The method class registered as ``name``; a wrong name lists the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(choices_message("attribution method", name, REGISTRY)) from None


__all__ = [
    "REGISTRY",
    "AttributionContext",
    "AttributionMethod",
    "AttributionResult",
    "MethodParams",
    "get_method",
]
