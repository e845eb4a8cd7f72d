"""Native-space round trip: maps land on the source image's exact grid and affine."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import OBLIQUE_AFFINE, write_nifti
from xaudit.config import TransformsConfig
from xaudit.data import build_transforms, load_subject, native_grid, resample_between_grids, write_volume_like
from xaudit.data.manifest import Subject


def subject_for(path):
    return Subject("s", "s", 2, (path,), 0)


def smooth_volume(shape):
    grid = np.indices(shape).astype(np.float32)
    return (np.sin(grid[0] / 3.0) + np.cos(grid[1] / 4.0) + (grid[2] / shape[2] if len(shape) > 2 else 0)).astype(np.float32)


@pytest.mark.parametrize(
    "transforms",
    [
        {},
        {"orientation": "RAS"},
        {"orientation": "RAS", "spacing": [1.5, 1.5, 1.5]},
        {"orientation": "LPI", "spacing": [2.0, 1.0, 1.0], "spatial_size": [16, 20, 18]},
        {"orientation": "RAS", "spatial_size": [12, 12, 12], "size_mode": "resize"},
    ],
)
def test_preprocessed_image_maps_back_onto_the_stored_grid(tmp_path, transforms):
    shape = (20, 24, 14)
    data = smooth_volume(shape)
    path = write_nifti(tmp_path / "img.nii.gz", data, OBLIQUE_AFFINE)
    loaded = load_subject(subject_for(path), build_transforms(TransformsConfig(**transforms), 3), 3)
    affine, native_shape, reference = native_grid(path, 3)
    back = resample_between_grids(loaded.tensor[0], loaded.affine, affine, native_shape).numpy()
    assert back.shape == shape
    # voxels well inside the field of view are recovered (interpolation error only)
    inner = (slice(4, -4), slice(4, -4), slice(3, -3))
    covered = back[inner] != 0
    assert covered.mean() > 0.8
    err = np.abs(back[inner][covered] - data[inner][covered])
    assert np.median(err) < 0.15, transforms
    out = write_volume_like(back, reference, tmp_path / "map.nii.gz")
    written = nib.load(str(out))
    assert written.shape == shape
    np.testing.assert_allclose(written.affine, nib.load(str(path)).affine, atol=1e-6)
    assert written.get_data_dtype() == np.float32


def test_identity_when_no_transforms(tmp_path):
    data = np.random.default_rng(0).normal(size=(9, 8, 7)).astype(np.float32)
    path = write_nifti(tmp_path / "img.nii.gz", data, OBLIQUE_AFFINE)
    loaded = load_subject(subject_for(path), build_transforms(TransformsConfig(), 3), 3)
    affine, native_shape, _ = native_grid(path, 3)
    back = resample_between_grids(loaded.tensor[0], loaded.affine, affine, native_shape).numpy()
    np.testing.assert_allclose(back, data, atol=1e-6)


def test_2d_images_round_trip_including_trailing_singleton(tmp_path):
    data = smooth_volume((30, 26))
    aff = np.array([[0.8, 0.1, 0, 5], [0.0, 1.2, 0, -3], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    for name, stored in [("flat.nii.gz", data), ("slab.nii.gz", data[..., None])]:
        path = write_nifti(tmp_path / name, stored, aff)
        loaded = load_subject(subject_for(path), build_transforms(TransformsConfig(orientation="RA", spacing=[1.0, 1.0]), 2), 2)
        affine, shape, reference = native_grid(path, 2)
        back = resample_between_grids(loaded.tensor[0], loaded.affine, affine, shape).numpy()
        out = nib.load(str(write_volume_like(back, reference, tmp_path / f"map_{name}")))
        assert out.shape == stored.shape
        np.testing.assert_allclose(out.affine, aff, atol=1e-6)
        inner = (slice(3, -3), slice(3, -3))
        assert np.median(np.abs(back[inner] - data[inner])) < 0.1


def test_nearest_resampling_keeps_masks_binary(tmp_path):
    mask = torch.zeros(10, 10, 10)
    mask[3:7, 3:7, 3:7] = 1
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    out = resample_between_grids(mask, aff, np.diag([1.0, 1.0, 1.0, 1.0]), (20, 20, 20), mode="nearest")
    assert set(torch.unique(out).tolist()) <= {0.0, 1.0}
    assert float(out.sum()) == pytest.approx(float(mask.sum()) * 8, rel=0.2)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_save_image_writes_what_nibabel_writes(tmp_path, suffix, monkeypatch):
    # the map writer compresses with ISA-L (or zlib where python-isal is absent): whichever
    # deflate wrote it, the file decodes to exactly nib.save's bytes, and the same image gives
    # the same file (a zero gzip mtime, as nibabel's)
    import gzip

    import xaudit.data.native as native

    data = smooth_volume((9, 11, 7))
    reference = nib.Nifti1Image(data, OBLIQUE_AFFINE)
    nib.save(reference, tmp_path / f"nib{suffix}")
    expected = (tmp_path / f"nib{suffix}").read_bytes()
    for name, module in [("isal", native._gzip), ("zlib", gzip)]:
        monkeypatch.setattr(native, "_gzip", module)
        first = native.save_image(reference, tmp_path / f"{name}{suffix}").read_bytes()
        again = native.save_image(reference, tmp_path / f"{name}-again{suffix}").read_bytes()
        assert first == again
        if suffix == ".nii.gz":
            assert gzip.decompress(first) == gzip.decompress(expected)
            assert first[4:8] == b"\0\0\0\0"  # gzip mtime
        else:
            assert first == expected
        loaded = nib.load(tmp_path / f"{name}{suffix}")
        np.testing.assert_array_equal(loaded.get_fdata(dtype=np.float32), data)
        np.testing.assert_allclose(loaded.affine, reference.affine)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left


def test_written_maps_use_the_fast_deflate_when_installed():
    # python-isal is a dependency on the platforms it has wheels for: there the writer must use it
    pytest.importorskip("isal")
    import xaudit.data.native as native

    assert native._gzip.__name__ == "isal.igzip"


def test_save_image_compresses_an_uppercase_gz_name_as_nibabel_does(tmp_path):
    import xaudit.data.native as native

    image = nib.Nifti1Image(smooth_volume((6, 5, 4)), OBLIQUE_AFFINE)
    path = native.save_image(image, tmp_path / "MAP.NII.GZ")
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # gzip, as nib.save writes it
    np.testing.assert_array_equal(nib.load(path).get_fdata(dtype=np.float32), image.get_fdata(dtype=np.float32))
