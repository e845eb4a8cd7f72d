"""The space-to-depth input gradient of strided convolutions (`xaudit.models.strided_conv`):
the same gradient as PyTorch's on every shape, swapped in only where it is allowed and chosen,
and gone again after."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from xaudit.models.strided_conv import (
    choose_layers,
    eligible,
    faster_input_gradients,
    input_gradient,
    space_to_depth_weight,
)

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
INPUT_GRAD = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("c_in,c_out,kernel,stride,padding", [
    (1, 8, 7, 2, 3),   # a MONAI DenseNet/ResNet stem
    (3, 5, 3, 2, 1),   # a downsampling block
    (2, 4, 4, 3, 0),   # kernel not a multiple of the stride, no padding
    (2, 3, 1, 2, 0),   # a 1x1 strided shortcut
    (1, 2, 2, 4, 2),   # stride above the kernel: taps that never reach some inputs
])
def test_gradient_equals_pytorchs(dims, c_in, c_out, kernel, stride, padding):
    torch.manual_seed(dims)
    strides = (stride, 1, stride + 1)[:dims] if dims == 3 else (stride,) * dims  # mixed strides in 3D
    conv = CONV[dims](c_in, c_out, kernel, stride=strides, padding=padding, bias=False)
    for size in (17, 20):  # odd and even lengths: the last taps fall off different ends
        x = torch.randn(2, c_in, *[size + k for k in range(dims)], dtype=torch.float64)
        w = conv.weight.detach().double()
        g = torch.randn_like(torch.nn.functional.__dict__[f"conv{dims}d"](x, w, stride=strides, padding=padding))
        expected = INPUT_GRAD[dims](x.shape, w, g, strides, (padding,) * dims)
        got = input_gradient(g, w, strides, (padding,) * dims, tuple(x.shape))
        assert got.shape == x.shape
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_space_to_depth_weight_places_each_tap():
    w = torch.arange(5.0).reshape(1, 1, 5)  # taps 0..4, stride 2: phase 0 holds 0, 2, 4; phase 1 holds 1, 3, 0
    assert space_to_depth_weight(w, (2,)).tolist() == [[[0.0, 2.0, 4.0], [1.0, 3.0, 0.0]]]


class Stem(nn.Module):
    """A strided stem, an in-place ReLU on its output, a plain conv, a head: the common shape."""

    def __init__(self, dims: int = 3):
        super().__init__()
        self.stem = CONV[dims](1, 4, 5, stride=2, padding=2, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv = CONV[dims](4, 6, 3, padding=1)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = self.act(self.stem(x))
        return self.head(self.conv(y).flatten(2).mean(2))


def frozen(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def input_grads(model, x):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    return grad


USE_STEM = {"stem": {"pytorch_ms": 2.0, "space_to_depth_ms": 1.0, "used": True}}


@pytest.mark.parametrize("dims", [2, 3])
def test_model_gradients_equal_with_and_without_and_hooks_go_away(dims):
    torch.manual_seed(0)
    model = frozen(Stem(dims))
    x = torch.randn(3, 1, *[13] * dims)
    plain = input_grads(model, x)
    with faster_input_gradients(model, USE_STEM):
        assert len(model.stem._forward_hooks) == 1
        fast = input_grads(model, x)
        with torch.no_grad():  # no gradient wanted: the layer's own output, untouched
            torch.testing.assert_close(model(x), Stem.forward(model, x))
    assert not model.stem._forward_hooks
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)


def test_hooks_are_removed_when_the_body_raises():
    model = frozen(Stem())
    with pytest.raises(RuntimeError), faster_input_gradients(model, USE_STEM):
        raise RuntimeError("boom")
    assert not model.stem._forward_hooks


def test_double_backward_matches():
    """Gradients of gradients (e.g. a smoothness penalty) still flow through the replacement."""
    torch.manual_seed(1)
    model = frozen(Stem(2)).double()
    model.act = nn.Softplus()  # ReLU's second derivative is zero: use a smooth one
    x = torch.randn(2, 1, 11, 11, dtype=torch.float64)

    def second(m):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m(xx)[:, 1].sum(), xx, create_graph=True)
        (gg,) = torch.autograd.grad((g ** 2).sum(), xx)
        return gg

    plain = second(model)
    with faster_input_gradients(model, USE_STEM):
        fast = second(model)
    torch.testing.assert_close(fast, plain)


def test_gradcam_style_hook_sees_the_output_the_gradient_flows_through():
    """A hook registered later on the same layer (Grad-CAM, features) captures a tensor with a gradient."""
    model = frozen(Stem(2))
    x = torch.randn(2, 1, 12, 12, requires_grad=True)
    seen = {}
    handle = model.stem.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    try:
        with faster_input_gradients(model, USE_STEM):
            score = model(x)[:, 1].sum()
            (g,) = torch.autograd.grad(score, seen["out"])
    finally:
        handle.remove()
    assert g.abs().sum() > 0


def test_what_is_left_alone():
    assert eligible(nn.Conv2d(1, 4, 3, stride=2).requires_grad_(False))
    assert not eligible(nn.Conv2d(1, 4, 3, stride=2))  # weight wants a gradient (training)
    assert not eligible(nn.Conv2d(1, 4, 3, stride=1).requires_grad_(False))  # nothing to gain
    assert not eligible(nn.Conv2d(2, 4, 3, stride=2, groups=2).requires_grad_(False))
    assert not eligible(nn.Conv2d(1, 4, 3, stride=2, dilation=2).requires_grad_(False))
    assert not eligible(nn.Conv2d(1, 4, 3, stride=2, padding=1, padding_mode="reflect").requires_grad_(False))
    assert not eligible(nn.ConvTranspose2d(1, 4, 3, stride=2).requires_grad_(False))
    patched = nn.Conv2d(1, 4, 3, stride=2).requires_grad_(False)
    patched.forward = lambda x: x  # how LRP installs its rules, on its own copy
    assert not eligible(patched)


def test_a_deep_copy_with_its_forward_replaced_keeps_its_own_gradient():
    """LRP deep-copies the model (hooks included) and replaces each conv's forward: the copied
    hook must step aside, or the rule's gradient would be overwritten by the plain one."""
    model = frozen(Stem(2))
    x = torch.randn(2, 1, 12, 12)
    with faster_input_gradients(model, USE_STEM):
        work = copy.deepcopy(model)
        assert work.stem._forward_hooks  # copied along
        original = work.stem.forward
        work.stem.forward = lambda inp: original(inp) * 0.5  # a "rule": its gradient is half the plain one
        got = input_grads(work, x)
    plain = frozen(copy.deepcopy(model))
    plain.stem.forward = lambda inp, f=plain.stem.forward: f(inp) * 0.5
    torch.testing.assert_close(got, input_grads(plain, x))


