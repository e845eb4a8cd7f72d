"""The MONAI model zoo through every registered attribution method.

Each classifier family users bring (MONAI's DenseNet, ResNet with basic and bottleneck
blocks, SEResNet, EfficientNet-BN and a vision transformer), in 2D and 3D, at small widths with random weights and
non-trivial BatchNorm statistics (fixed seeds), through every method in
`xaudit.attribution.REGISTRY`. Each method either works or refuses up front:

- works: finite float32 maps of the input's shape; a batch of two gives each sample's
  single-sample map (batch invariance, float32 precision: `BATCH_RTOL` of the map's
  largest magnitude; LRP's in float64, see `LRP_BATCH_RTOL_FLOAT64`); each sample is explained for its own target (the other target gives
  another map); integrated gradients' completeness error below `IG_TOLERANCE` (slow: 64
  steps); LRP's conservation error below `LRP_TOLERANCE` for every composite (slow, but
  for DenseNet-3D);
- refuses: a `ConfigError` or `ModelError` with a one-line reason, listed in `REFUSALS`
  (e.g. Grad-CAM on a transformer's token layer, LRP on attention).

MONAI's own ViT needs ``einops``, which is not installed here; `tiny_nets.TinyViT` stands in
for it with the same parts (conv patch embedding, attention, LayerNorm, GELU).
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
import torch
from monai.networks import nets
from torch import nn

from tiny_nets import TinyViT
from xaudit.attribution import REGISTRY, AttributionContext
from xaudit.attribution.lrp.composite import COMPOSITES
from xaudit.errors import ConfigError, ModelError

#: relative to the largest magnitude of the map: float32 rounding differs between batch sizes
BATCH_RTOL = 1e-4
#: plus this times the largest logit: maps that are differences of logits (occlusion) carry their rounding
LOGIT_ROUNDING = 1e-6
#: integrated gradients: |sum - (f(x) - f(0))| / (|f(x)| + |f(0)|) at 64 steps
IG_TOLERANCE = 0.05
#: LRP: |sum(R) + absorbed - logit| / |logit| (float32; measured <= 2e-5 on this zoo)
LRP_TOLERANCE = 1e-3
#: LRP's batch invariance is checked in float64, to this share of the map's largest magnitude.
#: In float32 its z+ rule amplifies the forward's rounding: a unit driven almost wholly by its
#: bias shares its relevance by the ratios of near-zero activations, and PyTorch's batch-1 and
#: batch-2 convolutions round those differently. Measured on DenseNet-3D's sample 0 on an AMD
#: Zen 5 CPU: 2e-2 of the map's largest value (1.2e-4 on the CPU these tests were written on;
#: <= 4e-5 on every other model of the zoo); in float64, 0 after the cast to float32.
LRP_BATCH_RTOL_FLOAT64 = 1e-6

SMALL_PARAMS: dict[str, dict] = {
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"samples": 2},
    "vargrad": {"samples": 2},
    "gradient_shap": {"samples": 2, "stdevs": 0.1},
    "occlusion": {"window": 8},
    "lime": {"samples": 8, "n_segments": 4},
}

#: (family, method) -> the reason it is refused (a regex on the one-line message)
REFUSALS: dict[tuple[str, str], str] = {
    ("vit", "gradcam"): "feature map",
    ("vit", "gradcam_plus_plus"): "feature map",
    ("vit", "guided_gradcam"): "feature map",
    ("vit", "guided_backprop"): "has none",
    ("vit", "deconvnet"): "has none",
    ("vit", "lrp"): "no rule for attention",
    # MONAI's ResNet calls one ReLU module (`self.act`) several times per block
    ("resnet", "deeplift"): "called more than once",
    ("resnet_bottleneck", "deeplift"): "called more than once",
    # swish activations: no nn.ReLU for the modified backward rules
    ("efficientnet", "guided_backprop"): "has none",
    ("efficientnet", "deconvnet"): "has none",
    ("efficientnet", "guided_gradcam"): "has none",
}

FAMILIES = ["densenet", "resnet", "resnet_bottleneck", "seresnet", "efficientnet", "vit"]
CASES = [(family, dims) for family in FAMILIES for dims in (2, 3)]


def _build(family: str, dims: int) -> tuple[nn.Module, str]:
    """(model, layer for the Grad-CAM family); small widths, 2 classes, 1 input channel."""
    if family == "densenet":
        net = nets.DenseNet(spatial_dims=dims, in_channels=1, out_channels=2, init_features=4, growth_rate=4, block_config=(2, 2))
        return net, "features.denseblock2"
    if family == "resnet":
        net = nets.ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(4, 8, 8, 8), spatial_dims=dims,
                          n_input_channels=1, num_classes=2)
        return net, "layer4"
    if family == "resnet_bottleneck":  # ResNet-50's block
        net = nets.ResNet(block="bottleneck", layers=(1, 1, 1, 1), block_inplanes=(4, 4, 8, 8), spatial_dims=dims,
                          n_input_channels=1, num_classes=2)
        return net, "layer4"
    if family == "seresnet":
        net = nets.SENet(spatial_dims=dims, in_channels=1, block="se_resnet_bottleneck", layers=(1, 1, 1, 1), groups=1,
                         reduction=2, dropout_prob=None, inplanes=8, downsample_kernel_size=1, input_3x3=False, num_classes=2)
        return net, "layer4"
    if family == "efficientnet":
        blocks = ["r1_k3_s11_e1_i32_o8_se0.25", "r1_k3_s22_e2_i8_o16_se0.25"]
        net = nets.EfficientNet(blocks_args_str=blocks, spatial_dims=dims, in_channels=1, num_classes=2, width_coefficient=0.25,
                                depth_coefficient=1.0, dropout_rate=0.0, image_size=16)
        return net, "_blocks.0"
    return TinyViT(spatial_dims=dims), "blocks"


def trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm running statistics and shifts, as a trained model has."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0.0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.3)
    return model.eval()


@functools.lru_cache(maxsize=None)
def zoo_case(family: str, dims: int):
    torch.manual_seed(0)
    model, layer = _build(family, dims)
    trained_like(model)
    torch.manual_seed(1)
    side = 16 if dims == 3 or family == "seresnet" else 32  # MONAI's SENet has fixed widths (64-2048): keep it small
    inputs = torch.randn(2, 1, *([side] * dims))
    ctx = AttributionContext(layer=model.get_submodule(layer), layer_name=layer, max_batch=8, seed=3,
                             baseline_mean=inputs.mean(0), sample_seeds=torch.tensor([11, 22]))
    with torch.no_grad():
        logit_scale = float(model(inputs).abs().max())
    return model, inputs, ctx, logit_scale


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def single(ctx: AttributionContext, i: int) -> AttributionContext:
    return dataclasses.replace(ctx, sample_seeds=ctx.sample_seeds[i : i + 1], baseline_mean=ctx.baseline_mean)


@functools.lru_cache(maxsize=None)
def zoo_case_float64(family: str, dims: int):
    """`zoo_case` in float64: a copy of its model, its inputs and a context on the copy's layer."""
    model, inputs, ctx, _ = zoo_case(family, dims)
    model64 = copy.deepcopy(model).double()
    ctx64 = dataclasses.replace(ctx, layer=model64.get_submodule(ctx.layer_name), baseline_mean=ctx.baseline_mean.double())
    return model64, inputs.double(), ctx64


