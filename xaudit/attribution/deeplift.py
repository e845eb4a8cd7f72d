"""DeepLIFT with the rescale rule, through Captum.

Shrikumar, Greenside & Kundaje (2017), "Learning Important Features Through Propagating
Activation Differences", ICML.

Captum's `DeepLift` runs input and baseline through the model in one batch of ``2 n``,
so chunks hold ``ctx.max_batch // 2`` subjects (mixed freely, each with its own target
and baseline). Its limits, checked here rather than left to a traceback:

- each nonlinearity module (ReLU, MaxPool, Sigmoid, ...) must be called once per
  forward: a module reused twice makes Captum fail, so it is detected first and
  refused with a `ModelError` naming the module;
- functional nonlinearities (``F.relu`` in a ``forward``) get the plain gradient, not the
  rescale rule; the summation-to-delta property then breaks, which the per-sample
  ``completeness_error`` statistic shows;
- ``ReLU(inplace=True)`` (MONAI DenseNet/ResNet) works with Captum 0.9 (checked in
  ``tests/test_attribution_methods.py`` against a reference rescale rule).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence

import torch
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

from xaudit.config.methods import DeepLiftParams
from xaudit.attribution._baselines import BaselineParams, make_baseline
from xaudit.attribution.base import AttributionContext, AttributionMethod, AttributionResult, chunks, select_targets
from xaudit.attribution.integrated_gradients import completeness_error
from xaudit.errors import ModelError


def logits_and_reuse(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Target logits of ``inputs`` (forward only) and the nonlinearity modules called more than once."""
    calls: Counter[str] = Counter()
    handles = [
        module.register_forward_hook(lambda m, a, o, name=name: calls.update([name]))
        for name, module in model.named_modules()
        if type(module) in SUPPORTED_NON_LINEAR
    ]
    try:
        with torch.no_grad():
            scores = select_targets(model(inputs), targets).float()
    finally:
        for handle in handles:
            handle.remove()
    return scores, sorted(name for name, count in calls.items() if count > 1)


def deeplift_chunk(model, x: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Captum's DeepLift maps for one chunk, with its RuntimeErrors turned into `ModelError`."""
    x = x.detach().clone().requires_grad_(True)
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            # Captum warns on every call that it sets (and removes) hooks
            warnings.simplefilter("ignore", UserWarning)
            return CaptumDeepLift(model).attribute(x, baselines=b, target=t).detach().float()
    except (RuntimeError, AssertionError) as exc:
        raise ModelError(f"`deeplift` (Captum) cannot handle this model: {exc}") from exc


def _reuse_message(reused: list[str]) -> str:
    return (
        f"`deeplift` needs each nonlinearity module to be called once per forward pass; {reused} are called "
        "more than once (Captum's hooks would mix the calls' inputs). Give each use its own module, or use "
        "`integrated_gradients`."
    )


class DeepLift(AttributionMethod):
    name = "deeplift"
    supports_amp = False  # its own backward rules: float32 only
    summary = "DeepLIFT rescale rule: contributions of input-minus-baseline differences"
    Params = DeepLiftParams
    needs_hooks = True
    reference = "Shrikumar et al. 2017, ICML, arXiv:1704.02685"

    def passes_per_sample(self, spatial_shape: Sequence[int] | None = None) -> float:
        # input and baseline forward+backward in one batch, plus their forward for the check
        return 2.0 + 2.0 / 3.0

    def preflight(self, model, example, ctx: AttributionContext) -> None:
        _, reused = logits_and_reuse(model, example, torch.zeros(example.shape[0], dtype=torch.long))
        if reused:
            raise ModelError(_reuse_message(reused))

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        if isinstance(model, torch.jit.ScriptModule):
            raise ModelError("`deeplift` needs module hooks; a TorchScript model has none. Load the eager model instead.")
        p = self.params
        baselines = make_baseline(p.baseline, inputs, ctx, p.blur_sigma, self.name).to(inputs.dtype)
        targets = targets.to(inputs.device)
        maps = torch.empty(inputs.shape, dtype=torch.float32, device=inputs.device)
        error = torch.empty(inputs.shape[0], dtype=torch.float32, device=inputs.device)
        for part in chunks(inputs.shape[0], max(1, ctx.max_batch // 2)):
            x, b, t = inputs[part], baselines[part], targets[part]
            scores, reused = logits_and_reuse(model, torch.cat([x, b]), torch.cat([t, t]))
            if reused:
                raise ModelError(_reuse_message(reused))
            maps[part] = deeplift_chunk(model, x, b, t)
            error[part] = completeness_error(maps[part], scores[: len(t)], scores[len(t):])
        return AttributionResult(maps, stats={"completeness_error": error})
