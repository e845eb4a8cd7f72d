"""Guard rails: models that hook-based methods cannot handle are refused at validate time, by module name.

Each case used to surface only inside the subject pass (every subject failing with an
autograd RuntimeError or a method's refusal) or not at all.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ResNet
from torch import nn

from conftest import make_cohort, make_config
from tiny_nets import InPlaceAfterReLU, TinyCNN, TinyViT
from xaudit.attribution import REGISTRY
from xaudit.attribution.engine import MethodRun
from xaudit.attribution.guards import preflight, probe_backward
from xaudit.errors import ModelError


def runs(*names, **params):
    return [MethodRun(n, REGISTRY[n](params.get(n, {}))) for n in names]


def test_in_place_op_on_a_saved_tensor_is_named():
    model = InPlaceAfterReLU(2).eval()
    with pytest.raises(ModelError, match=r"cannot be differentiated.*features\.1 \(ReLU\)") as caught:
        probe_backward(model, torch.randn(1, 1, 8, 8))
    assert "\n" not in str(caught.value)


def test_deeplift_reused_nonlinearity_is_refused_before_the_run():
    torch.manual_seed(0)
    net = ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(4, 8, 8, 8), spatial_dims=2, n_input_channels=1,
                 num_classes=2).eval()
    with pytest.raises(ModelError, match=r"deeplift.*layer1\.0\.act"):
        preflight(net, torch.randn(1, 1, 16, 16), runs("deeplift"), None, None)
    preflight(net, torch.randn(1, 1, 16, 16), runs("saliency", "guided_backprop", "lrp"), None, None)  # these cope with reuse


def test_layer_run_twice_is_refused_for_gradcam():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(1, 2)

        def forward(self, x):
            return self.head(self.block(self.block(x)).mean((2, 3)))

    net = Twice().eval()
    with pytest.raises(ModelError, match="'block' ran 2 times"):
        preflight(net, torch.randn(1, 1, 8, 8), runs("gradcam"), net.block, "block")


def test_transformer_refusals_name_the_reason():
    torch.manual_seed(0)
    vit = TinyViT().eval()
    x = torch.randn(1, 1, 16, 16)
    with pytest.raises(ModelError, match="'blocks' must output a feature map"):
        preflight(vit, x, runs("gradcam_plus_plus"), vit.blocks, "blocks")
    with pytest.raises(ModelError, match="guided_backprop.*has none"):
        preflight(vit, x, runs("guided_backprop"), None, None)
    with pytest.raises(ModelError, match=r"no rule for attention: `blocks\.self_attn`"):
        preflight(vit, x, runs("lrp"), None, None)


def test_an_ordinary_model_passes_every_preflight():
    torch.manual_seed(0)
    net = TinyCNN(spatial_dims=2).eval()
    preflight(net, torch.randn(1, 1, 12, 12), runs(*sorted(REGISTRY)), net.features[3], "features.3")


def test_validate_refuses_an_in_place_model_with_exit_2(tmp_path):
    from typer.testing import CliRunner

    from xaudit.cli import app

    manifest = make_cohort(tmp_path / "c", n=4)
    config = make_config(tmp_path, manifest, methods={"saliency": {}},
                         model={"factory": {"function": "tiny_nets:build_inplace", "args": {"spatial_dims": 3}},
                                "classes": ["healthy", "lesion"]})
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    assert "features.1 (ReLU)" in result.output