def assert_lrp_batch_invariant(method, family: str, dims: int, targets: torch.Tensor) -> None:
    """Each sample's LRP map in a batch of two is its map alone (in float64: `LRP_BATCH_RTOL_FLOAT64`)."""
    model, inputs, ctx = zoo_case_float64(family, dims)
    maps = method.attribute(model, inputs, targets, ctx).maps
    for i in range(2):
        alone = method.attribute(model, inputs[i : i + 1], targets[i : i + 1], single(ctx, i)).maps[0]
        atol = LRP_BATCH_RTOL_FLOAT64 * float(maps[i].abs().max())
        torch.testing.assert_close(alone, maps[i], rtol=0, atol=atol, msg=lambda m: f"sample {i} alone vs in the batch: {m}")


def _assert_refused(method, model, inputs, targets, ctx, reason: str) -> None:
    with pytest.raises((ConfigError, ModelError), match=reason) as caught:
        method.attribute(model, inputs, targets, ctx)
    assert "\n" not in str(caught.value), "a refusal is one line"


@pytest.mark.parametrize("method_name", sorted(REGISTRY))
@pytest.mark.parametrize("family, dims", CASES, ids=[f"{f}-{d}d" for f, d in CASES])
def test_zoo_method_works_or_refuses(family, dims, method_name):
    model, inputs, ctx, logit_scale = zoo_case(family, dims)
    method = REGISTRY[method_name](SMALL_PARAMS.get(method_name, {}))
    targets = torch.tensor([0, 1])
    if (family, method_name) in REFUSALS:
        _assert_refused(method, model, inputs, targets, ctx, REFUSALS[(family, method_name)])
        return
    result = method.attribute(model, inputs, targets, ctx)
    maps = result.maps
    assert maps.shape == inputs.shape and maps.dtype == torch.float32
    assert torch.isfinite(maps).all(), "non-finite map"
    if method_name == "lrp":
        assert_lrp_batch_invariant(method, family, dims, targets)
    else:
        for i in range(2):
            alone = method.attribute(model, inputs[i : i + 1], targets[i : i + 1], single(ctx, i)).maps[0]
            atol = BATCH_RTOL * float(maps[i].abs().max()) + LOGIT_ROUNDING * logit_scale
            torch.testing.assert_close(alone, maps[i], rtol=0, atol=atol, msg=lambda m: f"sample {i} alone vs in the batch: {m}")
    flipped = method.attribute(model, inputs[:1], torch.tensor([1]), single(ctx, 0)).maps[0]
    scale = float(maps[0].abs().max()) or 1.0
    assert not torch.allclose(flipped, maps[0], rtol=0, atol=1e-3 * scale), "target 0 and 1 give the same map"
    if method_name == "lrp":
        assert (result.stats["conservation_error"] < LRP_TOLERANCE).all(), result.stats


