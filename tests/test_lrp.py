"""LRP: hand-computed references, conservation on bias-free networks, canonization, safety.

The conformance suite covers shapes, determinism and batch-vs-single; this file tests
what is special about LRP (Montavon et al. 2019): each rule against its formula on a
small MLP, relevance conservation (input total = explained logit, and layer by layer)
on plain, MONAI DenseNet and MONAI ResNet nets in 2D and 3D, agreement with Captum's
LRP-epsilon where Captum applies, and that the user's model is left untouched.
"""

from __future__ import annotations

import functools

import numpy as np
import pydantic
import pytest
import torch
from monai.networks.nets import DenseNet, ResNet
from torch import nn

from xaudit.attribution import AttributionContext, get_method
from xaudit.attribution.lrp import prepare_model, relevance
from xaudit.attribution.lrp.composite import COMPOSITES, RuleSettings, assign_rules
from xaudit.errors import ConfigError, ModelError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lrp(model, inputs, targets, max_batch=8, **params):
    return get_method("lrp")(params).attribute(model, inputs, targets, AttributionContext(max_batch=max_batch))


# ---------------------------------------------------------------- reference formulas on an MLP


def mlp(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        net[0].bias.normal_(0, 0.5)
        net[2].bias.normal_(0, 0.5)
    return net


def _hand_rule(a, w, b, r_out, rule, eps=0.0, low=None, high=None):
    """Relevance of the inputs ``a`` (J,) of ``z = w @ a + b`` (w: K x J), one loop per (j, k)."""
    J, K = len(a), len(r_out)
    z = w @ a + b
    r_in = np.zeros(J)
    for k in range(K):
        if rule == "epsilon":
            contrib = [a[j] * w[k, j] for j in range(J)]
            denom = z[k] + eps * (1.0 if z[k] >= 0 else -1.0)
        elif rule == "zplus":
            contrib = [max(a[j] * w[k, j], 0.0) for j in range(J)]
            if sum(contrib) == 0:  # no positive contribution: xaudit shares over the negative ones
                contrib = [min(a[j] * w[k, j], 0.0) for j in range(J)]
            denom = sum(contrib)
        elif rule == "gamma":  # sign-aware: the unit's own sign weighs 1 + gamma, bias included
            own = (lambda v: max(v, 0.0)) if z[k] >= 0 else (lambda v: min(v, 0.0))
            contrib = [a[j] * w[k, j] + 0.25 * own(a[j] * w[k, j]) for j in range(J)]
            denom = sum(contrib) + b[k] + 0.25 * own(b[k])
        elif rule == "flat":
            contrib = [1.0] * J
            denom = float(J)
        elif rule == "box":
            contrib = [a[j] * w[k, j] - low[j] * max(w[k, j], 0) - high[j] * min(w[k, j], 0) for j in range(J)]
            denom = sum(contrib)
        if r_out[k] == 0:
            continue
        for j in range(J):
            r_in[j] += contrib[j] / denom * r_out[k]
    return r_in


def hand_lrp(net, x, target, first, second, eps=0.0):
    """LRP of the 2-layer MLP for one sample, computed from the formulas with numpy loops."""
    w1, b1 = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
    w2, b2 = net[2].weight.detach().double().numpy(), net[2].bias.detach().double().numpy()
    x = x.double().numpy()
    h = np.maximum(w1 @ x + b1, 0)
    logits = w2 @ h + b2
    r_out = np.zeros(3)
    r_out[target] = logits[target]
    r_hidden = _hand_rule(h, w2, b2, r_out, second, eps)
    return _hand_rule(x, w1, b1, r_hidden, first, eps, low=np.full(5, x.min()), high=np.full(5, x.max()))


@pytest.mark.parametrize(
    "composite, first, second, eps",
    [
        ("epsilon", "epsilon", "epsilon", 0.3),
        ("epsilon", "epsilon", "epsilon", 0.0),
        ("epsilon_plus_flat", "flat", "epsilon", 0.3),
        ("epsilon_plus_box", "box", "epsilon", 0.3),
    ],
)
def test_mlp_matches_hand_computed_formula(composite, first, second, eps):
    net = mlp()
    torch.manual_seed(1)
    x = torch.randn(4, 5)
    targets = torch.tensor([0, 1, 2, 1])
    result = lrp(net, x, targets, composite=composite, epsilon=eps)
    for i in range(4):
        expected = hand_lrp(net, x[i], int(targets[i]), first, second, eps)
        np.testing.assert_allclose(result.maps[i].double().numpy(), expected, rtol=1e-4, atol=1e-6)


def test_gamma_matches_the_sign_aware_hand_formula():
    """Both layers gamma (signed inputs at the first): z / z_gamma stays in [0, 1] for either sign of z."""
    net = mlp(seed=2)
    torch.manual_seed(4)
    x = torch.randn(4, 5)
    targets = torch.tensor([0, 1, 2, 1])
    result = lrp(net, x, targets, composite="epsilon", layer_rules={"0": "gamma", "2": "gamma"})
    for i in range(4):
        expected = hand_lrp(net, x[i], int(targets[i]), "gamma", "gamma")
        np.testing.assert_allclose(result.maps[i].double().numpy(), expected, rtol=1e-4, atol=1e-6)
    assert (result.stats["conservation_error"] < 1e-5).all()


def test_zplus_matches_hand_formula_with_positive_inputs():
    net = mlp(seed=3)
    x = torch.rand(3, 5) + 0.1
    targets = torch.tensor([2, 0, 1])
    result = lrp(net, x, targets, composite="zplus")
    for i in range(3):
        expected = hand_lrp(net, x[i], int(targets[i]), "zplus", "zplus")
        np.testing.assert_allclose(result.maps[i].double().numpy(), expected, rtol=1e-4, atol=1e-6)


def test_epsilon_matches_captum_lrp_on_a_plain_2d_net():
    captum_lrp = pytest.importorskip("captum.attr").LRP

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            self.conv2, self.relu2, self.pool2 = nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            x = self.pool2(self.relu2(self.conv2(self.pool1(self.relu1(self.conv1(x))))))
            return self.fc(x.view(x.shape[0], -1))

    torch.manual_seed(0)
    net = Plain().eval()
    x = torch.randn(3, 1, 12, 12)
    targets = torch.tensor([0, 2, 1])
    ours = lrp(net, x, targets, composite="epsilon", epsilon=1e-9).maps
    theirs = captum_lrp(net).attribute(x.clone().requires_grad_(True), target=targets)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- conservation on bias-free networks


class PlainNet(nn.Module):
    """Conv-BN-ReLU-MaxPool-Conv-ReLU-AdaptiveAvgPool-Flatten-Linear."""

    def __init__(self, dims: int, act=nn.ReLU):
        super().__init__()
        conv, bn, pool, gap = {
            2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
            3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d),
        }[dims]
        self.features = nn.Sequential(conv(1, 4, 3, padding=1), bn(4), act(), pool(2), conv(4, 6, 3, padding=1), act())
        self.head = nn.Sequential(gap(1), nn.Flatten(), nn.Linear(6, 2))

    def forward(self, x):
        return self.head(self.features(x))


