"""The attribution method interface: one small base class every method derives from.

A method receives a batch of preprocessed inputs ``(N, C, *spatial)`` and one target
class per sample, and returns maps of exactly the input's shape. The engine
(`xaudit.attribution.engine`) streams the dataset, picks targets, maps the results
back to each image's native grid and writes them; a method only computes.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from xaudit.config.methods import MethodParams


@dataclass
class AttributionContext:
    """What a method may need beyond the model, inputs and targets.

    Attributes:
        layer: the module named by ``model.layer`` (for layer methods such as Grad-CAM),
            or None when no layer was configured / the model is TorchScript.
        layer_name: its dotted module path.
        max_batch: how many input-sized samples one forward+backward may hold. Methods
            that expand each subject (steps, noise samples, perturbations) process
            ``N * expansion`` samples in chunks of at most this many.
        seed: seed for stochastic methods; the same seed must give the same maps.
        baseline_mean: the dataset mean input ``(C, *spatial)`` when known (for
            baselines "mean"), else None.
        region_labels: integer region map per sample ``(N, *spatial)`` (atlas or
            supervoxels, 0 = background) for region methods, or None.
        foreground: boolean mask per sample ``(N, *spatial)`` or None.
        logits: the engine's forward of these very inputs ``(N, K)``, when it has one:
            methods that need f(x) (integrated gradients' completeness check) reuse it
            instead of running the model again.
        sample_seeds: one integer seed per sample ``(N,)`` (the engine derives it from
            the subject id with `stable_seed`), so a stochastic method draws the same
            random numbers for a subject whatever else shares its batch. When None,
            sample ``i`` of the batch uses ``(seed, i)``: deterministic only for the
            same batch composition.
    """

    layer: torch.nn.Module | None = None
    layer_name: str | None = None
    max_batch: int = 16
    seed: int = 0
    baseline_mean: torch.Tensor | None = None
    region_labels: torch.Tensor | None = None
    foreground: torch.Tensor | None = None
    sample_seeds: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class AttributionResult:
    """A method's output for one batch.

    Attributes:
        maps: float32 tensor of the input's shape ``(N, C, *spatial)``, signed.
        stats: per-sample scalars, each a tensor of shape ``(N,)`` (for example
            ``completeness_error`` for integrated gradients); stored per subject and
            summarised in ``audit.json``.
        region_weights: per sample, ``{region_label: weight}`` for region methods
            (LIME); written as a table next to the voxel map.
    """

    maps: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    region_weights: list[dict[int, float]] | None = None


@dataclass
class SharedPass:
    """The engine's one forward+backward per batch, reused by methods that need no more.

    The engine computes, for the batch's own targets, the gradient of the target logit
    with respect to the input and to ``model.layer``'s output in a single backward pass
    (it needs them for features and TCAV anyway); saliency, input x gradient, Grad-CAM and
    Grad-CAM++ are functions of these, so they cost no extra pass. The input gradient is
    computed only when a configured method declares `uses_input_gradient`: the backward
    then stops at ``model.layer`` instead of running through the whole network.

    Attributes:
        inputs: ``(N, C, *spatial)``.
        input_grads: d target logit / d input, same shape; None when no method uses it.
        layer_acts: ``model.layer`` output ``(N, K, *s)`` or None.
        layer_grads: d target logit / d layer output, or None.
    """

    inputs: torch.Tensor
    input_grads: torch.Tensor | None
    layer_acts: torch.Tensor | None = None
    layer_grads: torch.Tensor | None = None


class AttributionMethod(ABC):
    """Base class of every attribution method.

    Subclasses set the class attributes and implement `attribute`. The engine
    calls ``model.eval()`` before; ``model(x)`` returns logits ``(N, K)``.
    """

    #: registry name used in configs (``attribution.methods.<name>``)
    name: ClassVar[str]
    #: one-line description for ``xaudit methods``
    summary: ClassVar[str] = ""
    #: parameter model; its fields and defaults are the method's public parameters
    Params: ClassVar[type[MethodParams]] = MethodParams
    #: needs ``model.layer`` (Grad-CAM family)
    needs_layer: ClassVar[bool] = False
    #: needs module hooks, hence an eager (non-TorchScript) model
    needs_hooks: ClassVar[bool] = False
    #: may run under autocast (``attribution.amp``); False for methods with their own
    #: backward rules, which keep float32
    supports_amp: ClassVar[bool] = True
    #: its `from_shared` reads `SharedPass.input_grads` (the engine computes them only then)
    uses_input_gradient: ClassVar[bool] = False
    #: draws random numbers (noise, baselines, sampling); honours ``ctx.seed``
    stochastic: ClassVar[bool] = False
    #: the paper behind the method, shown by ``xaudit methods``
    reference: ClassVar[str] = ""

    def __init__(self, params: MethodParams | dict[str, Any] | None = None):
        if params is None:
            params = self.Params()
        elif isinstance(params, dict):
            params = self.Params(**params)
        self.params = params

    def passes_per_sample(self, spatial_shape: Sequence[int] | None = None) -> float:
        """Forward+backward passes one subject costs (for the benchmark's limit).

        A forward-only pass counts as 1/3 (the backward costs about twice the forward).
        ``spatial_shape`` is the preprocessed input's spatial size, for methods whose
        cost depends on it (occlusion); the others ignore it.
        """
        return 1.0

    def preflight(self, model: torch.nn.Module, example: torch.Tensor, ctx: AttributionContext) -> None:
        """Refuse, before the run, a model this method cannot serve (`xaudit.attribution.guards`).

        Called once at validate time with one preprocessed input ``(1, C, *spatial)``;
        must be cheap (a forward pass or two). Raises `ModelError`/`ConfigError` naming the
        module; the default checks nothing.
        """

    def from_shared(self, shared: SharedPass) -> AttributionResult | None:
        """The maps from the engine's shared pass, or None when the method needs its own passes.

        A method that overrides this must return exactly what `attribute` would for the
        same inputs and targets (tested in ``tests/test_shared_pass.py``).
        """
        return None

    @abstractmethod
    def attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        ctx: AttributionContext,
    ) -> AttributionResult:
        """Compute maps for a batch.

        Args:
            model: the classifier in eval mode, returning logits ``(N, K)``.
            inputs: preprocessed inputs ``(N, C, *spatial)`` on the model's device.
            targets: class index per sample, ``(N,)`` long.
            ctx: layer, memory budget, seed and optional extras.

        Returns:
            An `AttributionResult` whose ``maps`` have the shape of ``inputs``.
        """

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, summary, parameters with defaults and flags, as ``xaudit methods`` shows."""
        params = {}
        for key, field_info in cls.Params.model_fields.items():
            default = field_info.default
            params[key] = {
                "default": default if isinstance(default, (int, float, str, bool, list, type(None))) else str(default),
                "type": getattr(field_info.annotation, "__name__", str(field_info.annotation)),
                "description": field_info.description or "",
            }
        return {
            "name": cls.name,
            "summary": cls.summary,
            "parameters": params,
            "stochastic": cls.stochastic,
            "needs_layer": cls.needs_layer,
            "needs_hooks": cls.needs_hooks,
            "reference": cls.reference,
        }


def chunks(total: int, size: int) -> list[slice]:
    """Slices covering ``range(total)`` in pieces of at most ``size`` (>= 1)."""
    size = max(1, int(size))
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]


def select_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The logit of each sample's own target class, shape ``(N,)``."""
    return logits.gather(1, targets.view(-1, 1).to(logits.device)).squeeze(1)


def expanded_chunks(n_samples: int, expansion: int, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Walk the ``n_samples * expansion`` (sample, draw) pairs in chunks of at most ``size``.

    Methods that expand each subject (steps, noise draws, perturbations) evaluate the
    pairs in this order, sample-major, so one chunk mixes subjects and every forward
    pass is full. Yields ``(sample_index, draw_index)`` long tensors of the chunk's length.
    """
    total = n_samples * expansion
    for part in chunks(total, size):
        flat = torch.arange(part.start, part.stop)
        yield flat // expansion, flat % expansion


def stable_seed(text: str) -> int:
    """A seed from a string (a subject id) that is the same in every process and run.

    Python's ``hash`` is salted per process, so it cannot be used for this.
    """
    return int.from_bytes(hashlib.sha256(str(text).encode("utf-8")).digest()[:8], "little") >> 1


def sample_generators(ctx: AttributionContext, n_samples: int, device: torch.device) -> list[torch.Generator]:
    """One seeded `torch.Generator` per sample on ``device`` (see `AttributionContext.sample_seeds`).

    The generator of sample ``i`` is seeded from ``(ctx.seed, sample_seeds[i])``, so its
    draws depend neither on the batch size nor on the other subjects in the batch.
    """
    if ctx.sample_seeds is not None and len(ctx.sample_seeds) != n_samples:
        raise ValueError(f"ctx.sample_seeds has {len(ctx.sample_seeds)} entries for a batch of {n_samples} samples")
    keys = ctx.sample_seeds.tolist() if ctx.sample_seeds is not None else range(n_samples)
    generators = []
    for key in keys:
        # SeedSequence mixes both numbers well: seeds (s, k) and (s + 1, k - 1) do not collide.
        state = np.random.SeedSequence([int(ctx.seed) & 0xFFFFFFFFFFFFFFFF, int(key) & 0xFFFFFFFFFFFFFFFF]).generate_state(2)
        generator = torch.Generator(device=device)
        generator.manual_seed((int(state[0]) << 31) ^ int(state[1]))
        generators.append(generator)
    return generators
