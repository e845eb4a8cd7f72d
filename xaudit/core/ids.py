"""File-name-safe subject ids: how a run names each subject's files."""

from __future__ import annotations

import re

SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_id(subject_id: str) -> str:
    """A file-name-safe form of an id: no separators, no leading dots, bounded length."""
    cleaned = SAFE_ID.sub("_", subject_id).lstrip(".") or "_"
    return cleaned[:120]
