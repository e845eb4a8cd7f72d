"""Model loading in all three forms, layer lookup, and clear errors."""

from __future__ import annotations

import pytest
import torch

import tiny_nets
from xaudit.attribution.engine import build_methods
from xaudit.config import config_from_dict
from xaudit.errors import ConfigError, ModelError
from xaudit.models.loading import check_output, find_layer, load_model

CPU = torch.device("cpu")
CLASSES = ["healthy", "lesion"]


def model_cfg(tmp_path, **model):
    raw = {"data": {"manifest": "m.csv"}, "model": {"classes": CLASSES, **model}, "attribution": {"methods": {"saliency": {}}}}
    return config_from_dict(raw, base_dir=tmp_path).model


def test_factory_model(tmp_path):
    loaded = load_model(model_cfg(tmp_path, factory={"function": "tiny_nets:build", "args": {"spatial_dims": 2}}), CPU)
    assert loaded.kind == "factory" and not loaded.scripted
    assert loaded.module(torch.zeros(2, 1, 8, 8)).shape == (2, 2)


def test_monai_model_with_checkpoint_matches_source(tmp_path):
    from monai.networks.nets import DenseNet

    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_features": 4, "growth_rate": 4, "block_config": [2, 2]}
    torch.manual_seed(1)
    net = DenseNet(**args).eval()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "ckpt.pth")
    loaded = load_model(model_cfg(tmp_path, monai={"network": "DenseNet", "args": args, "checkpoint": "ckpt.pth"}), CPU)
    x = torch.randn(2, 1, 16, 16, 16)
    torch.testing.assert_close(loaded.module(x), net(x))


def test_torchscript_model_and_hook_methods_refused(tmp_path):
    net = tiny_nets.build(spatial_dims=2)
    torch.jit.script(net).save(str(tmp_path / "m.pt"))
    loaded = load_model(model_cfg(tmp_path, torchscript="m.pt"), CPU)
    assert loaded.scripted
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(loaded.module(x), net(x))
    with pytest.raises(ConfigError, match="TorchScript"):
        build_methods({"gradcam": {}}, scripted=True, has_layer=True)
    assert build_methods({"saliency": {}}, scripted=True, has_layer=False)[0].name == "saliency"


def test_unknown_monai_network_suggests(tmp_path):
    with pytest.raises(ModelError, match="DenseNet121"):
        load_model(model_cfg(tmp_path, monai={"network": "DenseNet12", "args": {}}), CPU)


def test_checkpoint_that_does_not_fit(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "bad.pth")
    cfg = model_cfg(tmp_path, factory={"function": "tiny_nets:build", "checkpoint": "bad.pth"})
    with pytest.raises(ModelError, match="does not fit") as err:
        load_model(cfg, CPU)
    assert "1 unexpected key (e.g. ['weight'])" in str(err.value)
    net = tiny_nets.build()
    torch.save({k: v for k, v in net.state_dict().items() if k != "head.weight"} if "head.weight" in net.state_dict()
               else dict(list(net.state_dict().items())[1:]), tmp_path / "short.pth")
    cfg = model_cfg(tmp_path, factory={"function": "tiny_nets:build", "checkpoint": "short.pth"})
    with pytest.raises(ModelError, match="does not fit") as err:
        load_model(cfg, CPU)
    assert "1 missing key (e.g." in str(err.value) and "unexpected" not in str(err.value)  # no "0 unexpected (e.g. [])"


def test_corrupt_and_pickled_checkpoints_are_refused(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a loadable state_dict"):
        load_model(model_cfg(tmp_path, factory={"function": "tiny_nets:build", "checkpoint": "junk.pth"}), CPU)

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError):
        load_model(model_cfg(tmp_path, factory={"function": "tiny_nets:build", "checkpoint": "evil.pth"}), CPU)


def test_missing_model_files(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(model_cfg(tmp_path, torchscript="nope.pt"), CPU)
    with pytest.raises(ConfigError, match="cannot import"):
        load_model(model_cfg(tmp_path, factory="no_such_module:build"), CPU)


def test_wrong_layer_lists_valid_names():
    net = tiny_nets.build()
    assert find_layer(net, "features.3") is net.features[3]
    with pytest.raises(ConfigError) as err:
        find_layer(net, "features.33")
    assert "features.3" in str(err.value) and "Did you mean" in str(err.value)
    with pytest.raises(ConfigError, match=r"Did you mean 'features.3'\?"):  # a listed layer, not the ReLU 'features.4'
        find_layer(net, "features.99")
    shown = str(err.value).split(": [", 1)[1]
    n_shown = shown.count("'") // 2
    assert f"Valid names include its {n_shown} convolution, linear and sequential modules (" in str(err.value)
    assert "(last " not in str(err.value)


def test_output_must_match_classes(tmp_path):
    loaded = load_model(model_cfg(tmp_path, factory={"function": "tiny_nets:build", "args": {"classes": 3}}), CPU)
    with pytest.raises(ModelError, match="3 outputs"):
        check_output(loaded, torch.zeros(1, 1, 8, 8, 8), CLASSES)


def test_single_logit_binary_model_is_adapted(tmp_path):
    loaded = load_model(model_cfg(tmp_path, factory={"function": "tiny_nets:build", "args": {"classes": 1}}), CPU)
    x = torch.randn(3, 1, 8, 8, 8)
    z = loaded.module(x)
    adapted = check_output(loaded, x, CLASSES)
    probs = torch.softmax(adapted.module(x), 1)
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(z[:, 0]))


def test_model_that_rejects_the_input_shape(tmp_path):
    loaded = load_model(model_cfg(tmp_path, factory={"function": "tiny_nets:build", "args": {"spatial_dims": 2}}), CPU)
    with pytest.raises(ModelError, match="spatial_dims"):
        check_output(loaded, torch.zeros(1, 1, 8, 8, 8), CLASSES)


def test_monai_builder_functions_are_accepted(tmp_path):
    """`resnet10` and kin are functions in monai.networks.nets, not classes."""
    loaded = load_model(model_cfg(tmp_path, monai={"network": "resnet10", "args": {
        "spatial_dims": 3, "n_input_channels": 1, "num_classes": 2}}), CPU)
    assert loaded.module(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2)


def test_checkpoint_errors_say_what_the_file_is_and_what_to_do(tmp_path, recwarn):
    """A new user's trial: a whole pickled model, a text file and a TorchScript file as a
    factory's checkpoint, and a state_dict as `model.torchscript`."""
    net = tiny_nets.build()
    torch.save(net, tmp_path / "whole.pth")
    (tmp_path / "notes.pth").write_text("epoch 3, loss 0.1\n")
    torch.jit.script(net).save(str(tmp_path / "scripted.pt"))
    torch.save(net.state_dict(), tmp_path / "weights.pth")

    def error(**model) -> str:
        with pytest.raises(ModelError) as err:
            load_model(model_cfg(tmp_path, **model), CPU)
        message = str(err.value)
        assert "\x1b[" not in message and "\n" not in message
        return message

    factory = lambda checkpoint: {"factory": {"function": "tiny_nets:build", "checkpoint": checkpoint}}  # noqa: E731
    assert "pickled Python objects (a whole model?)" in error(**factory("whole.pth"))
    assert "(not a file torch.save writes, or a damaged one); save it with torch.save(model.state_dict(), path)" in error(**factory("notes.pth"))
    assert "is a TorchScript model, not a state_dict: give it as `model.torchscript`" in error(**factory("scripted.pt"))
    assert "looks like a state_dict checkpoint" in error(torchscript="weights.pth")
    assert not [w for w in recwarn if "TorchScript" in str(w.message)]
