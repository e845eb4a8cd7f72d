"""Guard rails before the run: what hook-based methods cannot handle, found on one probe input.

The issue trackers of Captum, SHAP and pytorch-grad-cam are full of models whose
in-place operations or reused modules break a method late (a RuntimeError deep in
autograd) or, worse, silently (a wrong map). `preflight` runs at validate time, on the
first subject's preprocessed input, and raises a `ModelError` that names the module:

- one forward and backward of a target logit: an in-place operation that overwrites a
  tensor autograd still needs fails here for every gradient method; the modules whose
  outputs were modified in place after they returned (their ``_version`` changed) are named;
- each method's own `AttributionMethod.preflight` (DeepLIFT: nonlinearity modules called
  more than once; the Grad-CAM family: ``model.layer`` run once, as a feature map; guided
  backprop/deconvnet: ``nn.ReLU`` modules present; LRP: its prepared copy and one pass).
"""

from __future__ import annotations

import torch
from torch import nn

from xaudit.attribution.base import AttributionContext
from xaudit.errors import ModelError


def _outputs_modified_in_place(model: nn.Module, example: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Logits of ``example`` (with grad) and the modules whose output was changed in place afterwards."""
    seen: list[tuple[str, nn.Module, torch.Tensor, int]] = []

    def record(module, _args, out, name):
        if isinstance(out, torch.Tensor):
            seen.append((name, module, out, out._version))

    handles = [m.register_forward_hook(lambda mod, a, o, name=name: record(mod, a, o, name))
               for name, m in model.named_modules() if name and not list(m.children())]
    try:
        logits = model(example)
    finally:
        for handle in handles:
            handle.remove()
    changed = [f"{name} ({type(m).__name__})" for name, m, out, version in seen if out._version != version]
    return logits, changed


def probe_backward(model: nn.Module, example: torch.Tensor) -> None:
    """One forward and backward of the first logit with respect to the input.

    Raises:
        ModelError: autograd fails (typically an in-place operation on a tensor it saved),
            naming the modules whose outputs were modified in place.
    """
    x = example.detach().clone().requires_grad_(True)
    changed: list[str] = []
    try:
        with torch.enable_grad():
            logits, changed = _outputs_modified_in_place(model, x)
            torch.autograd.grad(logits[:, 0].sum(), x, allow_unused=True)
    except RuntimeError as exc:
        where = f" Outputs modified in place after their module returned: {changed[:5]}." if changed else ""
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"the model cannot be differentiated as it runs: {first_line[:300]}.{where} Gradient-based "
            "attribution needs these tensors intact: replace `x += ...`/`x.mul_(...)` after those modules by "
            "out-of-place operations, or set their `inplace=False`."
        ) from exc


def preflight(model: nn.Module, example: torch.Tensor, runs, layer: nn.Module | None, layer_name: str | None) -> None:
    """Every check above, before the subject pass.

    Args:
        model: the eager model in eval mode.
        example: one preprocessed input ``(1, C, *spatial)`` on the model's device.
        runs: the configured `MethodRun` list.
        layer: ``model.layer``'s module or None; layer_name its path.

    Raises:
        ModelError / ConfigError: with the method and the module named.
    """
    probe_backward(model, example)
    ctx = AttributionContext(layer=layer, layer_name=layer_name, max_batch=1)
    for run in runs:
        run.method.preflight(model, example, ctx)
