"""The one way xaudit captures what a network's modules compute: forward hooks that are
always removed again (also when the forward pass raises)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import nn

#: ``hook(name, module, args, output)``; a non-None return replaces the module's output
Hook = Callable[[str, nn.Module, tuple, Any], Any]


@contextmanager
def forward_hooks(modules: Mapping[str, nn.Module] | Iterable[tuple[str, nn.Module]], hook: Hook,
                  pre: bool = False, first: bool = False) -> Iterator[None]:
    """Call ``hook`` after (or with ``pre``, before) each named module's forward, while inside.

    Args:
        modules: ``{name: module}`` or ``(name, module)`` pairs.
        hook: ``hook(name, module, args, output)``; ``output`` is None for pre-hooks. Its
            return value, when not None, replaces the output (forward hooks) or the
            arguments (pre-hooks), as in PyTorch.
        pre: register forward pre-hooks instead.
        first: run before the hooks already on each module (PyTorch's ``prepend``).
    """
    items = modules.items() if isinstance(modules, Mapping) else modules
    handles = []
    try:
        for name, module in items:
            if pre:
                handles.append(module.register_forward_pre_hook(lambda m, args, name=name: hook(name, m, args, None),
                                                                prepend=first))
            else:
                handles.append(module.register_forward_hook(lambda m, args, out, name=name: hook(name, m, args, out),
                                                            prepend=first))
        yield
    finally:
        for handle in handles:
            handle.remove()


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module without children, in registration order."""
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]
