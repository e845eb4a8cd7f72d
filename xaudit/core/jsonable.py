"""The one conversion to JSON-able values, for ``audit.json`` and every other JSON xaudit writes.

NaN and infinities become None (JSON has neither), numpy scalars become Python numbers,
arrays become lists and dict keys become strings, so ``json.dumps`` never needs a
custom encoder and never writes the non-standard ``NaN`` token.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import PurePath
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Return ``value`` with every part converted to a plain JSON type.

    Args:
        value: nested dicts, lists, tuples, dataclasses, numpy arrays/scalars or numbers.

    Returns:
        The same structure built from dict, list, str, int, float, bool and None.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)
