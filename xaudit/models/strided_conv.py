"""The input gradient of a strided convolution as a stride-1 one, where that runs faster.

Every gradient method (saliency, integrated gradients, SmoothGrad, Grad-CAM, SHAP...) spends
most of its time in the backward pass, and on a CPU most of that backward can sit in one
layer: the network's strided stem. Measured on 2 CPU cores (torch 2.13, oneDNN), batch 8 of
40x48x40: the MONAI DenseNet stem (Conv3d 1->8, 7^3, stride 2) takes 8.7 ms forward and
38 to 62 ms for its gradient to the input, two thirds of the whole model's forward+backward.
The same gradient computed on the space-to-depth rearrangement of the input, where the
stride-``s`` convolution with kernel ``k`` is a stride-1 one with ``C_in * s^d`` channels
and kernel ``ceil(k / s)``, took 7.7 ms; for a 1->64 stem the library's own was faster
(34 ms against 49). So nothing is assumed: `choose_layers` times both on each strided
convolution at its real input shape, checks that they agree, and `faster_input_gradients`
swaps in the faster one (a forward hook; the forward itself is untouched). The choice and
its timings go into the run's provenance, like the batch size's. The two are the same sums
in another order: maps agree to float rounding (tests: `test_strided_conv.py`).

Only plain gradients are replaced. A layer is left alone when its weight requires a gradient,
when it is grouped, dilated or not zero-padded, when its ``forward`` was replaced on the
instance (LRP's rules do that, on a copy of the model), and whenever its input needs no
gradient.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from xaudit.models.hooks import forward_hooks

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_INPUT_GRAD = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}

#: the space-to-depth gradient is used only when it takes at most this fraction of the library's time
SPEED_MARGIN = 0.8


def eligible(module: nn.Module) -> bool:
    """A zero-padded, ungrouped, undilated Conv1d/2d/3d with a stride above 1 and a frozen weight."""
    if type(module) not in _CONVS or "forward" in module.__dict__:
        return False
    return (max(module.stride) > 1 and module.groups == 1 and set(module.dilation) == {1}
            and module.padding_mode == "zeros" and not isinstance(module.padding, str)
            and not module.weight.requires_grad)


def space_to_depth_weight(weight: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """``(C_out, C_in, *k)`` -> ``(C_out, C_in * prod(stride), *ceil(k / stride))``.

    Channel ``(c, r_1..r_d)``, tap ``j`` holds ``weight[:, c, s*j + r]`` (zero past the kernel).
    """
    d = len(stride)
    taps = [math.ceil(k / s) for k, s in zip(weight.shape[2:], stride)]
    pad = [p for k, s, j in reversed(list(zip(weight.shape[2:], stride, taps))) for p in (0, s * j - k)]
    w = F.pad(weight, pad)
    c_out, c_in = weight.shape[:2]
    w = w.reshape(c_out, c_in, *[n for j, s in zip(taps, stride) for n in (j, s)])
    w = w.permute(0, 1, *[3 + 2 * i for i in range(d)], *[2 + 2 * i for i in range(d)])
    return w.reshape(c_out, c_in * math.prod(stride), *taps)


def input_gradient(grad_out: torch.Tensor, weight: torch.Tensor, stride: tuple[int, ...],
                   padding: tuple[int, ...], input_shape: tuple[int, ...]) -> torch.Tensor:
    """The gradient to the input of ``conv(x, weight, stride, padding)``, ``x`` of ``input_shape``.

    A stride-1 transposed convolution of ``grad_out`` with `space_to_depth_weight` gives the
    gradient of the space-to-depth input; depth-to-space and the padding's crop give ``x``'s.
    Differentiable in ``grad_out`` (double backward works).
    """
    d = len(stride)
    n, c_in = input_shape[:2]
    w = space_to_depth_weight(weight.to(grad_out.dtype), stride)
    g = _TRANSPOSED[d](grad_out, w)  # (N, C_in * prod(s), *T)
    reach = g.shape[2:]
    g = g.reshape(n, c_in, *stride, *reach)
    g = g.permute(0, 1, *[i for k in range(d) for i in (2 + d + k, 2 + k)])
    g = g.reshape(n, c_in, *[t * s for t, s in zip(reach, stride)])  # the padded input's gradient
    crop = []
    for k in reversed(range(d)):  # keep [padding, padding + length) of each axis, zero-filling short ends
        length, have = input_shape[2 + k], g.shape[2 + k]
        crop += [-padding[k], padding[k] + length - have]
    return F.pad(g, crop)


class _SpaceToDepthBackward(torch.autograd.Function):
    """Identity on the convolution's output; its backward is `input_gradient` to the input."""

    @staticmethod
    def forward(ctx, x, out, weight, stride, padding):
        ctx.save_for_backward(weight)
        ctx.stride, ctx.padding, ctx.input_shape, ctx.dtype = stride, padding, tuple(x.shape), x.dtype
        return out.clone()  # not a view of an input: in-place ops after the layer (ReLU) stay allowed

    @staticmethod
    def backward(ctx, grad_out):
        (weight,) = ctx.saved_tensors
        grad = input_gradient(grad_out, weight, ctx.stride, ctx.padding, ctx.input_shape)
        return grad.to(ctx.dtype), None, None, None, None


