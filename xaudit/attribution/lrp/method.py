"""The ``lrp`` attribution method: layer-wise relevance propagation with composite rules.

Bach et al. (2015), "On pixel-wise explanations for non-linear classifier decisions by
layer-wise relevance propagation", PLoS ONE; Montavon et al. (2019), "Layer-wise
relevance propagation: an overview"; composites as in Kohlbrenner et al. (2020).

The relevance at the output is the target logit (``one_hot(target) * logits``); each
sample's map sums to that logit minus what the rules give to biases and to the epsilon
stabiliser (counted in a `Ledger` during the backward pass). Per-sample statistics:

- ``absorbed_share = absorbed / |logit|``: the part of the logit the rules leave to biases,
  stabilisers and a zero-padded input border by design (large for ``epsilon`` on networks with biases and folded
  BatchNorms; about 0 for z+, alpha-beta and the flat/box input rules, which leave biases out);
- ``conservation_error = |sum(R) + absorbed - logit| / |logit|``: relevance lost or made up
  by anything the rules do not account for (an operation without a rule, a numerical
  breakdown). Float32 rounding keeps it near 1e-5 on the zoo models; a large value says
  the map is not to be trusted;
- ``relevance_sum = sum(R)``.
"""

from __future__ import annotations

import functools
import weakref
from typing import Literal

import torch
from pydantic import Field, model_validator

from xaudit.config.methods import CompositeName, LRPParams, RuleName
from xaudit.attribution.base import (
    AttributionContext,
    AttributionMethod,
    AttributionResult,
    MethodParams,
    chunks,
)
from xaudit.attribution.lrp.composite import COMPOSITES, RuleSettings, assign_rules
from xaudit.attribution.lrp.propagate import PreparedModel, attention_modules, prepare_model, relevance
from xaudit.attribution.lrp.rules import Ledger, is_rule_layer
from xaudit.errors import ConfigError, ModelError, choices_message

def _fingerprint(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    tensors = list(model.parameters()) + list(model.buffers())
    return (model.training, tuple((t.data_ptr(), t._version, tuple(t.shape), str(t.device)) for t in tensors))


class LRP(AttributionMethod):
    name = "lrp"
    supports_amp = False  # its own backward rules: float32 only
    summary = "layer-wise relevance propagation with composite rules (epsilon / z+ / flat ...)"
    Params = LRPParams
    needs_hooks = True
    reference = "Bach et al. 2015, doi:10.1371/journal.pone.0130140; Montavon et al. 2019, doi:10.1007/978-3-030-28954-6_10"

    def __init__(self, params=None):
        super().__init__(params)
        self._cache: tuple[weakref.ref, tuple, PreparedModel] | None = None

    def prepare(self, model: torch.nn.Module, example: torch.Tensor) -> PreparedModel:
        """The patched copy of ``model``, reused while the model's parameters are unchanged."""
        if isinstance(model, torch.jit.ScriptModule):
            raise ModelError("`lrp` needs an eager PyTorch model (it replaces layer forwards); this one is TorchScript.")
        key = _fingerprint(model)
        if self._cache is not None and self._cache[0]() is model and self._cache[1] == key:
            return self._cache[2]
        self._check_layer_rules(model)
        attention = attention_modules(model)
        if attention:
            name, kind = attention[0]
            raise ModelError(
                f"`lrp` has no rule for attention: `{name}` is a {kind} ({len(attention)} attention module(s)); "
                "use integrated_gradients, saliency or occlusion for this model."
            )
        p = self.params
        rules_for = functools.partial(assign_rules, composite=p.composite, settings=RuleSettings(p.epsilon, p.gamma, p.alpha, p.beta, p.input_low, p.input_high), overrides=dict(p.layer_rules))
        prepared = prepare_model(model, example, rules_for, canonize=p.canonize)
        self._cache = (weakref.ref(model), key, prepared)
        return prepared

    def passes_per_sample(self, spatial_shape=None) -> float:
        # measured against saliency on small MONAI DenseNets (16^3-32^3, CPU): the
        # epsilon/flat composites ~1.3-2x, z+ ~2.2-2.5x, alpha-beta (two backward terms) ~3-3.6x
        return {"alpha_beta": 3.5, "epsilon_alpha_beta": 3.5, "zplus": 2.5}.get(self.params.composite, 2.0)

    def _check_layer_rules(self, model: torch.nn.Module) -> None:
        """Every overridden layer exists and is a Linear/ConvNd layer."""
        modules = dict(model.named_modules())
        rule_layers = [name for name, module in modules.items() if is_rule_layer(module)]
        for layer in self.params.layer_rules:
            if layer not in modules:
                raise ConfigError(choices_message("layer in `attribution.methods.lrp.layer_rules`", layer, rule_layers))
            if layer not in rule_layers:
                raise ConfigError(
                    f"`attribution.methods.lrp.layer_rules.{layer}` names a {type(modules[layer]).__name__}; rules apply "
                    f"to Linear/Conv1d-3d layers: {rule_layers[:40]}"
                )

    def preflight(self, model, example, ctx: AttributionContext) -> None:
        """The prepared copy (attention refused, layer rules checked) and one pass (the input rule's layer)."""
        self.attribute(model, example, torch.zeros(example.shape[0], dtype=torch.long), ctx)

    def attribute(self, model, inputs, targets, ctx: AttributionContext) -> AttributionResult:
        prepared = self.prepare(model, inputs[:1].detach())
        maps = torch.empty(inputs.shape, dtype=torch.float32, device=inputs.device)
        logits = torch.empty(inputs.shape[0], dtype=torch.float32, device=inputs.device)
        absorbed = torch.zeros_like(logits)
        for part in chunks(inputs.shape[0], ctx.max_batch):
            ledger = Ledger()
            maps[part], logits[part], _ = relevance(prepared, inputs[part], targets[part], ledger=ledger)
            if ledger.absorbed is not None:
                absorbed[part] = ledger.absorbed.to(absorbed.dtype)
        self._check_input_rule(prepared)
        total = maps.flatten(1).sum(1)
        scale = logits.abs().clamp(min=1e-12)
        error = (total + absorbed - logits).abs() / scale
        return AttributionResult(
            maps, stats={"conservation_error": error, "absorbed_share": absorbed / scale, "relevance_sum": total}
        )

    def _check_input_rule(self, prepared: PreparedModel) -> None:
        first = COMPOSITES[self.params.composite][2]
        if first and not prepared.state.input_layers:
            raise ModelError(
                f"`attribution.methods.lrp.composite` is {self.params.composite!r}, whose {first!r} rule is for the "
                "layer that reads the model input, but no Linear/Conv layer reads the input tensor directly (the "
                "model transforms it first). Use composite 'epsilon_plus' or 'epsilon_alpha_beta' instead."
            )
