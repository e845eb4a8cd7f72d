"""The parameters of every attribution method: pydantic models, no torch.

The config validates ``attribution.methods`` against these without importing the methods
themselves (so `import xaudit.config` stays light); each method class in
``xaudit/attribution/<family>.py`` names its model as ``Params``. `PARAMS` maps the
registered name to it; `tests/test_attribution_conformance.py` checks that it matches
the registry in `xaudit.attribution`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class MethodParams(BaseModel):
    """Base of every method's parameter model: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


BaselineKind = Literal["zeros", "blur", "mean"]


class BaselineParams(MethodParams):
    """Parameters of every method that compares the input against a baseline."""

    baseline: BaselineKind = Field("zeros", description="reference input: zeros, blur (Gaussian-blurred input) or mean (dataset mean input)")
    blur_sigma: float = Field(4.0, gt=0, description="standard deviation of the blur baseline's Gaussian, in voxels of the preprocessed grid")


class SaliencyParams(MethodParams):
    absolute: bool = Field(False, description="take |gradient| (the original paper) instead of the signed gradient")


QuadratureRule = Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle", "riemann_right"]


class IntegratedGradientsParams(BaselineParams):
    steps: int = Field(32, ge=1, description="number of points on the path from baseline to input")
    rule: QuadratureRule = Field("gausslegendre", description="quadrature rule for the path integral (Captum's names)")

    @model_validator(mode="after")
    def _riemann_needs_two_steps(self):
        # Captum's Riemann builders divide the path into steps - 1 intervals
        if self.rule.startswith("riemann") and self.steps < 2:
            raise ValueError(f"steps must be >= 2 with rule {self.rule!r}. Got {self.steps} instead.")
        return self


class SmoothGradParams(MethodParams):
    samples: int = Field(16, ge=1, description="noisy copies of each input")
    noise_level: float = Field(
        0.1, ge=0, description="noise standard deviation as a fraction of each input's intensity range (max - min)"
    )
    base: Literal["saliency", "input_x_gradient"] = Field(
        "saliency", description="map averaged over the noisy copies: gradient, or noisy input times gradient"
    )


class GradCAMParams(MethodParams):
    relu: bool = Field(True, description="keep only positive evidence (the paper); False keeps the signed map")


class DeepLiftParams(BaselineParams):
    pass


class OcclusionParams(BaselineParams):
    window: int | list[int] = Field(8, description="window size in voxels: one int, or one per spatial axis")
    stride: int | list[int] | None = Field(
        None, description="window step in voxels (int or per axis); None = the window (no overlap; window // 2 is smoother and 2^d times slower)"
    )

    @field_validator("window", "stride")
    @classmethod
    def _positive(cls, value):
        values = [value] if isinstance(value, int) else (value or [])
        if any(v < 1 for v in values):
            raise ValueError(f"must be positive voxel counts. Got {value} instead.")
        return value


class GradientShapParams(MethodParams):
    samples: int = Field(16, ge=1, description="(baseline, path point, noise) draws per subject")
    stdevs: float = Field(0.0, ge=0, description="std of Gaussian noise added to the input, in input units (Captum's stdevs)")
    baselines: list[Literal["zeros", "blur", "mean"]] | None = Field(
        None,
        min_length=1,
        description="baseline distribution drawn from uniformly; None = zeros, blur, and mean when available",
    )
    blur_sigma: float = Field(4.0, gt=0, description="sigma of the blur baseline in voxels of the preprocessed grid")


class LimeParams(BaselineParams):
    regions: Literal["slic", "atlas"] = Field("slic", description="slic supervoxels of the first channel, or the atlas labels given by the engine")
    n_segments: int = Field(64, ge=1, description="approximate number of SLIC supervoxels")
    compactness: float = Field(0.1, gt=0, description="SLIC compactness on the [0, 1]-rescaled image (higher = more cubic)")
    samples: int = Field(200, ge=2, description="perturbed inputs per subject (the first keeps every region)")
    kernel_width: float = Field(0.25, gt=0, description="width of the exponential kernel on cosine distance (LIME's image default)")
    ridge_alpha: float = Field(1.0, ge=0, description="L2 penalty of the ridge surrogate (LIME's default 1)")
    output: Literal["logit", "probability"] = Field("logit", description="model output the surrogate explains for the target class")


CompositeName = Literal[
    "epsilon",
    "zplus",
    "alpha_beta",
    "epsilon_plus",
    "epsilon_alpha_beta",
    "epsilon_plus_flat",
    "epsilon_plus_wsquare",
    "epsilon_plus_box",
    "epsilon_gamma_box",
]
RuleName = Literal["epsilon", "zero", "zplus", "alpha_beta", "gamma", "flat", "wsquare", "box"]


class LRPParams(MethodParams):
    composite: CompositeName = Field(
        "epsilon_plus_flat",
        description="rules by layer kind: epsilon_plus_flat = epsilon (Linear), z+ (conv), flat (input layer); "
        "see xaudit.attribution.lrp.composite",
    )
    epsilon: float = Field(
        1e-6,
        ge=0,
        description="epsilon of the epsilon rule; 1e-6 only stabilises (near LRP-0, conserving); larger values "
        "(e.g. 0.25 times the typical activation) absorb weak, contradictory relevance",
    )
    gamma: float = Field(0.25, ge=0, description="gamma of the gamma rule (weight on positive weights)")
    alpha: float = Field(2.0, ge=1, description="alpha of the alpha-beta rule (alpha - beta must be 1)")
    beta: float = Field(1.0, ge=0, description="beta of the alpha-beta rule (alpha - beta must be 1)")
    input_low: float | None = Field(None, description="lowest possible input value for the z^B (box) rule; None = each sample's minimum")
    input_high: float | None = Field(None, description="highest possible input value for the z^B (box) rule; None = each sample's maximum")
    canonize: bool = Field(
        True,
        description="fold BatchNorm into the conv/linear layer it directly follows; the others (all when false) "
        "become explicit per-channel linear layers with the convolution rule",
    )
    layer_rules: dict[str, RuleName] = Field(
        {}, description="per-layer overrides: module path -> rule name (wins over the composite)"
    )

    @model_validator(mode="after")
    def _check_ranges(self):
        if abs(self.alpha - self.beta - 1.0) > 1e-9:
            raise ValueError(f"alpha - beta must equal 1 so that relevance is conserved. Got alpha={self.alpha}, beta={self.beta} instead.")
        if self.input_low is not None and self.input_high is not None and not self.input_low < self.input_high:
            raise ValueError(f"input_low must be below input_high. Got input_low={self.input_low}, input_high={self.input_high} instead.")
        return self


#: registered method name -> its parameter model
PARAMS: dict[str, type[MethodParams]] = {
    "saliency": SaliencyParams,
    "input_x_gradient": MethodParams,
    "integrated_gradients": IntegratedGradientsParams,
    "smoothgrad": SmoothGradParams,
    "vargrad": SmoothGradParams,
    "guided_backprop": MethodParams,
    "deconvnet": MethodParams,
    "gradcam": GradCAMParams,
    "gradcam_plus_plus": GradCAMParams,
    "guided_gradcam": GradCAMParams,
    "deeplift": DeepLiftParams,
    "gradient_shap": GradientShapParams,
    "occlusion": OcclusionParams,
    "lime": LimeParams,
    "lrp": LRPParams,
}

#: methods that need ``model.layer`` (a convolutional layer to weight)
NEEDS_LAYER = frozenset({"gradcam", "gradcam_plus_plus", "guided_gradcam"})
