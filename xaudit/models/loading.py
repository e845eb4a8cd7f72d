"""Loading the classifier three ways, and finding its layers by module path.

- ``model.torchscript``: a TorchScript file (no hooks: input-gradient methods only).
- ``model.monai``: a network from ``monai.networks.nets`` by name, its arguments and a
  state_dict checkpoint, read with ``torch.load(..., weights_only=True)``.
- ``model.factory``: ``module:function`` returning an eager ``nn.Module``. This runs the
  user's Python code: only name code you trust.
"""

from __future__ import annotations

import inspect
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from xaudit.config.user_code import import_object
from xaudit.errors import ConfigError, ModelError, choices_message, did_you_mean, first_line

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")


@dataclass
class LoadedModel:
    """The classifier ready for auditing.

    Attributes:
        module: eval-mode model returning logits ``(N, len(classes))``.
        kind: "torchscript", "monai" or "factory".
        scripted: True when hooks are unavailable.
    """

    module: nn.Module
    kind: str
    scripted: bool


def two_logits(_module, _args, z):
    """Forward hook: a single logit ``z`` becomes ``[-z/2, z/2]``.

    ``softmax([-z/2, z/2]) = [1 - sigmoid(z), sigmoid(z)]``, so probabilities match
    the original sigmoid output and class 1's logit still rises with ``z``. A hook, not a
    wrapper module, so that layer names (``model.layer``, features, interrogation) stay
    the user's own.
    """
    return torch.cat([-z / 2, z / 2], dim=1)


def unwrapped(module: nn.Module) -> nn.Module:
    """The user's model inside a `BinaryLogitAdapter`, else the module itself."""
    return module.inner if isinstance(module, BinaryLogitAdapter) else module


class BinaryLogitAdapter(nn.Module):
    """`two_logits` for a TorchScript model, which refuses hooks: a wrapper module."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        z = self.inner(x)
        return torch.cat([-z / 2, z / 2], dim=1)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda[:k]`` checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"`device` must be auto, cpu or cuda[:k]. Got {name!r} instead.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA device is available; use --device cpu or auto")
    return device


def load_model(model_cfg, device: torch.device) -> LoadedModel:
    """Build the configured model on ``device`` in eval mode.

    Raises:
        ModelError: the file is missing/corrupt, the network or factory is unknown, or
            the checkpoint does not fit the network.
    """
    if model_cfg.torchscript is not None:
        module, kind, scripted = _load_torchscript(Path(model_cfg.torchscript), device), "torchscript", True
    elif model_cfg.monai is not None:
        module, kind, scripted = _load_monai(model_cfg.monai), "monai", False
    else:
        module, kind, scripted = _load_factory(model_cfg.factory_config), "factory", False
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(module=module, kind=kind, scripted=scripted)


def _load_torchscript(path: Path, device: torch.device) -> nn.Module:
    if not path.is_file():
        raise ModelError(f"`model.torchscript`: file {str(path)!r} does not exist")
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a usable TorchScript file"
        hint = ""
        if _file_kind(path) == "checkpoint":
            hint = ("; it looks like a state_dict checkpoint: name the network (`model.monai` or"
                    " `model.factory`) and give the file as its `checkpoint`")
        raise ModelError(f"`model.torchscript`: {path} is not a loadable TorchScript file ({_plain(first_line(exc, 200))}){hint}") from None


def _file_kind(path: Path) -> str:
    """"torchscript" (a zip archive with code), "checkpoint" (another ``torch.save`` zip) or "other"."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return "other"
    return "torchscript" if any("/code/" in n or n.endswith("constants.pkl") for n in names) else "checkpoint"


