"""The counterfactual interventions' settings: the config's ``interventions:`` section.

Each intervention moves one site-specific property of an image (its background, its
intensity scale, its noise, its resolution) to another site's and keeps the anatomy; the
audit counts how many decisions flip. See `xaudit.analysis.interventions`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUILTIN_INTERVENTIONS = ("background_transplant", "intensity_harmonisation", "bias_field_matching", "noise_matching",
                         "resolution_matching")
InterventionName = Literal["background_transplant", "intensity_harmonisation", "bias_field_matching", "noise_matching",
                           "resolution_matching"]


class InterventionsParams(BaseModel):
    """Which interventions run, on how many subjects, and when a flip rate becomes a finding."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Run the interventions when the model is loaded (not on `merge`).")
    subjects_per_cell: int = Field(
        8, ge=1, description="Audited subjects per group value x class cell that are intervened on "
        "(evenly spaced through the manifest); each costs one forward pass per intervention.")
    max_references: int = Field(
        3, ge=1, description="Other group values (the largest first) whose properties a cell's subjects receive.")
    methods: list[InterventionName] = Field(
        default_factory=lambda: list(BUILTIN_INTERVENTIONS), description="The built-in interventions to run.")
    custom: dict[str, str] = Field(
        default_factory=dict, description="name -> 'module:function' of the user's own interventions, called as "
        "f(image, foreground, references, reference_foregrounds) -> image (see the README).")
    harmonisation: Literal["linear", "landmarks"] = Field(
        "linear", description="Intensity harmonisation: `linear` matches the foreground's median and interquartile "
        "range (gain and contrast scale; every contrast within the anatomy kept), `landmarks` maps piecewise "
        "linearly through percentiles 10 ... 90 (Nyul-Udupa; also a non-linear contrast, but a lesion keeps only "
        "~0.9 of its contrast).")
    min_subjects: int = Field(
        5, ge=1, description="Fewest subjects a cell needs for its flip rate to count as a test "
        "(at 5 of 5 flips the Wilson interval starts at 0.57).")
    flip_rate_warning: float = Field(
        0.2, gt=0, le=1, description="Lower bound of the flip rate's Wilson interval that raises a warning.")
    flip_rate_critical: float = Field(0.5, gt=0, le=1, description="Lower bound of the flip rate's interval that is critical.")
    min_noise_ratio: float = Field(
        1.1, ge=1, description="Noise matching runs on a pair of group values only when one's background noise "
        "is at least this multiple of the other's.")
    min_blur_sigma: float = Field(
        0.3, ge=0, description="Resolution matching runs only when the Gaussian blur that matches the smoother "
        "value's smoothness has at least this sigma, in voxels.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the Wilson and bootstrap intervals.")
    bootstrap: int = Field(1000, ge=10, description="Bootstrap resamples of the mean change of probability.")
    seed: int = Field(0, ge=0, description="Seed of the donor choice, the added noise and the bootstrap.")
    batch_size: int = Field(8, ge=1, description="Intervened images per forward pass.")

    @field_validator("custom")
    @classmethod
    def _specs(cls, value):
        for name, spec in value.items():
            module, sep, attr = spec.partition(":")
            if not sep or not module or not attr:
                raise ValueError(f"`custom.{name}` must look like 'package.module:function'. Got {spec!r} instead.")
            if name in BUILTIN_INTERVENTIONS:
                raise ValueError(f"`custom.{name}` reuses a built-in intervention's name; choose another name.")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> InterventionsParams:
        if self.flip_rate_warning > self.flip_rate_critical:
            raise ValueError(f"`flip_rate_warning` must be <= `flip_rate_critical`. Got {self.flip_rate_warning} > "
                             f"{self.flip_rate_critical}.")
        return self