def test_choice_follows_the_timings_and_is_recorded():
    torch.manual_seed(2)
    model = frozen(nn.Sequential(nn.Conv3d(1, 4, 5, stride=2, padding=2), nn.ReLU(),
                                 nn.Conv3d(4, 4, 3, stride=1, padding=1), nn.Conv3d(4, 8, 3, stride=2)))
    x = torch.randn(2, 1, 16, 16, 16)
    chosen = choose_layers(model, x)
    assert set(chosen) == {"0", "3"}  # the strided ones only
    for entry in chosen.values():
        assert entry["pytorch_ms"] > 0 and entry["space_to_depth_ms"] > 0
        assert entry["used"] == (entry["space_to_depth_ms"] <= 0.8 * entry["pytorch_ms"])


def test_simulated_clock_decides(monkeypatch):
    """With a clock where the library's gradient takes 10 units and ours 1, ours is used; the
    other way round, the library's is kept."""
    import xaudit.models.strided_conv as sc

    model = frozen(nn.Sequential(nn.Conv2d(1, 4, 3, stride=2)))
    x = torch.randn(1, 1, 9, 9)
    for ours, library, used in ((1.0, 10.0, True), (10.0, 1.0, False), (9.0, 10.0, False)):
        now = [0.0]
        real_library, real_ours = sc._INPUT_GRAD[2], sc.input_gradient

        def slow_library(*a, _f=real_library, _cost=library, **k):
            now[0] += _cost
            return _f(*a, **k)

        def slow_ours(*a, _f=real_ours, _cost=ours, **k):
            now[0] += _cost
            return _f(*a, **k)

        monkeypatch.setitem(sc._INPUT_GRAD, 2, slow_library)
        monkeypatch.setattr(sc, "input_gradient", slow_ours)
        assert sc.choose_layers(model, x, clock=lambda: now[0])["0"]["used"] is used
        monkeypatch.undo()


