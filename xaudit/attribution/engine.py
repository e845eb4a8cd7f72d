"""Running the configured methods on a batch: targets, memory budget, method instances."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import psutil
import torch

from xaudit.models.hooks import forward_hooks, leaf_modules
from xaudit.attribution import get_method
from xaudit.attribution.base import AttributionContext, AttributionMethod
from xaudit.errors import ConfigError


@dataclass
class MethodRun:
    """One configured method, instantiated with its validated parameters."""

    name: str
    method: AttributionMethod


def build_methods(methods_cfg: dict, scripted: bool, has_layer: bool) -> list[MethodRun]:
    """Instantiate every configured method; refuse ones the model cannot serve.

    Raises:
        ConfigError: a method needs hooks but the model is TorchScript, or needs a layer
            that was not configured.
    """
    runs = []
    for name, params in methods_cfg.items():
        cls = get_method(name)
        if cls.needs_hooks and scripted:
            raise ConfigError(
                f"`attribution.methods.{name}` needs module hooks, which a TorchScript model refuses"
                " (register_forward_hook is not supported on ScriptModules). Load the model as eager"
                " Python (`model.monai` or `model.factory`), or use input-gradient methods only"
                " (saliency, input_x_gradient, integrated_gradients, smoothgrad, occlusion)."
            )
        if cls.needs_layer and not has_layer:
            raise ConfigError(f"`attribution.methods.{name}` needs `model.layer` (a module path, e.g. a late conv block)")
        runs.append(MethodRun(name, cls(params)))
    return runs


def choose_targets(target_cfg: str, classes: list[str], logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class index to explain per sample: predicted, true label, or a fixed class.

    With ``label``, samples without a label fall back to the predicted class.
    """
    predicted = logits.argmax(dim=1)
    if target_cfg == "predicted":
        return predicted
    if target_cfg == "label":
        labels = labels.to(predicted.device)
        return torch.where(labels >= 0, labels, predicted)
    if target_cfg in classes:
        return torch.full_like(predicted, classes.index(target_cfg))
    raise ConfigError(f"`attribution.target` must be predicted, label or one of {classes}. Got {target_cfg!r} instead.")


def subject_seed(seed: int, subject_id: str) -> int:
    """A per-subject seed independent of batch composition."""
    digest = hashlib.sha256(f"{seed}:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def estimate_max_batch(
    model: torch.nn.Module, sample: torch.Tensor, device: torch.device, fraction: float, cap: int | None
) -> int:
    """How many input-sized samples fit one forward+backward within the memory budget.

    Measures one sample's activation memory with forward hooks (outputs kept for the
    backward, plus their gradients), and divides the budget (free CUDA memory, or
    available RAM, times ``fraction``) by it. The config's ``attribution.max_batch`` caps it.
    """
    per_sample = _activation_bytes(model, sample[:1]) * 2 + sample[:1].numel() * 4 * 3
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
    else:
        free = psutil.virtual_memory().available
    budget = int(free * fraction)
    fit = max(1, budget // max(per_sample, 1))
    default_cap = 64 if device.type == "cuda" else 16
    return int(max(1, min(fit, cap if cap is not None else default_cap)))


def tune_max_batch(
    model: torch.nn.Module, sample: torch.Tensor, cap: int, precision: torch.dtype | None = None,
    budget_s: float = 15.0, clock=time.perf_counter, repeats: int = 3, patience: int = 2,
) -> tuple[int, dict[int, float]]:
    """The batch size, at most ``cap``, with the highest forward+backward throughput.

    Bigger is not always faster. On 2 CPU cores a MONAI ResNet-18 at 64^3 ran 0.54 samples/s
    at batch 2 and 0.36 at batch 8, and xaudit's passes at the memory-bound batch of 16 ran at
    0.75 of the best rate; at 32^3 with a quarter of the channels, 16 was the fastest. This
    times forward+backward to the input (what the gradient methods run) at 1, 2, 4, ... up to
    ``cap``, after a warm-up, ``repeats`` times per size keeping the fastest (a busy machine
    only ever slows a timing down, so one slow sample cannot make a size look bad), and stops
    when ``patience`` sizes in a row run more than 10 % below the best so far, or when the
    next size would overrun ``budget_s`` seconds. (Measured: with one timing per size a
    noisy 2-core machine picked batch 1 in one run and 8 in the next on the same model.)

    ``clock`` is the timer (seconds); tests pass a simulated one.

    Returns:
        The fastest size measured and the rates (samples/s) by size.
    """
    if cap <= 1:
        return max(cap, 1), {}
    sizes = [1 << k for k in range(cap.bit_length()) if 1 << k <= cap]
    sizes += [cap] if sizes[-1] != cap else []

    def seconds(batch: int) -> float:
        x = sample[:1].expand(batch, *sample.shape[1:]).clone().requires_grad_(True)
        _synchronise(x.device)
        t0 = clock()
        with torch.enable_grad(), torch.autocast(x.device.type, dtype=precision or torch.float32,
                                                 enabled=precision is not None):
            out = model(x)
            torch.autograd.grad(out.reshape(batch, -1)[:, 0].float().sum(), x)
        _synchronise(x.device)
        return clock() - t0

    start = clock()
    seconds(1)  # warm-up: the first call allocates and picks kernels
    rates: dict[int, float] = {}
    worse = 0
    for size in sizes:
        if rates:
            previous = max(rates)
            expected = repeats * previous / rates[previous] * size / previous
            if clock() - start + expected > budget_s:
                break
        rates[size] = size / max(min(seconds(size) for _ in range(repeats)), 1e-9)
        worse = worse + 1 if rates[size] < 0.9 * max(rates.values()) else 0
        if worse >= patience:
            break
    return max(rates, key=rates.get), rates


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(_name, _m, _args, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        return x.numel() * 4 * 50  # no hooks on TorchScript (also inside a wrapper): a generous guess
    with forward_hooks(leaf_modules(model), hook), torch.no_grad():
        model(x)
    return total


def make_context(
    layer, layer_name, max_batch: int, seed: int, baseline_mean, subject_ids: list[str], foreground=None, regions=None,
    logits=None,
) -> AttributionContext:
    """The per-batch context; per-subject seeds when the context supports them."""
    ctx = AttributionContext(
        layer=layer,
        layer_name=layer_name,
        max_batch=max_batch,
        seed=seed,
        baseline_mean=baseline_mean,
        region_labels=regions,
        foreground=foreground,
        logits=logits,
    )
    if hasattr(ctx, "sample_seeds"):
        ctx.sample_seeds = torch.tensor([subject_seed(seed, s) for s in subject_ids], dtype=torch.long)
    return ctx
