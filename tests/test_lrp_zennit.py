"""LRP against Zennit 0.5 (Anders et al. 2021), the reference LRP library, where it runs.

Zennit imports torchvision at import time (``zennit/torchvision.py``, for its ResNet
canonizer) and torchvision would pull a CUDA build of torch into the test environment.
So Zennit is not a dependency: these tests run when ``zennit`` is importable (install it
where you like with ``pip install --no-deps zennit``) and skip otherwise. When torchvision
is absent, a stand-in module with the two classes Zennit's import names is put in
``sys.modules`` (they are only used by Zennit's torchvision ResNet canonizer, not here).

Compared: MONAI's DenseNet (2D and 3D) with ``epsilon`` -- the case that exploded before --
with Zennit's Epsilon rule on the BatchNorms that follow a concatenation, on a bias-free
DenseNet (random BatchNorm scales, zero means and shifts): maps agree to 5e-7. With BatchNorm
shifts they differ: on a one-conv, one-BatchNorm net Zennit's map departs from the
hand-computed epsilon rule for the BatchNorm as a linear layer ``R_x = a x / (a x + c) R_y``,
which xaudit's matches (`tests/test_lrp.py::test_unfolded_batchnorm_matches_the_hand_formula`).
And a plain conv net (every BatchNorm folded) with ``epsilon``,
``epsilon_gamma_box`` (Zennit's generalised, sign-aware Gamma) and ``epsilon_plus_flat``
(Zennit's z+ with ``zero_params=['bias']``: xaudit's z+ leaves biases out).
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch
from monai.networks.nets import DenseNet
from torch import nn

from xaudit.attribution import AttributionContext, get_method
from xaudit.attribution.lrp.canonize import find_foldable_pairs


def _import_zennit():
    if importlib.util.find_spec("zennit") is None:
        pytest.skip("zennit is not installed (optional peer; `pip install --no-deps zennit` to run these)")
    if importlib.util.find_spec("torchvision") is None:
        resnet = types.ModuleType("torchvision.models.resnet")
        resnet.Bottleneck = type("Bottleneck", (nn.Module,), {})
        resnet.BasicBlock = type("BasicBlock", (nn.Module,), {})
        models = types.ModuleType("torchvision.models")
        models.resnet = resnet
        tv = types.ModuleType("torchvision")
        tv.models = models
        for name, module in {"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet}.items():
            sys.modules.setdefault(name, module)
    import zennit.attribution
    import zennit.canonizers
    import zennit.composites
    import zennit.rules
    import zennit.types

    return zennit


@pytest.fixture(scope="module")
def zennit():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _import_zennit()
    torch.set_num_threads(threads)


def trained_like(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0.0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.3)
    return model.eval()


def zennit_relevance(zennit, model, composite, x, targets):
    one_hot = torch.nn.functional.one_hot(targets, 2).float()
    with zennit.attribution.Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True), lambda out: one_hot * out)
    return relevance.detach()


def ours(model, x, targets, **params):
    return get_method("lrp")(params).attribute(model, x, targets, AttributionContext()).maps


def assert_same_maps(actual, expected, rtol):
    for a, e in zip(actual, expected):
        scale = float(e.abs().max())
        assert scale > 0, "degenerate case: an all-zero map"
        torch.testing.assert_close(a, e, rtol=0, atol=rtol * scale)
        r = torch.corrcoef(torch.stack([a.flatten(), e.flatten()]))[0, 1]
        assert r > 0.9999, f"correlation {float(r):.6f}"


@pytest.mark.parametrize("dims", [2, 3])
def test_densenet_epsilon_matches_zennit(zennit, dims):
    torch.manual_seed(0)
    net = trained_like(DenseNet(spatial_dims=dims, in_channels=1, out_channels=2, init_features=4, growth_rate=4,
                                block_config=(2, 2)))
    for module in net.modules():  # bias-free: see the module docstring for BatchNorm shifts
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.zero_()
            module.bias.data.zero_()
        if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)) and module.bias is not None:
            module.bias.data.zero_()
    torch.manual_seed(2)
    x = torch.randn(2, 1, *([16] * dims)).abs()  # positive inputs: bias-free, a random input can leave no path
    targets = torch.tensor([0, 1])
    z = zennit
    layer_map = z.composites.layer_map_base(1e-6) + [
        (z.types.Convolution, z.rules.Epsilon(1e-6)), (z.types.Linear, z.rules.Epsilon(1e-6)),
        (z.types.BatchNorm, z.rules.Epsilon(1e-6)),
    ]
    # Zennit's SequentialMergeBatchNorm pairs DenseNet's last convolution of a block with the transition's norm
    # (which reads the concatenation) and fails; its NamedMergeBatchNorm with xaudit's probe-found pairs is the same folding
    pairs, _ = find_foldable_pairs(net, x[:1])
    canonizer = z.canonizers.NamedMergeBatchNorm([([layer], bn) for layer, bn in pairs])
    composite = z.composites.LayerMapComposite(layer_map, canonizers=[canonizer])
    assert_same_maps(ours(net, x, targets, composite="epsilon"), zennit_relevance(z, net, composite, x, targets), 1e-3)


class PlainNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_gamma_box", "epsilon_plus_flat"])
def test_plain_net_matches_zennit(zennit, composite):
    torch.manual_seed(0)
    net = trained_like(PlainNet())
    torch.manual_seed(3)
    x = torch.randn(2, 1, 16, 16)
    targets = torch.tensor([1, 0])
    z = zennit
    base = z.composites.layer_map_base(1e-6)
    merge = [z.canonizers.SequentialMergeBatchNorm()]
    if composite == "epsilon":
        peer = z.composites.LayerMapComposite(base + [(z.types.Convolution, z.rules.Epsilon(1e-6)),
                                                      (z.types.Linear, z.rules.Epsilon(1e-6))], canonizers=merge)
        mine = ours(net, x, targets, composite="epsilon")
    elif composite == "epsilon_gamma_box":
        low, high = float(x.min()), float(x.max())
        peer = z.composites.EpsilonGammaBox(low=torch.full_like(x, low), high=torch.full_like(x, high), canonizers=merge)
        mine = ours(net, x, targets, composite="epsilon_gamma_box", input_low=low, input_high=high)
    else:
        peer = z.composites.SpecialFirstLayerMapComposite(
            base + [(z.types.Convolution, z.rules.ZPlus(zero_params=["bias"])), (z.types.Linear, z.rules.Epsilon(1e-6))],
            [(z.types.Convolution, z.rules.Flat())], canonizers=merge)
        mine = ours(net, x, targets, composite="epsilon_plus_flat")
    assert_same_maps(mine, zennit_relevance(z, net, peer, x, targets), 1e-3)
