"""What is special about each attribution method: its defining property, equality to
Captum where Captum is the reference, and clear errors. The shared checks (shape,
determinism, batch vs single, per-sample targets) are in test_attribution_conformance.py.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import GradientShap as CaptumGradientShap
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import LayerAttribution, LayerGradCam
from captum.attr import Occlusion as CaptumOcclusion
from monai.networks.nets import DenseNet
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter
from sklearn.metrics.pairwise import cosine_distances
from torch import nn

from test_attribution_conformance import TinyConvNet, randomise_norm_stats
from xaudit.attribution import REGISTRY, AttributionContext
from xaudit.attribution._baselines import gaussian_blur
from xaudit.attribution.base import expanded_chunks, sample_generators, stable_seed
from xaudit.attribution.lime import lime_kernel_weights
from xaudit.attribution.shap import expected_gradients
from xaudit.errors import ConfigError, ModelError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is ~20x faster than two on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def method(name, **params):
    return REGISTRY[name](params)


def monai_net():
    torch.manual_seed(0)
    net = DenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=4, growth_rate=4, block_config=(2, 2))
    return randomise_norm_stats(net)


def tiny(spatial_dims=3, in_channels=2):
    torch.manual_seed(1)
    return randomise_norm_stats(TinyConvNet(spatial_dims, in_channels))


class SmoothNet(nn.Module):
    """Softplus/tanh conv net: smooth, so the IG path integral converges fast."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Softplus(), nn.Conv3d(4, 4, 3, padding=1), nn.Tanh())
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3, 4)))


