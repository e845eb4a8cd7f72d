"""Methods that reuse the engine's shared forward+backward give exactly their own maps."""

from __future__ import annotations

import pytest
import torch

import tiny_nets
from xaudit.attribution import REGISTRY
from xaudit.attribution.base import AttributionContext, AttributionMethod
from xaudit.attribution.engine import MethodRun, choose_targets
from xaudit.models.features import FeatureSpec
from xaudit.stages.subject_pass import PassSettings, _forward_pass


def settings_for(model, layer, methods=()):
    return PassSettings(
        spatial_dims=3, classes=["a", "b"], target="predicted",
        methods=[MethodRun(name, REGISTRY[name]()) for name in methods], feature_spec=FeatureSpec([("head", "input")]),
        concept_layer=layer, layer_name="features.3", max_batch=4, seed=0, downsample=8, batch_size=4, num_workers=0,
        on_error="skip",
    )


SHARED = sorted(n for n, cls in REGISTRY.items() if cls.from_shared is not AttributionMethod.from_shared)


def test_the_cheap_methods_use_the_shared_pass():
    assert {"saliency", "input_x_gradient", "gradcam", "gradcam_plus_plus"} <= set(SHARED)


@pytest.mark.parametrize("name", SHARED)
def test_shared_pass_equals_own_attribution(name):
    torch.manual_seed(0)
    model = tiny_nets.build(spatial_dims=3)
    layer = model.features[3]
    x = torch.randn(3, 1, 10, 10, 10)
    forward = _forward_pass(model, x, torch.tensor([0, 1, -1]), settings_for(model, layer, [name]))
    method = REGISTRY[name]()
    shared = method.from_shared(forward["shared"])
    assert shared is not None
    ctx = AttributionContext(layer=layer, layer_name="features.3", max_batch=2)
    own = method.attribute(model, x, forward["targets"], ctx)
    torch.testing.assert_close(shared.maps, own.maps, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("methods", [["gradcam"], ["integrated_gradients"], []])
def test_the_shared_backward_stops_at_the_layer_when_no_method_reads_the_input_gradient(methods):
    """Without saliency or input x gradient the shared pass only back-propagates to
    `model.layer` (for Grad-CAM and TCAV): the layers below it see no backward at all."""
    torch.manual_seed(0)
    model = tiny_nets.build(spatial_dims=3)
    first, layer = model.features[0], model.features[3]
    calls = []
    first.register_full_backward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 1, 10, 10, 10)
    forward = _forward_pass(model, x, torch.tensor([0, 1]), settings_for(model, layer, methods))
    assert forward["shared"].input_grads is None and calls == []
    assert forward["concept_grads"].shape == (2, layer.out_channels)  # TCAV still gets its gradients
    with_saliency = _forward_pass(model, x, torch.tensor([0, 1]), settings_for(model, layer, [*methods, "saliency"]))
    assert with_saliency["shared"].input_grads is not None and calls
    torch.testing.assert_close(torch.as_tensor(forward["concept_grads"]), torch.as_tensor(with_saliency["concept_grads"]))


def test_targets_in_shared_pass_follow_the_config():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    assert choose_targets("predicted", ["a", "b"], logits, torch.tensor([1, 0])).tolist() == [0, 1]
    assert choose_targets("label", ["a", "b"], logits, torch.tensor([1, -1])).tolist() == [1, 1]
    assert choose_targets("b", ["a", "b"], logits, torch.tensor([0, 0])).tolist() == [1, 1]
