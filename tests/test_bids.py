"""``output_layout: bids``: the attribution volumes as a BIDS derivative dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import make_cohort, make_config
from xaudit.config import load_config
from xaudit.core.bids import bids_entities, bids_stem, check_labels
from xaudit.errors import ConfigError
from xaudit.workflows.audit import run_audit


def test_labels_and_names():
    assert bids_entities("sub-01_ses-2") == ("01", "2")
    assert bids_entities("patient_07") == ("patient07", None)
    assert bids_entities("sub-A1") == ("A1", None)
    assert str(bids_stem("sub-01_ses-pre", "integrated_gradients")) == \
        "sub-01/ses-pre/anat/sub-01_ses-pre_desc-integratedgradients_attribution"
    assert str(bids_stem("s 7", "saliency")) == "sub-s7/anat/sub-s7_desc-saliency_attribution"
    check_labels(["sub-01", "sub-02", "sub-01_ses-2"])
    with pytest.raises(ConfigError, match="'sub-01' and 'sub-0_1' give the same BIDS label sub-01"):
        check_labels(["sub-01", "sub-0_1"])
    with pytest.raises(ConfigError, match="no letter or digit"):
        check_labels(["__"])


@pytest.mark.slow
def test_bids_run_writes_a_derivative_dataset(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", n=6, shape=(12, 14, 10))
    rows = list(csv.DictReader(open(manifest, newline="")))
    rows[0]["subject_id"] = "sub-000_ses-01"  # one subject with a session
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = load_config(make_config(tmp_path, manifest, output_layout="bids"))
    root = Path(run_audit(config).run_dir)
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "xaudit"
    assert description["BIDSVersion"]
    assert not list((root / "attributions").rglob("*.nii.gz")) if (root / "attributions").exists() else True
    volumes = sorted(p.relative_to(root).as_posix() for p in root.glob("sub-*/**/*_attribution.nii.gz"))
    assert len(volumes) == 6 * 3
    assert "sub-000/ses-01/anat/sub-000_ses-01_desc-integratedgradients_attribution.nii.gz" in volumes
    assert "sub-001/anat/sub-001_desc-gradcam_attribution.nii.gz" in volumes
    sidecar = json.loads((root / "sub-001/anat/sub-001_desc-integratedgradients_attribution.json").read_text())
    assert sidecar["Method"] == "integrated_gradients" and sidecar["Parameters"]["steps"] == 4
    assert sidecar["Target"] in ("healthy", "lesion") and sidecar["Sources"][0].endswith("sub-001.nii.gz")
    image = nib.load(str(tmp_path / "cohort" / "images" / "sub-001.nii.gz"))
    volume = nib.load(str(root / "sub-001/anat/sub-001_desc-saliency_attribution.nii.gz"))
    assert volume.shape == image.shape and np.allclose(volume.affine, image.affine)
    audit = json.loads((root / "audit.json").read_text())
    assert audit["artifacts"]["attributions/saliency"] == "sub-*/[ses-*/]anat/*_desc-saliency_attribution.nii.gz"
    page = (root / "subjects" / "sub-001.html").read_text()  # the report finds the volumes at their BIDS names
    assert "at the resolution of the scan (12x14x10 voxels)" in page