def build(kind: str, dims: int) -> nn.Module:
    # seed 3: every case has target logits well away from 0 (checked in the test), so
    # conservation is not met trivially by an all-zero output
    torch.manual_seed(3)
    if kind == "plain":
        return PlainNet(dims)
    if kind == "densenet":
        return DenseNet(spatial_dims=dims, in_channels=1, out_channels=2, init_features=4, growth_rate=4, block_config=(2, 2))
    return ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 8, 8], spatial_dims=dims, n_input_channels=1, num_classes=2)


def trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and biases, as after training."""
    torch.manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
            if isinstance(getattr(module, "bias", None), torch.Tensor):
                module.bias.normal_(0, 0.3)
    return model.eval()


def bias_free(model: nn.Module) -> nn.Module:
    """Every bias zero, BatchNorm a pure per-channel scaling (zero mean and beta)."""
    trained_like(model)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(getattr(module, "bias", None), torch.Tensor):
                module.bias.zero_()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
    return model


def case_input(dims: int) -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(3, 1, *([16] * dims))


NETS = [(kind, dims) for kind in ("plain", "densenet", "resnet") for dims in (2, 3)]


@pytest.mark.parametrize("kind, dims", NETS)
@pytest.mark.parametrize("composite", ["epsilon", "zplus", "epsilon_plus_flat", "alpha_beta"])
def test_relevance_sums_to_the_logit_on_bias_free_networks(kind, dims, composite):
    net = bias_free(build(kind, dims))
    x = case_input(dims)
    targets = torch.tensor([0, 1, 1])
    with torch.no_grad():
        logits = net(x).gather(1, targets.view(-1, 1)).squeeze(1)
    assert logits.abs().min() > 1e-2, "degenerate test network: a logit is ~0"
    result = lrp(net, x, targets, composite=composite, epsilon=1e-9)
    total = result.maps.flatten(1).sum(1)
    torch.testing.assert_close(total, logits, rtol=1e-2, atol=0)
    assert (result.stats["conservation_error"] < 0.01).all()
    torch.testing.assert_close(result.stats["relevance_sum"], total)


def test_absorbed_share_reports_absorption_by_bias_and_epsilon():
    """What biases and epsilon absorb is `absorbed_share`; with it, relevance balances to float precision."""
    x = case_input(2)
    targets = torch.tensor([0, 1, 1])
    free = bias_free(build("plain", 2))
    small = lrp(free, x, targets, composite="epsilon", epsilon=1e-9).stats
    large = lrp(free, x, targets, composite="epsilon", epsilon=1.0).stats
    biased = lrp(trained_like(build("plain", 2)), x, targets, composite="epsilon", epsilon=1e-9).stats
    assert (small["absorbed_share"].abs() < 1e-3).all()
    assert (large["absorbed_share"].abs() > 0.1).all(), "a large epsilon absorbs relevance, which the statistic must show"
    assert (biased["absorbed_share"].abs() > 1e-2).any(), "biases absorb relevance, which the statistic must show"
    for stats in (small, large, biased):
        assert (stats["conservation_error"] < 1e-4).all(), "sum(R) + absorbed must equal the logit"


def deep_densenet(dims: int = 3) -> nn.Module:
    """DenseNet121's depth at a small width: where pass-through BatchNorms made epsilon explode."""
    torch.manual_seed(0)
    net = DenseNet(spatial_dims=dims, in_channels=1, out_channels=2, init_features=4, growth_rate=4, block_config=(6, 12, 24, 16))
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.normal_(0, 0.3)
    return net.eval()


