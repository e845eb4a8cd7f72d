"""The project's error types, each mapped to one exit code in `xaudit.cli`.

Exit codes (stable, documented in the README):
    0  done
    1  findings at or above the configured severity (only with --fail-on-findings)
    2  config, data, model, output or usage error (`XauditUsageError` and its subclasses)
    3  anything unexpected: one line, the traceback in a crash file (`xaudit.core.crash`)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class XauditError(Exception):
    """Base class of every error xaudit raises on purpose."""

    exit_code = 3


class XauditUsageError(XauditError):
    """The user can fix it: config, data, model or command line. Exit code 2."""

    exit_code = 2


class ConfigError(XauditUsageError):
    """A config key is missing, unknown or has a wrong value."""


class DataError(XauditUsageError):
    """A manifest row, image or mask cannot be used."""


class ModelError(XauditUsageError):
    """The model cannot be loaded, or does not fit the config (classes, layer)."""


class OutputError(XauditUsageError):
    """The output directory cannot be written, is locked, or is not a run."""


class SubjectError(XauditUsageError):
    """A subject failed with ``on_error: fail`` (with ``skip`` it goes to errors.csv). Exit 2."""

    def __init__(self, subject_id: str, stage: str, reason: str):
        super().__init__(f"subject {subject_id!r} failed in {stage}: {reason}")
        self.subject_id = subject_id
        self.stage = stage
        self.reason = reason


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or ''."""
    if len(str(name)) > 100:  # difflib is quadratic; nothing that long is a typo of a name
        return ""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def choices_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """'Unknown method 'x'. Valid methods are [...]. Did you mean 'y'?'"""
    choices = sorted(str(c) for c in choices)
    shown = choices if len(choices) <= 40 else choices[:40] + [f"... ({len(choices) - 40} more)"]
    return f"Unknown {kind} {short(name)}. Valid {kind}s are {shown}.{did_you_mean(name, choices)}"


OUT_OF_MEMORY = ("out of memory (an image, a batch or a result did not fit in RAM): lower `data.batch_size` or "
                 "`data.max_image_gb`, downsample with `data.transforms`, or use a machine with more memory")


def short(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters: how every message echoes a given value."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 50:  # never repr a huge container
        head = short(list(value)[:10], limit)
        return f"{head[:-1]}, ... ({len(value)} items)]"
    try:
        text = repr(value)
    except RecursionError:
        return f"<recursive {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 12] + f"... ({len(text)} chars)"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first message line, cut to ``limit``; never empty (MemoryError has no message)."""
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines[0]) <= limit else lines[0][: limit - 3] + "..."


def reason_of(exc: BaseException, limit: int = 500) -> str:
    """``Type: first line`` for an unexpected exception, or the message of one of xaudit's own."""
    if isinstance(exc, XauditError):
        return " ".join(str(exc).split())[:limit]
    message = first_line(exc, limit)
    return message if message == type(exc).__name__ else f"{type(exc).__name__}: {message}"
