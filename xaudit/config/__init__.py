"""The run configuration: a typed, frozen `Config` read from YAML by `load_config`.

A leaf of the package: it imports only `xaudit.errors` (no torch, MONAI or matplotlib), so
anything may read a config cheaply.

    schema       the sections (data, model, attribution, features, quality, report, ...)
    methods      every attribution method's parameters
    bias, rules, interrogate   the parameters of those analyses' sections
    load         load_config, config_from_dict, apply_override (validation and messages)
    user_code    importing the user's own factory / transform named in a config
"""

from xaudit.config.bias import BiasParams
from xaudit.config.interrogate import InterrogateParams
from xaudit.config.interventions import InterventionsParams
from xaudit.config.load import apply_override, config_from_dict, format_validation_error, load_config, load_yaml
from xaudit.config.rules import RulesParams
from xaudit.config.schema import (
    DEFAULT_METHODS,
    AttributionConfig,
    Config,
    DataConfig,
    FactoryConfig,
    FeaturesConfig,
    ModelConfig,
    MonaiNetConfig,
    QualityConfig,
    ReportConfig,
    TransformsConfig,
)

__all__ = [
    "DEFAULT_METHODS", "AttributionConfig", "BiasParams", "Config", "DataConfig", "FactoryConfig", "FeaturesConfig",
    "InterrogateParams", "InterventionsParams", "ModelConfig", "MonaiNetConfig", "QualityConfig", "ReportConfig", "RulesParams",
    "TransformsConfig", "apply_override", "config_from_dict", "format_validation_error", "load_config", "load_yaml",
]