@pytest.mark.slow
@pytest.mark.parametrize("composite", sorted(COMPOSITES))
def test_epsilon_does_not_explode_on_densenet121_depth(composite):
    """Before BatchNorms became explicit layers: |R| 5.6e9 and a relevance sum 1e10 times the logit at 32^3.

    Measured now (32^3, these seeds): every composite's conservation error below 1e-4; with the old
    pass-through BatchNorms, `epsilon` gave relevance sums 1e12 and 3e15 times the logits.
    """
    net = deep_densenet()
    torch.manual_seed(5)
    x = torch.randn(2, 1, 32, 32, 32)
    targets = torch.tensor([0, 1])
    with torch.no_grad():
        logits = net(x).gather(1, targets.view(-1, 1)).squeeze(1)
    result = lrp(net, x, targets, composite=composite)
    assert torch.isfinite(result.maps).all()
    assert (result.stats["conservation_error"] < 1e-3).all(), result.stats
    assert (result.maps.flatten(1).sum(1).abs() < 10 * logits.abs() + 1.0).all(), "relevance exploded"


def test_unfolded_batchnorms_become_rule_layers():
    """DenseNet's pre-activation norms (after a concatenation) are explicit per-channel linear layers."""
    net = trained_like(build("densenet", 3))
    x = case_input(3)
    rules_for = functools.partial(assign_rules, composite="epsilon", settings=RuleSettings(), overrides={})
    prepared = prepare_model(net, x[:1], rules_for)
    assert "features.denseblock1.denselayer1.layers.norm1" in prepared.batchnorm_layers
    assert "features.transition1.norm" in prepared.batchnorm_layers
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in prepared.model.modules())
    with torch.no_grad():
        torch.testing.assert_close(prepared.model(x), net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("composite", ["epsilon", "zplus"])
def test_canonize_false_makes_every_batchnorm_a_layer(composite):
    """Without folding every BatchNorm is an explicit layer: same logits, relevance still balanced."""
    net = trained_like(build("densenet", 2))
    x = case_input(2)
    rules_for = functools.partial(assign_rules, composite=composite, settings=RuleSettings(), overrides={})
    prepared = prepare_model(net, x[:1], rules_for, canonize=False)
    assert prepared.folded == [] and "features.norm0" in prepared.batchnorm_layers
    result = lrp(net, x, torch.tensor([0, 1, 1]), composite=composite, canonize=False)
    assert torch.isfinite(result.maps).all() and (result.stats["conservation_error"] < 1e-4).all()


def test_unfolded_batchnorm_matches_the_hand_formula():
    """A BatchNorm after a concatenation is the linear layer ``y = a x + c``: epsilon gives ``R_x = a x / y R_y``."""

    class CatNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 1, bias=False)
            self.bn = nn.BatchNorm2d(3)
            self.head = nn.Linear(3, 2, bias=False)

        def forward(self, x):
            h = self.conv(x)
            h = torch.cat([h[:, :2], h[:, 2:]], 1)  # the BatchNorm does not follow the convolution: not folded
            return self.head(torch.relu(self.bn(h)).mean((2, 3)))

    torch.manual_seed(0)
    net = CatNorm().eval()
    with torch.no_grad():
        net.bn.running_mean.normal_(0, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.bias.normal_(0, 0.5)
    x = torch.randn(2, 1, 2, 2)
    result = lrp(net, x, torch.tensor([0, 1]), composite="epsilon", epsilon=0.0)
    with torch.no_grad():
        h = net.conv(x)
        y = net.bn(h)
        a = (net.bn.weight / torch.sqrt(net.bn.running_var + net.bn.eps)).view(1, 3, 1, 1)
        w = net.head.weight[[0, 1]].view(2, 3, 1, 1)
        r_y = torch.relu(y) * w / 4
        r_h = a * h / y * r_y
        expected = (x * net.conv.weight.view(1, 3, 1, 1) / h * r_h).sum(1, keepdim=True)
    torch.testing.assert_close(result.maps, expected, rtol=1e-4, atol=1e-7)


def test_squeeze_excitation_gate_gets_no_relevance():
    """SE gates: all relevance of ``x * gate`` goes to ``x``, so a bias-free SE net conserves it."""
    from monai.networks.nets import SENet

    torch.manual_seed(0)
    net = SENet(spatial_dims=2, in_channels=1, block="se_resnet_bottleneck", layers=(1, 1, 1, 1), groups=1, reduction=2,
                dropout_prob=None, inplanes=8, downsample_kernel_size=1, input_3x3=False, num_classes=2)
    net = bias_free(net)
    x = case_input(2)
    targets = torch.tensor([0, 1, 1])
    result = lrp(net, x, targets, composite="zplus")
    with torch.no_grad():
        logits = net(x).gather(1, targets.view(-1, 1)).squeeze(1)
    # the gate's own Linear biases still absorb nothing: the gate branch is a constant
    torch.testing.assert_close(result.maps.flatten(1).sum(1), logits, rtol=1e-3, atol=0)


def test_attention_is_refused_up_front():
    from tiny_nets import TinyViT

    torch.manual_seed(0)
    with pytest.raises(ModelError, match="no rule for attention.*MultiheadAttention"):
        lrp(TinyViT().eval(), torch.randn(1, 1, 16, 16), torch.tensor([0]))


def test_relevance_is_conserved_layer_by_layer():
    net = bias_free(build("plain", 3))
    x = case_input(3)
    targets = torch.tensor([1, 0, 1])
    layers = ["features.0", "features.4", "head.2"]
    for composite in ("epsilon", "zplus", "alpha_beta"):
        rules_for = functools.partial(assign_rules, composite=composite, settings=RuleSettings(epsilon=1e-9), overrides={})
        prepared = prepare_model(net, x[:1], rules_for)
        maps, logits, sums = relevance(prepared, x, targets, record=layers)
        for name in layers:
            torch.testing.assert_close(sums[name], logits, rtol=1e-3, atol=0, msg=f"{composite} at {name}")
        torch.testing.assert_close(maps.flatten(1).sum(1), logits, rtol=1e-3, atol=0)


def test_unfolded_batchnorm_conserves_relevance_under_zplus():
    """DenseNet's pre-activation norms cannot be folded; under z+ their shifts must neither absorb nor create relevance."""
    net = trained_like(build("densenet", 3))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)) and module.bias is not None:
                module.bias.zero_()
    x = case_input(3)
    # z+ leaves biases (also those of folded norms) out of the propagation: only the
    # unfolded norms' handling can change the total
    result = lrp(net, x, torch.tensor([0, 1, 1]), composite="zplus")
    assert (result.stats["conservation_error"] < 0.01).all()


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_plus_box"])
def test_zero_padded_input_still_gets_the_input_rule(composite):
    """EfficientNet pads the input before its stem: the input rule applies, the border's share is absorbed."""

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.pad = nn.ConstantPad2d((1, 0, 1, 0), 0.0)
            self.net = PlainNet(2)

        def forward(self, x):
            return self.net(self.pad(x))

    net = bias_free(Padded())
    x = case_input(2)
    result = lrp(net, x, torch.tensor([0, 1, 1]), composite=composite)
    assert result.maps.shape == x.shape
    assert (result.stats["conservation_error"] < 1e-5).all()
    assert (result.stats["absorbed_share"].abs() > 1e-3).all(), "the padded border takes a share under the input rule"


