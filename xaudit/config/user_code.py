"""Importing the user's own Python named in a config (``model.factory``, ``data.transforms.python``).

Trusted code: the module is looked up on ``sys.path`` first, then next to the config files
loaded in this process.
"""

from __future__ import annotations

import importlib
import sys

from xaudit.errors import ConfigError


#: folders of the config files loaded in this process: a factory or transform module that
#: is not importable otherwise is looked up there (next to the config, as a user expects)
IMPORT_DIRS: list[str] = []


def add_import_dir(folder) -> None:
    folder = str(folder)
    if folder not in IMPORT_DIRS:
        IMPORT_DIRS.append(folder)


def import_object(spec: str, key: str):
    """Import ``module:attribute`` (trusted user code) with a clear error.

    The module is looked up on ``sys.path`` first, then in the config's folder.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"`{key}` must look like 'package.module:function'. Got {spec!r} instead.")
    try:
        module = _import(module_name)
    except ImportError as exc:
        where = f" (looked on sys.path and in {IMPORT_DIRS})" if IMPORT_DIRS else ""
        raise ConfigError(f"`{key}`: cannot import module {module_name!r}: {exc}{where}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"`{key}`: module {module_name!r} has no attribute {attr!r}") from None


def _import(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        missing = [d for d in IMPORT_DIRS if d not in sys.path]
        if exc.name != top or not missing:
            raise
        sys.path[len(sys.path):] = missing  # after everything else: never shadows an installed package
        return importlib.import_module(module_name)
