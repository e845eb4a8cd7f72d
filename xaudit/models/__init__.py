"""The classifier under audit: loading it (TorchScript, MONAI network + checkpoint, factory),
looking up its layers, capturing activations with forward hooks, and its layer features."""

from xaudit.models.loading import (
    LoadedModel,
    check_output,
    find_layer,
    last_linear_name,
    load_model,
    resolve_device,
    unwrapped,
)

__all__ = ["LoadedModel", "check_output", "find_layer", "last_linear_name", "load_model", "resolve_device", "unwrapped"]