def _cases(fast: set[tuple[str, int]]):
    """CASES as params, all but ``fast`` marked slow."""
    return [pytest.param(f, d, id=f"{f}-{d}d", marks=() if (f, d) in fast else pytest.mark.slow) for f, d in CASES]


@pytest.mark.parametrize("composite", sorted(COMPOSITES))
@pytest.mark.parametrize("family, dims", _cases({("densenet", 3)}))
def test_zoo_lrp_conserves_relevance_for_every_composite(family, dims, composite):
    """sum(R) + absorbed = logit within `LRP_TOLERANCE`, finite, batch invariant; or an up-front refusal."""
    model, inputs, ctx, logit_scale = zoo_case(family, dims)
    method = REGISTRY["lrp"]({"composite": composite})
    targets = torch.tensor([0, 1])
    refusal = REFUSALS.get((family, "lrp"))
    if refusal:
        _assert_refused(method, model, inputs, targets, ctx, refusal)
        return
    result = method.attribute(model, inputs, targets, ctx)
    assert torch.isfinite(result.maps).all()
    assert (result.stats["conservation_error"] < LRP_TOLERANCE).all(), result.stats
    assert_lrp_batch_invariant(method, family, dims, targets)


@pytest.mark.slow
@pytest.mark.parametrize("family, dims", CASES, ids=[f"{f}-{d}d" for f, d in CASES])
def test_zoo_integrated_gradients_completeness(family, dims):
    """|sum(IG) - (f(x) - f(0))| <= `IG_TOLERANCE` (|f(x)| + |f(0)|) at 64 Gauss-Legendre steps.

    Relative to the logits rather than to their difference: on random ReLU nets f(x) - f(0)
    can be near 0, and the path integral converges slowly over the BatchNorm-shifted kinks
    (measured at 16 steps: up to 0.12 of the logits on resnet-3d).
    """
    model, inputs, ctx, _ = zoo_case(family, dims)
    targets = torch.tensor([0, 1])
    maps = REGISTRY["integrated_gradients"]({"steps": 64}).attribute(model, inputs, targets, ctx).maps
    with torch.no_grad():
        fx = model(inputs).gather(1, targets.view(-1, 1)).squeeze(1)
        f0 = model(torch.zeros_like(inputs)).gather(1, targets.view(-1, 1)).squeeze(1)
    error = (maps.flatten(1).sum(1) - (fx - f0)).abs() / (fx.abs() + f0.abs())
    assert (error < IG_TOLERANCE).all(), error
