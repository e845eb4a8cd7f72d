"""The schema version of every JSON artifact a run writes, in one style: ``"MAJOR.MINOR"``.

The major number changes only when a required key changes meaning or disappears (scripts
check it); the minor number when keys are added. `compatible` is the one reader's check.
"""

from __future__ import annotations

AUDIT = "1.0"          # audit.json (xaudit/schemas/audit.schema.json)
RULES = "1.0"          # rules.json
BIAS = "1.0"           # audit.json's "bias" block
COMPARE = "1.0"        # compare.json (xaudit/schemas/compare.schema.json)
INTERROGATION = "1.0"  # interrogate/interrogation.json, interrogate/retention.json
SHARD = "1.0"          # shard-<i>-of-<n>.json


def compatible(found, expected: str) -> bool:
    """True when ``found`` (a version read from a file) has ``expected``'s major number.

    Files written before versions were strings carry the bare major number (``1``).
    """
    major = str(expected).split(".")[0]
    return str(found).split(".")[0] == major if found is not None else False
