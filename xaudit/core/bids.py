"""The BIDS-derivatives layout of the attribution volumes (``output_layout: bids``).

With it, a run directory is also a BIDS derivative dataset (BIDS 1.9, "Derivatives"):
``dataset_description.json`` with ``DatasetType: derivative`` and ``GeneratedBy``, and per
subject and method

    sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>]_desc-<method>_attribution.nii.gz
    sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>]_desc-<method>_attribution.json

where the JSON sidecar names the method, its parameters, the attribution target and the
source image. Labels come from the subject id: a leading ``sub-`` is dropped, a ``_ses-<x>``
part gives the session, and characters BIDS labels do not allow (anything not a letter or
digit) are dropped; `check_labels` refuses two ids that would share a file. The other
outputs of the run (audit.json, report, records) stay where they are.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from xaudit.core.outputs import write_text
from xaudit.errors import ConfigError

BIDS_VERSION = "1.9.0"
LAYOUTS = ("xaudit", "bids")
_SESSION = re.compile(r"[_-]ses-([A-Za-z0-9]+)")


def bids_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def bids_entities(subject_id: str) -> tuple[str, str | None]:
    """``(subject label, session label or None)`` of a manifest subject id.

    ``sub-01_ses-2`` -> ``("01", "2")``; ``patient_07`` -> ``("patient07", None)``.
    """
    session = _SESSION.search(subject_id)
    rest = _SESSION.sub("", subject_id) if session else subject_id
    rest = rest[4:] if rest.lower().startswith("sub-") else rest
    return bids_label(rest), session.group(1) if session else None


def bids_stem(subject_id: str, method: str) -> Path:
    """The volume's path without suffix, relative to the run directory."""
    sub, ses = bids_entities(subject_id)
    folder = Path(f"sub-{sub}") / (f"ses-{ses}" if ses else "") / "anat"
    name = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + f"_desc-{bids_label(method)}_attribution"
    return folder / name


def attribution_file(run_dir, layout: str, subject, method: str) -> Path:
    """Where a subject's attribution volume of ``method`` lives in the run directory, for ``layout``."""
    if layout == "bids":
        return Path(run_dir.root) / f"{bids_stem(subject.subject_id, method)}.nii.gz"
    return run_dir.attribution_path(method, subject.safe_id)


def check_labels(subject_ids: list[str]) -> None:
    """Refuse ids that give no BIDS label, or two ids that give the same one (they would share a file)."""
    seen: dict[tuple[str, str | None], str] = {}
    for sid in subject_ids:
        entities = bids_entities(sid)
        if not entities[0]:
            raise ConfigError(f"`output_layout: bids`: subject id {sid!r} has no letter or digit to make a BIDS "
                              "label of; rename it in the manifest or use output_layout: xaudit")
        if entities in seen:
            raise ConfigError(f"`output_layout: bids`: subject ids {seen[entities]!r} and {sid!r} give the same BIDS "
                              f"label sub-{entities[0]}" + (f"_ses-{entities[1]}" if entities[1] else "")
                              + "; make them differ in a letter or digit, or use output_layout: xaudit")
        seen[entities] = sid


def write_dataset_description(root: Path, version: str) -> Path:
    """``dataset_description.json`` of the derivative dataset."""
    description = {
        "Name": "xaudit attribution maps",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "xaudit", "Version": version,
                         "Description": "attribution maps of a classifier, one per subject and method"}],
    }
    return write_text(Path(root) / "dataset_description.json", json.dumps(description, indent=2) + "\n")


def write_sidecar(volume: Path, method: str, params: dict, target: str, source: Path) -> Path:
    """The JSON sidecar of one attribution volume: method, parameters, target, source image."""
    sidecar = {
        "Description": f"{method} attribution map: signed, positive = evidence for the target class",
        "Method": method,
        "Parameters": params,
        "Target": target,
        "Sources": [str(source)],
    }
    path = Path(str(volume).removesuffix(".nii.gz") + ".json")
    return write_text(path, json.dumps(sidecar, indent=2, default=str) + "\n")
