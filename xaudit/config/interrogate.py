"""The ``interrogate:`` section of the config: which depths to invert, how hard to optimise.

Field names are part of the public config interface; keep them stable. Defaults are sized
so that a ~48^3 input, a small CNN and a handful of subjects finish in about a minute on
a CPU; ``time_budget_s`` caps the whole stage whatever the step count.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class InterrogateParams(BaseModel):
    """Parameters of representation inversion, activation maximisation and retention.

    Methods: representation inversion after Mahendran & Vedaldi (2015, "Understanding deep
    image representations by inverting them", CVPR): find ``x*`` whose layer-L activations
    match the subject's, under an alpha-norm and a total-variation prior. Activation
    maximisation after Erhan et al. (2009, "Visualizing higher-layer features of a deep
    network") with the jitter and frequency regularisers of Mahendran & Vedaldi (2016,
    IJCV 120:233) and Olah et al. (2017, "Feature visualization", Distill), whose pyramid
    parametrisation of the image lets a few hundred Adam steps suffice on a CPU.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: list[str] | None = Field(
        None,
        description=(
            "Module paths to invert at, any order (sorted by depth). None: up to `auto_layers`"
            " conv blocks spread over the network, the last one included."
        ),
    )
    auto_layers: int = Field(4, ge=1, le=12, description="How many blocks to pick when `layers` is None.")
    per_cell: int = Field(1, ge=1, description="Subjects per class x group-value cell (from predictions.csv).")
    group_column: str | None = Field(
        None, description="Group column of the cells; None = the config's first group column."
    )
    max_subjects: int = Field(16, ge=1, description="Cap on the subjects inverted (all in one batch per layer).")
    steps: int = Field(100, ge=1, description="Adam steps per layer (and per maximisation batch), at most.")
    lr: float = Field(0.01, gt=0.0, description="Adam learning rate, in units of the image's intensity range.")
    maximisation_lr: float = Field(
        0.05, gt=0.0, description="Adam learning rate of activation maximisation (its objective is unbounded)."
    )
    pyramid_levels: int = Field(
        4, ge=1, le=8, description="Grids of the image parametrisation (factors 1, 2, 4, ...); 1 = plain voxels."
    )
    tv_weight: float = Field(0.3, ge=0.0, description="Weight of the total-variation prior.")
    tv: Literal["isotropic", "anisotropic"] = Field(
        "isotropic", description="TV of the gradient magnitude (isotropic) or of each axis' difference."
    )
    tv_beta: float = Field(
        1.0, gt=0.0, description="Exponent of the TV prior: 1 keeps edges (scanner borders); Mahendran used 2."
    )
    norm_weight: float = Field(0.01, ge=0.0, description="Weight of the alpha-norm prior (keeps x in range).")
    alpha: float = Field(6.0, ge=1.0, description="Exponent of the alpha-norm prior (Mahendran & Vedaldi: 6).")
    frequency_weight: float = Field(
        0.05, ge=0.0, description="Activation maximisation: weight of the Laplacian (high-frequency) energy."
    )
    jitter: int = Field(2, ge=0, description="Activation maximisation: random shift in voxels per step and axis.")
    start: Literal["noise", "mean"] = Field(
        "noise",
        description=(
            "Where optimisation starts: smooth noise (on a 4x coarser grid) around each input's mean,"
            " or the voxel-wise mean of the chosen subjects (which carries their shared structure"
            " into the start; retention is then counted above the start's own correlation)."
        ),
    )
    noise_scale: float = Field(
        1.0, gt=0.0, description="Spread of the smooth starting noise, relative to the inputs' own spread."
    )
    restrict_to_foreground: bool = Field(
        False,
        description=(
            "Hold voxels outside the foreground at the background value. Off by default: a"
            " border/background artefact can only survive inversion if that region is optimised too."
        ),
    )
    channels: list[str] | None = Field(
        None,
        description=(
            "`layer:chN` names to maximise (conv layers, or `<linear>.input:chN` features)."
            " None: the features of the top rules in rules.json; [] skips maximisation."
        ),
    )
    top_rules: int = Field(3, ge=0, description="With channels None: rules whose features are maximised.")
    max_channels: int = Field(4, ge=0, description="With channels None: at most this many features.")
    border_width: int = Field(2, ge=1, description="Width in voxels of the border shell region.")
    retention_high: float = Field(
        0.5, gt=0.0, le=1.0,
        description="Correlation from which a site region (background/border) counts as kept at the deepest layer.",
    )
    retention_gap: float = Field(
        0.25, gt=0.0, le=2.0,
        description="How much higher the site region's correlation must be than the ROI's for a finding (x2: critical).",
    )
    time_budget_s: float = Field(60.0, gt=0.0, description="Wall-clock cap on all optimisation; stops early and says so.")
    seed: int = Field(0, ge=0, description="Seed of the starting noise and the jitter.")

    @field_validator("layers", "channels")
    @classmethod
    def _no_blank_names(cls, value):
        if value is not None and any(not str(v).strip() for v in value):
            raise ValueError(f"names must be non-empty, got {value}")
        return value