class GapNet(nn.Module):
    """conv features -> global average pool -> linear: Grad-CAM equals CAM (Zhou et al. 2016)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 5, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3, 4)))


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ---------------------------------------------------------------- shared helpers


def test_gaussian_blur_matches_scipy():
    x = torch.randn(2, 1, 9, 10, 11)
    ours = gaussian_blur(x, 2.0)
    ref = np.stack([gaussian_filter(v[0].numpy().astype(np.float64), 2.0, mode="nearest", truncate=3.0) for v in x])
    torch.testing.assert_close(ours[:, 0], torch.from_numpy(ref).float(), rtol=1e-4, atol=1e-5)


def test_sample_generators_depend_on_seed_and_subject_only():
    ctx = AttributionContext(seed=3, sample_seeds=torch.tensor([5, 9]))
    first = [torch.rand(4, generator=g) for g in sample_generators(ctx, 2, torch.device("cpu"))]
    alone = torch.rand(4, generator=sample_generators(dataclasses.replace(ctx, sample_seeds=torch.tensor([9])), 1, "cpu")[0])
    torch.testing.assert_close(first[1], alone)
    assert not torch.equal(first[0], first[1])
    other_seed = torch.rand(4, generator=sample_generators(dataclasses.replace(ctx, seed=4), 2, "cpu")[0])
    assert not torch.equal(first[0], other_seed)
    assert stable_seed("sub-001") == stable_seed("sub-001") != stable_seed("sub-002")


def test_expanded_chunks_cover_every_pair_once_in_order():
    pairs = [(int(s), int(d)) for subj, draw in expanded_chunks(3, 4, 5) for s, d in zip(subj, draw)]
    assert pairs == [(s, d) for s in range(3) for d in range(4)]
    assert max(len(subj) for subj, _ in expanded_chunks(3, 4, 5)) == 5


# ---------------------------------------------------------------- integrated gradients


def test_integrated_gradients_completeness_with_enough_steps():
    torch.manual_seed(2)
    net, x = SmoothNet().eval(), torch.randn(2, 1, 8, 8, 8)
    result = method("integrated_gradients", steps=64).attribute(net, x, torch.tensor([0, 1]), AttributionContext(max_batch=16))
    assert (result.stats["completeness_error"] < 0.01).all(), result.stats
    with torch.no_grad():
        gap = net(x)[[0, 1], [0, 1]] - net(torch.zeros_like(x))[[0, 1], [0, 1]]
    torch.testing.assert_close(result.maps.flatten(1).sum(1), gap, rtol=0.01, atol=1e-6)
    coarse = method("integrated_gradients", steps=2, rule="riemann_left").attribute(net, x, torch.tensor([0, 1]), AttributionContext())
    assert (coarse.stats["completeness_error"] > result.stats["completeness_error"]).all()


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle", "riemann_right"])
@pytest.mark.parametrize("baseline", ["zeros", "blur", "mean"])
def test_integrated_gradients_equals_captum(rule, baseline):
    net, x, targets = tiny(), torch.randn(3, 2, 8, 8, 8), torch.tensor([1, 0, 1])
    ctx = AttributionContext(max_batch=4, baseline_mean=torch.randn(2, 8, 8, 8))
    params = {"steps": 5, "rule": rule, "baseline": baseline, "blur_sigma": 1.5}
    ours = method("integrated_gradients", **params).attribute(net, x, targets, ctx).maps
    base = {"zeros": torch.zeros_like(x), "blur": gaussian_blur(x, 1.5), "mean": ctx.baseline_mean.expand_as(x)}[baseline]
    for i in range(3):
        ref = CaptumIG(net).attribute(x[i : i + 1], baselines=base[i : i + 1], target=int(targets[i]), n_steps=5, method=rule)
        torch.testing.assert_close(ours[i : i + 1], ref.float(), rtol=1e-4, atol=1e-6)


def test_integrated_gradients_equals_captum_on_monai_densenet():
    net, x, targets = monai_net(), torch.randn(2, 1, 16, 16, 16), torch.tensor([0, 1])
    ours = method("integrated_gradients", steps=6).attribute(net, x, targets, AttributionContext(max_batch=5)).maps
    for i in range(2):
        ref = CaptumIG(net).attribute(x[i : i + 1], target=int(targets[i]), n_steps=6, method="gausslegendre")
        torch.testing.assert_close(ours[i : i + 1], ref, rtol=1e-4, atol=1e-7)


def test_baseline_errors_are_clear():
    net, x = tiny(), torch.randn(1, 2, 8, 8, 8)
    with pytest.raises(ConfigError, match=r"integrated_gradients\.baseline.*mean"):
        method("integrated_gradients", baseline="mean").attribute(net, x, torch.tensor([0]), AttributionContext())
    with pytest.raises(ValidationError):
        method("integrated_gradients", steps=0)
    with pytest.raises(ValidationError, match="riemann_trapezoid"):
        method("integrated_gradients", steps=1, rule="riemann_trapezoid")
    with pytest.raises(ValidationError):
        method("smoothgrad", samples=0)


# ---------------------------------------------------------------- smoothgrad / vargrad


def test_smoothgrad_is_seeded():
    net, x, t = tiny(), torch.randn(2, 2, 8, 8, 8), torch.tensor([0, 1])
    sg = method("smoothgrad", samples=3)
    a = sg.attribute(net, x, t, AttributionContext(seed=1)).maps
    torch.testing.assert_close(sg.attribute(net, x, t, AttributionContext(seed=1)).maps, a, rtol=0, atol=0)
    assert not torch.allclose(sg.attribute(net, x, t, AttributionContext(seed=2)).maps, a)
    # without per-sample seeds, the same batch still gives the same maps
    chunked = sg.attribute(net, x, t, AttributionContext(seed=1, max_batch=1)).maps
    torch.testing.assert_close(chunked, a, rtol=1e-5, atol=1e-7)


def test_smoothgrad_and_vargrad_on_a_linear_model():
    # the gradient of a linear model is constant: the noise cannot change it
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 2)).eval()
    x, t = torch.randn(2, 2, 6, 6), torch.tensor([0, 1])
    ctx = AttributionContext(max_batch=3)
    sal = method("saliency").attribute(net, x, t, ctx).maps
    torch.testing.assert_close(method("smoothgrad", samples=5, noise_level=0.5).attribute(net, x, t, ctx).maps, sal)
    assert method("vargrad", samples=5, noise_level=0.5).attribute(net, x, t, ctx).maps.abs().max() < 1e-10
    # input x gradient over noisy inputs averages to about input x gradient
    ixg = method("smoothgrad", samples=400, noise_level=0.05, base="input_x_gradient").attribute(net, x, t, ctx).maps
    torch.testing.assert_close(ixg, sal * x, rtol=0, atol=0.02 * float((sal * x).abs().max()))


def test_smoothgrad_without_noise_is_saliency():
    net, x, t = monai_net(), torch.randn(2, 1, 16, 16, 16), torch.tensor([1, 0])
    sal = method("saliency").attribute(net, x, t, AttributionContext()).maps
    torch.testing.assert_close(method("smoothgrad", samples=2, noise_level=0.0).attribute(net, x, t, AttributionContext()).maps, sal)


# ---------------------------------------------------------------- guided backprop, deconvnet


class _ReferenceRule(torch.autograd.Function):
    """ReLU whose backward is guided backprop's (or deconvnet's) rule, written out."""

    @staticmethod
    def forward(ctx, x, deconv):
        ctx.save_for_backward(x)
        ctx.deconv = deconv
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (grad.clamp(min=0) if ctx.deconv else grad.clamp(min=0) * (x > 0)), None


class _RuleReLU(nn.Module):
    def __init__(self, deconv):
        super().__init__()
        self.deconv = deconv

    def forward(self, x):
        return _ReferenceRule.apply(x, self.deconv)


def replace_relus(model, make):
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, child_name, make())
    return model


@pytest.mark.parametrize("name,deconv", [("guided_backprop", False), ("deconvnet", True)])
def test_guided_rules_on_inplace_relu_monai_net(name, deconv):
    net, x, t = monai_net(), torch.randn(3, 1, 16, 16, 16), torch.tensor([0, 1, 1])
    ours = method(name).attribute(net, x, t, AttributionContext(max_batch=2)).maps
    reference_net = replace_relus(net, lambda: _RuleReLU(deconv))
    xx = x.clone().requires_grad_(True)
    reference_net(xx).gather(1, t.view(-1, 1)).sum().backward()
    torch.testing.assert_close(ours, xx.grad, rtol=1e-5, atol=1e-9)
    if not deconv:
        ref = quiet(CaptumGuidedBackprop(net).attribute, x[1:2].clone().requires_grad_(True), target=1)
        torch.testing.assert_close(ours[1:2], ref, rtol=1e-5, atol=1e-9)


def test_guided_backprop_refuses_a_model_without_relu_modules():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.PReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.randn(1, 1, 6, 6))
    with pytest.raises(ModelError, match=r"no.*PReLU|PReLU"):
        method("guided_backprop").attribute(net.eval(), torch.randn(1, 1, 6, 6), torch.tensor([0]), AttributionContext())


# ---------------------------------------------------------------- Grad-CAM family


def layer_ctx(net, name, **kw):
    return AttributionContext(layer=net.get_submodule(name), layer_name=name, **kw)


@pytest.mark.parametrize("relu", [True, False])
def test_gradcam_equals_captum_layer_gradcam(relu):
    net, x, t = tiny(), torch.randn(3, 2, 8, 12, 10), torch.tensor([1, 0, 1])
    ours = method("gradcam", relu=relu).attribute(net, x, t, layer_ctx(net, "features.4", max_batch=2)).maps
    for i in range(3):
        cam = LayerGradCam(net, net.features[4]).attribute(x[i : i + 1], target=int(t[i]), relu_attributions=relu)
        ref = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="trilinear")
        torch.testing.assert_close(ours[i : i + 1], ref.expand(-1, 2, -1, -1, -1), rtol=1e-4, atol=1e-7)


def test_gradcam_honours_each_samples_target_in_one_batch():
    net, x = monai_net(), torch.randn(2, 1, 16, 16, 16)
    ctx = layer_ctx(net, "features.denseblock2")
    gc = method("gradcam", relu=False)
    batch = gc.attribute(net, x, torch.tensor([0, 1]), ctx).maps
    alone = [gc.attribute(net, x[i : i + 1], torch.tensor([i]), ctx).maps for i in range(2)]
    torch.testing.assert_close(batch, torch.cat(alone), rtol=1e-4, atol=1e-7)
    swapped = gc.attribute(net, x, torch.tensor([1, 0]), ctx).maps
    assert not torch.allclose(swapped[0], batch[0], rtol=1e-3)


def test_gradcam_is_cam_on_a_global_pooling_net():
    torch.manual_seed(4)
    net, x = GapNet().eval(), torch.randn(2, 1, 6, 6, 6)
    ctx = layer_ctx(net, "features")
    ours = method("gradcam", relu=False).attribute(net, x, torch.tensor([0, 1]), ctx).maps
    cam = torch.einsum("nk...,nk->n...", net.features(x), net.fc.weight[[0, 1]]) / 216
    torch.testing.assert_close(ours[:, 0], cam.detach(), rtol=1e-4, atol=1e-7)
    # Grad-CAM++ with a constant gradient g_k = w_k / Z: weight_k = Z relu(g_k) / (2 + g_k sum A_k)
    acts, w = net.features(x).detach(), net.fc.weight.detach()[[0, 1]]
    g = w / 216
    weight = 216 * g.clamp(min=0) / (2 + g * acts.sum((2, 3, 4)))
    expected = torch.einsum("nk...,nk->n...", acts, weight)
    ours_pp = method("gradcam_plus_plus", relu=False).attribute(net, x, torch.tensor([0, 1]), ctx).maps
    torch.testing.assert_close(ours_pp[:, 0], expected, rtol=1e-4, atol=1e-7)


def test_gradcam_plus_plus_is_the_published_formula_up_to_exp_of_the_score():
    """Chattopadhay et al. (2018), eq. 19, with the class score ``Y = exp(S)``, computed literally.

    The first, second and third derivatives of ``Y`` with respect to each activation ``A_ij``
    are taken by autograd, one element at a time (the exact diagonal, no shortcut):
    ``alpha = d2 / (2 d2 + sum_ab A_ab d3)``, ``w_k = sum_ij alpha_ij relu(d1_ij)``,
    ``map = sum_k w_k A_k``. With a linear head (GAP + Linear) the formula is exact, and it is
    ``exp(S)`` times xaudit's map, which drops that per-sample factor (see `gradcam_pp_weights`).
    """
    torch.manual_seed(6)
    net, x = GapNet().eval(), torch.randn(2, 1, 3, 3, 3)
    ctx = layer_ctx(net, "features")
    targets = torch.tensor([0, 1])
    ours = method("gradcam_plus_plus", relu=False).attribute(net, x, targets, ctx).maps[:, 0]
    for n in range(2):
        acts = net.features(x[n : n + 1]).detach().requires_grad_(True)
        score = lambda a: torch.exp(net.fc(a.mean((2, 3, 4)))[0, targets[n]])  # noqa: E731
        (d1,) = torch.autograd.grad(score(acts), acts, create_graph=True)
        d2, d3 = torch.zeros_like(acts), torch.zeros_like(acts)
        for idx in range(acts.numel()):
            (g2,) = torch.autograd.grad(d1.view(-1)[idx], acts, create_graph=True)
            (g3,) = torch.autograd.grad(g2.view(-1)[idx], acts, retain_graph=True)
            d2.view(-1)[idx], d3.view(-1)[idx] = g2.view(-1)[idx].detach(), g3.view(-1)[idx]
        a = acts.detach()
        alpha = d2 / (2 * d2 + a.sum((2, 3, 4), keepdim=True) * d3)
        weights = (alpha * d1.detach().clamp(min=0)).sum((2, 3, 4), keepdim=True)
        published = (weights * a).sum(1)[0]
        with torch.no_grad():
            scale = torch.exp(net(x[n : n + 1])[0, targets[n]])
        torch.testing.assert_close(ours[n] * scale, published, rtol=1e-4, atol=1e-7)


def test_gradcam_layer_followed_by_inplace_relu():
    # norm5's output is overwritten by class_layers.relu(inplace=True): the map must not change
    net = monai_net()
    clean = copy.deepcopy(net)
    for m in clean.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x, t = torch.randn(2, 1, 16, 16, 16), torch.tensor([0, 1])
    for name in ("gradcam", "gradcam_plus_plus"):
        ours = method(name, relu=False).attribute(net, x, t, layer_ctx(net, "features.norm5")).maps
        ref = method(name, relu=False).attribute(clean, x, t, layer_ctx(clean, "features.norm5")).maps
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-8)


def test_guided_gradcam_equals_captum():
    net, x, t = monai_net(), torch.randn(2, 1, 16, 16, 16), torch.tensor([1, 0])
    ours = method("guided_gradcam").attribute(net, x, t, layer_ctx(net, "features.denseblock2", max_batch=1)).maps
    layer = net.get_submodule("features.denseblock2")
    for i in range(2):
        xi = x[i : i + 1].clone().requires_grad_(True)
        ref = quiet(CaptumGuidedGradCam(net, layer).attribute, xi, target=int(t[i]), interpolate_mode="trilinear")
        torch.testing.assert_close(ours[i : i + 1], ref, rtol=1e-4, atol=1e-10)


def test_layer_methods_report_missing_or_unusable_layers():
    net, x, t = tiny(), torch.randn(1, 2, 8, 8, 8), torch.tensor([0])
    for name in ("gradcam", "gradcam_plus_plus", "guided_gradcam"):
        with pytest.raises(ConfigError, match="model.layer"):
            method(name).attribute(net, x, t, AttributionContext())
    with pytest.raises(ModelError, match="feature map"):
        method("gradcam").attribute(net, x, t, layer_ctx(net, "head.1"))
    shared = nn.Conv3d(2, 2, 3, padding=1)
    twice = nn.Sequential(shared, nn.ReLU(), shared, nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    with pytest.raises(ModelError, match="2 times"):
        method("gradcam").attribute(twice, x, t, AttributionContext(layer=shared, layer_name="0"))


# ---------------------------------------------------------------- DeepLift


@pytest.mark.parametrize("baseline", ["zeros", "blur"])
def test_deeplift_equals_captum_per_subject(baseline):
    net, x, t = monai_net(), torch.randn(3, 1, 16, 16, 16), torch.tensor([0, 1, 0])
    result = method("deeplift", baseline=baseline, blur_sigma=2.0).attribute(net, x, t, AttributionContext(max_batch=4))
    base = torch.zeros_like(x) if baseline == "zeros" else gaussian_blur(x, 2.0)
    for i in range(3):
        xi = x[i : i + 1].clone().requires_grad_(True)
        ref = quiet(CaptumDeepLift(net).attribute, xi, baselines=base[i : i + 1], target=int(t[i]))
        torch.testing.assert_close(result.maps[i : i + 1], ref, rtol=1e-4, atol=1e-8)
    # summation to delta holds for a zero baseline; with other baselines Captum's rule for
    # overlapping max pooling (DenseNet's pool0: kernel 3, stride 2) breaks it by a few %
    if baseline == "zeros":
        assert (result.stats["completeness_error"] < 1e-3).all()


def test_deeplift_refuses_reused_nonlinearities():
    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.act, self.fc = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.act(self.c2(self.act(self.c1(x)))).mean((2, 3)))

    with pytest.raises(ModelError, match=r"\['act'\].*more than once"):
        method("deeplift").attribute(Reused().eval(), torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), AttributionContext())


# ---------------------------------------------------------------- GradientSHAP


def test_gradient_shap_arithmetic_equals_captum(monkeypatch):
    # record Captum's random draws (baseline index, path point) and feed them to our loop
    net, x, t = tiny(), torch.randn(1, 2, 8, 8, 8), 1
    baselines = torch.stack([torch.zeros_like(x[0]), gaussian_blur(x, 2.0)[0], torch.randn_like(x[0])])
    draws = {}
    for fn_name in ("choice", "uniform"):
        original = getattr(np.random, fn_name)

        def record(*args, _original=original, _name=fn_name, **kwargs):
            draws[_name] = _original(*args, **kwargs)
            return draws[_name]

        monkeypatch.setattr(np.random, fn_name, record)
    ref = quiet(CaptumGradientShap(net).attribute, x.clone().requires_grad_(True), baselines, n_samples=7, target=t)
    monkeypatch.undo()
    choice = torch.as_tensor(draws["choice"]).view(1, 7)
    alphas = torch.as_tensor(draws["uniform"], dtype=torch.float32).view(1, 7)
    ours = expected_gradients(net, x, torch.tensor([t]), baselines.unsqueeze(0), choice, alphas, 0.0, None, max_batch=3)
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-4, atol=1e-8)


def test_gradient_shap_approaches_integrated_gradients():
    # with one baseline and no noise, GradientSHAP is a Monte Carlo estimate of IG
    torch.manual_seed(5)
    net, x, t = SmoothNet().eval(), torch.randn(1, 1, 6, 6, 6), torch.tensor([1])
    ig = method("integrated_gradients", steps=32).attribute(net, x, t, AttributionContext()).maps
    shap = method("gradient_shap", samples=600, baselines=["zeros"]).attribute(net, x, t, AttributionContext(max_batch=128)).maps
    assert torch.nn.functional.cosine_similarity(shap.flatten(), ig.flatten(), dim=0) > 0.98


def test_gradient_shap_baselines():
    net, x, t = tiny(), torch.randn(2, 2, 8, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="mean"):
        method("gradient_shap", baselines=["mean"]).attribute(net, x, t, AttributionContext())
    # the default distribution takes the dataset mean when there is one
    ctx = AttributionContext(baseline_mean=torch.full((2, 8, 8, 8), 3.0))
    assert not torch.allclose(
        method("gradient_shap", samples=8).attribute(net, x, t, ctx).maps,
        method("gradient_shap", samples=8).attribute(net, x, t, AttributionContext()).maps,
    )


# ---------------------------------------------------------------- occlusion


@pytest.mark.parametrize(
    "shape,window,stride",
    [((16, 16), 4, 2), ((16, 16), 6, 4), ((8, 12, 10), [4, 6, 5], [2, 3, 5]), ((8, 12, 10), 4, None)],
)
@pytest.mark.parametrize("baseline", ["zeros", "mean"])
def test_occlusion_equals_captum(shape, window, stride, baseline):
    net, x = tiny(len(shape)), torch.randn(3, 2, *shape)
    t = torch.tensor([0, 1, 1])
    ctx = AttributionContext(max_batch=7, baseline_mean=torch.randn(2, *shape))
    params = {"window": window, "stride": stride, "baseline": baseline}
    ours = method("occlusion", **params).attribute(net, x, t, ctx).maps
    win = [window] * len(shape) if isinstance(window, int) else window
    strides = win if stride is None else ([stride] * len(shape) if isinstance(stride, int) else stride)
    base = 0.0 if baseline == "zeros" else ctx.baseline_mean.unsqueeze(0)
    for i in range(3):
        ref = CaptumOcclusion(net).attribute(
            x[i : i + 1], sliding_window_shapes=(2, *win), strides=(2, *strides), baselines=base, target=int(t[i])
        )
        torch.testing.assert_close(ours[i : i + 1], ref, rtol=1e-4, atol=1e-6)


def test_occlusion_parameters():
    net, x, t = tiny(2), torch.randn(1, 2, 8, 8), torch.tensor([0])
    occ = method("occlusion", window=32)  # larger than the input: one window, the whole image
    with torch.no_grad():
        drop = net(x)[0, 0] - net(torch.zeros_like(x))[0, 0]
    torch.testing.assert_close(occ.attribute(net, x, t, AttributionContext()).maps, drop.expand_as(x))
    with pytest.raises(ConfigError, match="one entry per spatial axis"):
        method("occlusion", window=[4, 4, 4]).attribute(net, x, t, AttributionContext())
    with pytest.raises(ConfigError, match="must not exceed the window"):
        method("occlusion", window=2, stride=3).attribute(net, x, t, AttributionContext())
    with pytest.raises(ValidationError):
        method("occlusion", window=0)
    assert method("occlusion", window=8).passes_per_sample((16, 16, 16)) == pytest.approx(9 / 3)


# ---------------------------------------------------------------- LIME


class OneRegionNet(nn.Module):
    """Logits (m, -m) with m the mean intensity inside one box: nothing else matters."""

    def __init__(self, box):
        super().__init__()
        self.box = box

    def forward(self, x):
        m = x[(slice(None), slice(None), *self.box)].mean((1, 2, 3, 4)) * 10
        return torch.stack([m, -m], 1)


def test_lime_recovers_the_planted_region_from_atlas_labels():
    labels = torch.zeros(2, 12, 12, 12, dtype=torch.long)
    for k, (a, b) in enumerate([(0, 6), (6, 12)]):
        labels[:, a:b, :6] = 1 + 2 * k
        labels[:, a:b, 6:] = 2 + 2 * k
    box = (slice(6, 12), slice(6, 12), slice(None))  # region 4
    net, x = OneRegionNet(box), torch.rand(2, 1, 12, 12, 12) + 1.0
    result = method("lime", regions="atlas", samples=64, ridge_alpha=0.01).attribute(
        net, x, torch.tensor([0, 1]), AttributionContext(region_labels=labels, max_batch=16)
    )
    for i, sign in enumerate([1, -1]):
        weights = result.region_weights[i]
        assert set(weights) == {1, 2, 3, 4}
        assert sign * weights[4] > 5 and all(abs(weights[r]) < 0.05 * abs(weights[4]) for r in (1, 2, 3))
        torch.testing.assert_close(result.maps[i, 0][labels[i] == 4], torch.full(((labels[i] == 4).sum(),), weights[4]))
    assert (result.stats["surrogate_r2"] > 0.99).all()


def test_lime_slic_regions_find_a_bright_box():
    x = torch.rand(1, 1, 16, 16, 16) * 0.1
    box = (slice(2, 7), slice(9, 14), slice(4, 10))
    x[(0, 0, *box)] += 1.0
    result = method("lime", n_segments=16, samples=80).attribute(OneRegionNet(box), x, torch.tensor([0]), AttributionContext())
    inside = result.maps[(0, 0, *box)].mean()
    outside_mask = torch.ones(16, 16, 16, dtype=torch.bool)
    outside_mask[box] = False
    assert inside > 10 * result.maps[0, 0][outside_mask].abs().mean()


def test_lime_kernel_and_errors():
    z = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=float)
    d = cosine_distances(z, np.ones((1, 4))).ravel()
    np.testing.assert_allclose(lime_kernel_weights(z, 0.25), np.sqrt(np.exp(-(d**2) / 0.25**2)))
    net, x = tiny(), torch.randn(1, 2, 8, 8, 8)
    with pytest.raises(ConfigError, match="atlas"):
        method("lime", regions="atlas").attribute(net, x, torch.tensor([0]), AttributionContext())