def _hook(_name, module, args, out):
    x = args[0] if args else None
    if not (isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled() and eligible(module)):
        return None
    return _SpaceToDepthBackward.apply(x, out.detach(), module.weight.detach(), tuple(module.stride),
                                       tuple(module.padding))


def choose_layers(model: nn.Module, example: torch.Tensor, repeats: int = 3, clock=time.perf_counter) -> dict[str, dict]:
    """Which strided convolutions get the space-to-depth gradient: both timed at each one's input.

    Args:
        model: the eval-mode model (hooks allowed).
        example: a batch of inputs as the pass will see them (its size sets the timed shapes).
        repeats: timings per variant; the fastest is kept (load only ever slows one down).
        clock: the timer (seconds); tests pass a simulated one.

    Returns:
        ``{layer: {"pytorch_ms", "space_to_depth_ms", "used"}}`` for every eligible layer; a
        layer whose two gradients disagree beyond float rounding is never used.
    """
    layers = {name: m for name, m in model.named_modules() if eligible(m)}
    if not layers:
        return {}
    inputs: dict[str, torch.Tensor] = {}

    def capture(name, _m, args, _out):
        inputs.setdefault(name, args[0].detach())

    with forward_hooks(layers, capture), torch.no_grad():
        model(example)
    chosen = {}
    for name, x in inputs.items():
        m = layers[name]
        with torch.no_grad():
            out = m(x)
        g = torch.randn(out.shape, generator=torch.Generator(x.device).manual_seed(0), device=x.device, dtype=out.dtype)

        def library(m=m, x=x, g=g):
            return _INPUT_GRAD[x.dim() - 2](x.shape, m.weight, g, m.stride, m.padding)

        def ours(m=m, x=x, g=g, out=out):
            out.clone()  # what the hook adds to the forward
            return input_gradient(g, m.weight, tuple(m.stride), tuple(m.padding), tuple(x.shape))

        with torch.no_grad():
            reference, candidate = library(), ours()
            scale = reference.abs().max().item() or 1.0
            agree = candidate.shape == reference.shape and (candidate - reference).abs().max().item() <= 1e-4 * scale
            t_library, t_ours = _fastest(library, repeats, clock, x.device), _fastest(ours, repeats, clock, x.device)
        chosen[name] = {"pytorch_ms": round(1000 * t_library, 2), "space_to_depth_ms": round(1000 * t_ours, 2),
                        "used": bool(agree and t_ours <= SPEED_MARGIN * t_library)}
        if not agree:
            log.warning("%s: the space-to-depth gradient disagrees with PyTorch's; not used", name)
    return chosen


def _fastest(fn, repeats: int, clock, device: torch.device) -> float:
    fn()  # warm-up: the first call picks kernels
    best = math.inf
    for _ in range(max(repeats, 1)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, clock() - t0)
    return best


@contextmanager
def faster_input_gradients(model: nn.Module, choice: dict[str, dict]) -> Iterator[None]:
    """While inside, the layers `choose_layers` marked ``used`` take the space-to-depth gradient.

    The hooks run before any other forward hook on the layer, so hooks that capture the
    layer's output (Grad-CAM, features) see the output the gradient flows through. They
    are removed on exit, also when the body raises.
    """
    modules = {name: model.get_submodule(name) for name, entry in choice.items() if entry["used"]}
    with forward_hooks(modules, _hook, first=True):
        yield