def test_a_gradient_that_disagrees_is_never_used(monkeypatch):
    import xaudit.models.strided_conv as sc

    model = frozen(nn.Sequential(nn.Conv2d(1, 4, 3, stride=2)))
    real = sc.input_gradient
    monkeypatch.setattr(sc, "input_gradient", lambda *a: real(*a) * 1.01)
    assert sc.choose_layers(model, torch.randn(1, 1, 9, 9))["0"]["used"] is False


def test_nothing_to_choose_on_a_model_without_strided_convolutions():
    model = frozen(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 2)))
    assert choose_layers(model, torch.randn(1, 1, 8, 8)) == {}


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_autocast_gradient_keeps_the_inputs_dtype(dtype):
    model = frozen(Stem(2))
    x = torch.randn(2, 1, 12, 12, requires_grad=True)
    with faster_input_gradients(model, USE_STEM), torch.autocast("cpu", dtype=dtype):
        (g,) = torch.autograd.grad(model(x)[:, 1].float().sum(), x)
    with torch.autocast("cpu", dtype=dtype):
        (ref,) = torch.autograd.grad(model(x)[:, 1].float().sum(), x)
    assert g.dtype == x.dtype
    torch.testing.assert_close(g, ref, rtol=0.05, atol=0.02)


def test_every_known_stem_shape_agrees_in_float32():
    """The stems of MONAI's DenseNet121/ResNet (7, stride 2, padding 3) and of torchvision-style
    2D nets, at the shapes the sample cohorts use."""
    for dims, size, (c_in, c_out) in itertools.product((2, 3), (40, 33), ((1, 8), (3, 16))):
        conv = frozen(CONV[dims](c_in, c_out, 7, stride=2, padding=3, bias=False))
        x = torch.randn(2, c_in, *[size] * dims)
        g = torch.randn_like(conv(x))
        torch.testing.assert_close(input_gradient(g, conv.weight, (2,) * dims, (3,) * dims, tuple(x.shape)),
                                   INPUT_GRAD[dims](x.shape, conv.weight, g, (2,) * dims, (3,) * dims),
                                   rtol=1e-4, atol=1e-4)


def test_a_run_records_the_choice_and_its_maps_equal_pytorchs(tmp_path, monkeypatch):
    """End to end on a model with a strided stem: the choice is in the provenance, and the maps
    equal those of a run where the space-to-depth gradient is never chosen."""
    import nibabel as nib
    import yaml

    import xaudit.models.strided_conv as sc
    from conftest import make_cohort, make_config
    from xaudit.config import load_config
    from xaudit.workflows.audit import RunOptions, run_audit

    manifest = make_cohort(tmp_path / "cohort", n=4, shape=(18, 20, 16))
    model = {"factory": {"function": "tiny_nets:build_strided"}, "classes": ["healthy", "lesion"], "layer": "net.features.3"}
    config = load_config(make_config(tmp_path, manifest, methods={"saliency": {}, "integrated_gradients": {"steps": 4}},
                                     model=model))
    monkeypatch.setattr(sc, "SPEED_MARGIN", float("inf"))  # always chosen: the test must not depend on timing
    fast = run_audit(config, RunOptions(output=tmp_path / "fast"))
    provenance = yaml.safe_load((fast.run_dir / "config.resolved.yaml").read_text())["provenance"]
    assert provenance["strided_gradients"]["stem"]["used"] is True
    monkeypatch.setattr(sc, "SPEED_MARGIN", 0.0)  # never chosen
    plain = run_audit(config, RunOptions(output=tmp_path / "plain"))
    assert yaml.safe_load((plain.run_dir / "config.resolved.yaml").read_text())["provenance"]["strided_gradients"]["stem"]["used"] is False
    maps = sorted((fast.run_dir / "attributions").rglob("*.nii.gz"))
    assert len(maps) == 8  # 4 subjects x 2 methods
    for path in maps:
        other = plain.run_dir / path.relative_to(fast.run_dir)
        a, b = np.asarray(nib.load(path).dataobj), np.asarray(nib.load(other).dataobj)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