def _plain(text: str) -> str:
    """``text`` without terminal colour codes (some of PyTorch's messages carry them)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _load_monai(cfg) -> nn.Module:
    import monai.networks.nets as nets

    # classes (DenseNet121, ResNet, ...) and builder functions (resnet10, resnet18, ...)
    names = [n for n in dir(nets) if not n.startswith("_")
             and (inspect.isclass(getattr(nets, n)) or inspect.isfunction(getattr(nets, n)))]
    if cfg.network not in names:
        raise ModelError("`model.monai.network`: " + choices_message("MONAI network", cfg.network, names))
    cls = getattr(nets, cfg.network)
    try:
        module = cls(**cfg.args)
    except TypeError as exc:
        params = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
        raise ModelError(f"`model.monai.args` do not fit {cfg.network}: {exc}. Its arguments: {params}") from None
    except Exception as exc:  # noqa: BLE001 - MONAI validates its args with assorted errors
        raise ModelError(f"`model.monai.args` rejected by {cfg.network}: {first_line(exc, 300)}") from None
    if not isinstance(module, nn.Module):
        raise ModelError(f"`model.monai.network`: {cfg.network} is not a network (it returned {type(module).__name__})")
    if cfg.checkpoint is not None:
        load_checkpoint(module, Path(cfg.checkpoint), "model.monai.checkpoint")
    return module


def _load_factory(cfg) -> nn.Module:
    factory = import_object(cfg.function, "model.factory")
    try:
        module = factory(**cfg.args)
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelError(f"`model.factory` {cfg.function} failed: {type(exc).__name__}: {first_line(exc, 300)}") from None
    if not isinstance(module, nn.Module):
        raise ModelError(f"`model.factory` {cfg.function} returned {type(module).__name__}, expected a torch.nn.Module")
    if cfg.checkpoint is not None:
        load_checkpoint(module, Path(cfg.checkpoint), "model.factory.checkpoint")
    return module


def load_checkpoint(module: nn.Module, path: Path, key: str) -> None:
    """Load a state_dict (plain, or wrapped under a usual key) safely."""
    if not path.is_file():
        raise ModelError(f"`{key}`: file {str(path)!r} does not exist")
    kind = _file_kind(path)
    if kind == "torchscript":
        raise ModelError(f"`{key}`: {path} is a TorchScript model, not a state_dict: give it as"
                         " `model.torchscript` instead (input-gradient methods only)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns before it fails on some files
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, pickled objects, not a checkpoint
        reason = _plain(first_line(exc, 200))
        if "Weights only load failed" in str(exc):
            reason = "it holds pickled Python objects (a whole model?), which xaudit does not unpickle: that could run code"
        elif kind == "other":
            reason = "not a file torch.save writes, or a damaged one"  # torch's own reason reads as noise here
        raise ModelError(f"`{key}`: {path} is not a loadable state_dict ({reason});"
                         " save it with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict):
        for wrapper in CHECKPOINT_KEYS:
            if wrapper in state and isinstance(state[wrapper], dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"`{key}`: {path} does not hold a state_dict of tensors")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    _check_shapes(module, state, path, key)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # anything else the network refuses (dtype, custom loaders)
        raise ModelError(f"`{key}`: {path} does not fit the network ({first_line(exc)}); check the network name and args") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(f"`{key}`: {path} does not fit the network: {_key_counts(result)}; check the network name and args")


def _key_counts(result) -> str:
    """"3 missing keys (e.g. [...]), 1 unexpected key (e.g. [...])", leaving out a count of zero."""
    parts = []
    for keys, word in ((result.missing_keys, "missing"), (result.unexpected_keys, "unexpected")):
        if keys:
            parts.append(f"{len(keys)} {word} key{'s' if len(keys) != 1 else ''} (e.g. {keys[:3]})")
    return ", ".join(parts)


def _check_shapes(module: nn.Module, state: dict, path: Path, key: str) -> None:
    """Same architecture, other widths: name the tensors whose sizes differ."""
    own = module.state_dict()
    wrong = [f"{name} {tuple(tensor.shape)} (network {tuple(own[name].shape)})" for name, tensor in state.items()
             if name in own and tuple(own[name].shape) != tuple(tensor.shape)]
    if wrong:
        raise ModelError(
            f"`{key}`: {path} does not fit the network: {len(wrong)} tensors have other sizes (e.g. {'; '.join(wrong[:2])});"
            " check the network args (channels, widths, out_channels) the checkpoint was trained with"
        )


def find_layer(module: nn.Module, name: str, scripted: bool = False, key: str = "model.layer") -> nn.Module:
    """The submodule at dotted path ``name``; a wrong name lists the valid ones (``key``: the config key)."""
    modules = dict(module.named_modules())
    if name in modules and name != "":
        return modules[name]
    valid = [n for n in modules if n]
    interesting = [n for n, m in modules.items() if n and isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Sequential, nn.Linear))]
    # a suggestion among the layers listed first (a ReLU next to a typo is rarely the layer meant)
    hint = did_you_mean(name, interesting) or did_you_mean(name, valid)
    if interesting:
        shown = interesting[-25:]
        which = (f"the last {len(shown)} of its " if len(shown) < len(interesting) else "its ") + \
            f"{len(interesting)} convolution, linear and sequential modules ({len(valid)} modules in all)"
    else:
        shown = valid[-25:]
        which = (f"the last {len(shown)} of its " if len(shown) < len(valid) else "its ") + f"{len(valid)} modules"
    raise ConfigError(f"`{key}`: no module {name!r} in the model.{hint} Valid names include {which}: {shown}")


def last_linear_name(module: nn.Module) -> str | None:
    """The module path of the final ``nn.Linear`` (its input = the default features)."""
    name = None
    for n, m in module.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    return name


def check_output(model: LoadedModel, sample: torch.Tensor, classes: list[str]) -> LoadedModel:
    """Run one input through; wrap single-logit binary models; refuse mismatches."""
    try:
        with torch.no_grad():
            out = model.module(sample)
    except Exception as exc:  # noqa: BLE001 - the model cannot take the configured input
        raise ModelError(
            f"the model failed on an input of shape {tuple(sample.shape)} ({type(exc).__name__}:"
            f" {first_line(exc, 200)}); check `data.transforms` and the model's spatial_dims/in_channels"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model must return logits of shape (N, classes); it returned {shape}")
    if out.shape[1] == 1 and len(classes) == 2:
        if model.scripted:
            return LoadedModel(BinaryLogitAdapter(model.module).eval(), model.kind, model.scripted)
        model.module.register_forward_hook(two_logits)
        return model
    if out.shape[1] != len(classes):
        raise ModelError(
            f"the model returns {out.shape[1]} outputs but `model.classes` names {len(classes)}: {classes}"
        )
    return model
