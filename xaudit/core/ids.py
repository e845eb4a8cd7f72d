"""File-name-safe subject ids: how a run names each subject's files."""

from __future__ import annotations

import re

SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_id(subject_id: str) -> str:
    """A file-name-safe form of an id: no separators, no leading dots, bounded length."""
    cleaned = SAFE_ID.sub("_", subject_id).lstrip(".") or "_"
    return cleaned[:120]


def distinct_file_ids(values) -> dict[str, str]:
    """Each value's `safe_file_id`, made distinct: values whose safe forms collide (also
    ignoring case, as macOS and Windows file systems do), e.g. ``site A`` and ``site_A``,
    each get a short hash of the value as given, so no file replaces another."""
    import hashlib

    values = [str(v) for v in dict.fromkeys(values)]
    safe = {v: safe_file_id(v) for v in values}
    counts: dict[str, int] = {}
    for name in safe.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    return {v: name if counts[name.lower()] == 1 else f"{name[:110]}~{hashlib.sha1(v.encode()).hexdigest()[:8]}"
            for v, name in safe.items()}
