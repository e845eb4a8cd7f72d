"""One conformance suite over every registered attribution method.

For each method in `xaudit.attribution.REGISTRY`, on a tiny 2D and 3D conv net and on a
tiny MONAI DenseNet (3D, ``ReLU(inplace=True)``): maps have the input's shape, are
float32 and finite; two calls with the same seed agree; a batch of three subjects
with targets [0, 1, 0] gives each subject's single-subject map (which also checks that
per-sample targets are honoured, since the target changes the map); stats are per
sample. A new method only needs an entry in SMALL_PARAMS if its defaults are slow.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from monai.networks.nets import DenseNet
from torch import nn

from xaudit.attribution import REGISTRY, AttributionContext

#: small parameters so the whole suite runs in well under a minute on a shared CPU
SMALL_PARAMS: dict[str, dict] = {
    "integrated_gradients": {"steps": 4},
    "smoothgrad": {"samples": 4},
    "vargrad": {"samples": 4},
    "gradient_shap": {"samples": 4, "stdevs": 0.1},
    "occlusion": {"window": 8},
    "lime": {"samples": 12, "n_segments": 8},
}


class TinyConvNet(nn.Module):
    """Conv-BN-ReLU-pool-Conv-ReLU-global pool-Linear; ``features.4`` is the layer for Grad-CAM."""

    def __init__(self, spatial_dims: int, in_channels: int = 2, classes: int = 2):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.features = nn.Sequential(
            conv(in_channels, 4, 3, padding=1), norm(4), nn.ReLU(), pool(2), conv(4, 6, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(gap(1), nn.Flatten(), nn.Linear(6, classes))

    def forward(self, x):
        return self.head(self.features(x))


def randomise_norm_stats(model: nn.Module) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics, as a trained model has."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0.0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.normal_(0.0, 0.3)
    return model.eval()


def make_case(name: str):
    """(model, layer name, inputs of 3 subjects) for one network/dimension case."""
    torch.manual_seed(0)
    if name == "2d-tiny":
        return randomise_norm_stats(TinyConvNet(2)), "features.4", torch.randn(3, 2, 16, 16)
    if name == "3d-tiny":
        return randomise_norm_stats(TinyConvNet(3)), "features.4", torch.randn(3, 2, 12, 16, 8)
    net = DenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=4, growth_rate=4, block_config=(2, 2))
    return randomise_norm_stats(net), "features.denseblock2", torch.randn(3, 1, 16, 16, 16)


CASES = ["2d-tiny", "3d-tiny", "3d-monai"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is ~20x faster than two on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=CASES)
def case(request):
    model, layer_name, inputs = make_case(request.param)
    ctx = AttributionContext(
        layer=model.get_submodule(layer_name),
        layer_name=layer_name,
        max_batch=5,  # smaller than the expanded batch, so chunks split and mix subjects
        seed=7,
        baseline_mean=inputs.mean(0),
        sample_seeds=torch.tensor([101, 202, 303]),
    )
    return model, inputs, ctx


def subject_ctx(ctx: AttributionContext, i: int) -> AttributionContext:
    """The context of subject i alone (its own seed and per-sample extras)."""
    return dataclasses.replace(ctx, sample_seeds=ctx.sample_seeds[i : i + 1])


def assert_maps_close(actual, expected, what):
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("method_name", sorted(REGISTRY))
def test_method_conformance(method_name, case):
    model, inputs, ctx = case
    method = REGISTRY[method_name](SMALL_PARAMS.get(method_name, {}))
    targets = torch.tensor([0, 1, 0])

    result = method.attribute(model, inputs, targets, ctx)
    maps = result.maps
    assert maps.shape == inputs.shape
    assert maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert maps.abs().sum() > 0, "an all-zero map explains nothing"
    for key, values in result.stats.items():
        assert values.shape == (3,), f"stat {key} must have one value per sample"
    if result.region_weights is not None:
        assert len(result.region_weights) == 3

    again = method.attribute(model, inputs, targets, ctx)
    torch.testing.assert_close(again.maps, maps, rtol=0, atol=0, msg="same seed, same maps")

    for i in range(3):
        single = method.attribute(model, inputs[i : i + 1], targets[i : i + 1], subject_ctx(ctx, i))
        assert_maps_close(single.maps[0], maps[i], f"subject {i} alone vs in the batch")
        for key, values in result.stats.items():
            torch.testing.assert_close(single.stats[key][0], values[i], rtol=1e-3, atol=1e-5)

    # the target must matter, or the batch-vs-single check above proves nothing about targets
    other = method.attribute(model, inputs[1:2], torch.tensor([0]), subject_ctx(ctx, 1))
    scale = float(maps[1].abs().max())
    assert not torch.allclose(other.maps[0], maps[1], rtol=1e-3, atol=1e-3 * scale), "target 0 and 1 give the same map"


@pytest.mark.parametrize("method_name", sorted(REGISTRY))
def test_method_describes_itself(method_name):
    cls = REGISTRY[method_name]
    info = cls.describe()
    assert info["name"] == method_name and info["summary"] and info["reference"]
    method = cls()
    assert method.passes_per_sample() > 0
    assert method.passes_per_sample((16, 16, 16)) > 0


AMP_METHODS = sorted(name for name, cls in REGISTRY.items() if cls.supports_amp)


@pytest.mark.parametrize("method_name", AMP_METHODS)
def test_mixed_precision_maps_match_float32(method_name, case):
    """`attribution.amp`: a method that may run under autocast gives float32 maps that
    correlate >= 0.99 with its float32 maps under float16 autocast (what `auto` picks on
    CUDA; run here with the CPU's autocast). bfloat16 is coarser: measured down to 0.91
    for occlusion, whose logit differences cancel, so it is opt-in only."""
    model, inputs, ctx = case
    method = REGISTRY[method_name](SMALL_PARAMS.get(method_name, {}))
    targets = torch.tensor([0, 1, 0])
    reference = method.attribute(model, inputs, targets, ctx).maps
    with torch.autocast("cpu", dtype=torch.float16):
        mixed = method.attribute(model, inputs, targets, ctx).maps.float()
    for i in range(3):
        if reference[i].std() == 0:  # e.g. a Grad-CAM map that the ReLU zeroes: no correlation to take
            torch.testing.assert_close(mixed[i], reference[i], rtol=0, atol=1e-3)
            continue
        r = torch.corrcoef(torch.stack([reference[i].flatten(), mixed[i].flatten()]))[0, 1]
        assert r >= 0.99, f"{method_name}, subject {i}: correlation {float(r):.4f} with the float32 map"


def test_amp_setting_maps_to_a_dtype():
    from xaudit.stages.subject_pass import autocast_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("off", cuda) is None and autocast_dtype("auto", cpu) is None
    assert autocast_dtype("auto", cuda) == torch.float16
    assert autocast_dtype("bf16", cpu) == torch.bfloat16 and autocast_dtype("fp16", cpu) == torch.float16