def test_input_layer_rule_needs_a_layer_reading_the_input():
    class Normalising(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = PlainNet(2)

        def forward(self, x):
            return self.net((x - 0.5) * 2.0)

    net = Normalising().eval()
    x = case_input(2)
    with pytest.raises(ModelError, match="epsilon_plus"):
        lrp(net, x, torch.tensor([0, 1, 1]), composite="epsilon_plus_flat")
    result = lrp(net, x, torch.tensor([0, 1, 1]), composite="epsilon_plus")
    assert torch.isfinite(result.maps).all() and result.maps.abs().sum() > 0


def test_non_homogeneous_activations_pass_relevance_through():
    net = bias_free(PlainNet(3, act=nn.ELU))
    x = case_input(3)
    result = lrp(net, x, torch.tensor([0, 1, 0]), composite="epsilon", epsilon=1e-9)
    assert (result.stats["conservation_error"] < 0.01).all()


# ---------------------------------------------------------------- canonization and the user's model


@pytest.mark.parametrize("kind", ["plain", "densenet", "resnet"])
def test_prepared_copy_computes_the_same_logits(kind):
    net = trained_like(build(kind, 3))
    x = case_input(3)
    rules_for = functools.partial(assign_rules, composite="epsilon_plus_flat", settings=RuleSettings(), overrides={})
    prepared = prepare_model(net, x[:1], rules_for)
    with torch.no_grad():
        expected = net(x)
    targets = torch.tensor([0, 1, 1])
    _, logits, _ = relevance(prepared, x, targets)
    torch.testing.assert_close(logits, expected.gather(1, targets.view(-1, 1)).squeeze(1), rtol=1e-4, atol=1e-5)
    expected_folded = {
        "plain": {"features.1"},
        "densenet": {"features.norm0", "features.denseblock1.denselayer1.layers.norm2", "features.denseblock1.denselayer2.layers.norm2",
                     "features.denseblock2.denselayer1.layers.norm2", "features.denseblock2.denselayer2.layers.norm2"},
        "resnet": {"bn1"} | {f"layer{i}.0.bn{j}" for i in range(1, 5) for j in (1, 2)} | {f"layer{i}.0.downsample.1" for i in (2, 3, 4)},
    }[kind]
    assert set(prepared.folded) == expected_folded


def test_user_model_is_not_modified():
    net = trained_like(build("resnet", 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = case_input(3)
    with torch.no_grad():
        logits_before = net(x)
    lrp(net, x, torch.tensor([0, 1, 0]))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any("_lrp_original_forward" in vars(m) or "forward" in vars(m) for m in net.modules())
    assert isinstance(net.bn1, nn.BatchNorm3d)
    with torch.no_grad():
        torch.testing.assert_close(net(x), logits_before)


def test_cached_copy_follows_changes_to_the_model():
    net = trained_like(build("plain", 2))
    x = case_input(2)
    method = get_method("lrp")({"composite": "epsilon"})
    ctx = AttributionContext()
    first = method.attribute(net, x, torch.tensor([0, 0, 0]), ctx).maps
    with torch.no_grad():
        net.head[2].weight.mul_(-1.0)
    second = method.attribute(net, x, torch.tensor([0, 0, 0]), ctx).maps
    torch.testing.assert_close(second, -first, rtol=1e-4, atol=1e-6)


def test_chunking_does_not_change_maps():
    net = trained_like(build("densenet", 3))
    x = case_input(3)
    targets = torch.tensor([1, 0, 1])
    whole = lrp(net, x, targets, max_batch=3)
    single = lrp(net, x, targets, max_batch=1)
    torch.testing.assert_close(whole.maps, single.maps, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- parameters


def test_layer_rule_override_changes_only_that_layer():
    net = trained_like(build("plain", 2))
    x = case_input(2)
    targets = torch.tensor([0, 1, 1])
    base = lrp(net, x, targets, composite="epsilon_plus")
    override = lrp(net, x, targets, composite="epsilon_plus", layer_rules={"features.4": "epsilon"})
    everywhere = lrp(net, x, targets, composite="epsilon")
    assert not torch.allclose(base.maps, override.maps)
    # plain net: features.0 is z+ in both epsilon_plus variants, epsilon in the 'epsilon' composite
    assert not torch.allclose(override.maps, everywhere.maps)


def test_invalid_parameters_are_rejected_with_their_names():
    with pytest.raises(pydantic.ValidationError, match="alpha - beta must equal 1"):
        get_method("lrp")({"alpha": 2.0, "beta": 0.5})
    with pytest.raises(pydantic.ValidationError, match="input_low must be below input_high"):
        get_method("lrp")({"input_low": 1.0, "input_high": 0.0})
    with pytest.raises(pydantic.ValidationError):
        get_method("lrp")({"composite": "epsilon_plus_flatt"})
    net = trained_like(build("plain", 2))
    x = case_input(2)
    with pytest.raises(ConfigError, match="Did you mean 'features.4'"):
        lrp(net, x, torch.tensor([0, 1, 1]), layer_rules={"featurs.4": "epsilon"})
    with pytest.raises(ConfigError, match="features.5"):
        lrp(net, x, torch.tensor([0, 1, 1]), layer_rules={"features.5": "epsilon"})  # a ReLU
    with pytest.raises(ConfigError, match="reads an intermediate tensor"):
        lrp(net, x, torch.tensor([0, 1, 1]), layer_rules={"features.4": "flat"})
