"""The pass's preprocessed inputs, kept for the dataset-level stages (`xaudit.data.cache`):
the same tensors the pass ran, within a byte budget, and a plain load for the rest."""

from __future__ import annotations

import numpy as np
import torch

from conftest import make_cohort, make_config
from xaudit.config import load_config
from xaudit.core.outputs import RunDirectory
from xaudit.data import cache
from xaudit.data.cache import InputCache
from xaudit.data.loading import LoadedImage, load_subject
from xaudit.stages.subject_outputs import SubjectOutputs
from xaudit.stages.subject_pass import subject_pass_stage
from xaudit.stages.validate import validate_setup


def image(n: int, value: float = 1.0, before: bool = False) -> LoadedImage:
    tensor = torch.full((1, n), value)
    return LoadedImage(tensor=tensor, affine=np.eye(2), before_intensity=tensor - 1 if before else None)


FG = torch.zeros(0, dtype=torch.bool)


def test_first_come_first_kept_within_the_budget():
    inputs = InputCache(max_bytes=3 * 4 * 10)  # three images of 10 floats
    assert [inputs.offer(f"s{k}", image(10), FG) for k in range(5)] == [True, True, True, False, False]
    assert len(inputs) == 3 and inputs.held_bytes == 120
    assert not inputs.offer("s0", image(1), FG)  # an id already held is not replaced
    assert not InputCache(max_bytes=0).offer("s", image(1), FG)
    counted = InputCache(max_bytes=10**6, max_subjects=2)
    assert [counted.offer(f"s{k}", image(1), FG) for k in range(3)] == [True, True, False]
    both = InputCache(max_bytes=1000)
    both.offer("a", image(10, before=True), torch.ones(10, dtype=torch.bool))
    assert both.held_bytes == 40 + 40 + 10  # input, the image before intensity, foreground
    same = image(10)
    both.offer("b", LoadedImage(same.tensor, same.affine, same.tensor), FG)  # no intensity step: counted once
    assert both.held_bytes == 90 + 40


def test_the_budget_is_at_most_a_tenth_of_the_memory_available(monkeypatch):
    monkeypatch.setattr(cache.psutil, "virtual_memory", lambda: type("M", (), {"available": 100 * 2**20})())
    assert InputCache().max_bytes == 10 * 2**20
    monkeypatch.setattr(cache.psutil, "virtual_memory", lambda: type("M", (), {"available": 2**40})())
    assert InputCache().max_bytes == cache.MAX_BYTES


def test_a_kept_input_comes_back_as_a_copy_and_the_rest_is_loaded(tmp_path, monkeypatch):
    manifest = make_cohort(tmp_path / "cohort", n=4)
    config = load_config(make_config(tmp_path, manifest, methods={"saliency": {}}))
    setup = validate_setup(config)
    first, second = setup.subjects[:2]
    loaded = load_subject(first, setup.transforms, setup.spatial_dims)
    setup.inputs.offer(first.subject_id, loaded, FG)
    calls = []
    monkeypatch.setattr(cache, "load_subject", lambda s, *a: calls.append(s.subject_id) or load_subject(s, *a))
    got = setup.inputs.load(first, setup.transforms, setup.spatial_dims)
    torch.testing.assert_close(got.tensor, loaded.tensor)
    got.tensor += 1  # a stage that changes its copy does not change the kept one
    torch.testing.assert_close(setup.inputs.load(first, setup.transforms, setup.spatial_dims).tensor, loaded.tensor)
    setup.inputs.load(second, setup.transforms, setup.spatial_dims)
    assert calls == [second.subject_id] and setup.inputs.hits == 2


def test_the_pass_keeps_exactly_the_inputs_it_ran(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", n=5)
    config = load_config(make_config(tmp_path, manifest, methods={"saliency": {}}))
    setup = validate_setup(config)
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.prepare(resume=False)
    outputs = SubjectOutputs(run_dir, layout=config.output_layout, method_params=dict(config.attribution.methods),
                             classes=tuple(config.model.classes))
    result = subject_pass_stage(setup, setup.subjects, outputs, max_batch=2)
    assert len(result.done) == len(setup.subjects) == len(setup.inputs)
    for subject in setup.subjects:
        torch.testing.assert_close(setup.inputs.load(subject, setup.transforms, setup.spatial_dims).tensor,
                                   load_subject(subject, setup.transforms, setup.spatial_dims).tensor)


def test_the_interventions_get_the_same_images_and_foregrounds_from_the_cache(tmp_path):
    """Masks from the manifest (the pass's foreground reused) and estimated ones (estimated again)."""
    from xaudit.stages.interventions import _load, split_transforms

    for masks in (True, False):
        manifest = make_cohort(tmp_path / f"cohort{masks}", n=4, with_masks=masks)
        (tmp_path / f"c{masks}").mkdir()
        config = load_config(make_config(tmp_path / f"c{masks}", manifest, methods={"saliency": {}},
                                         data__mask_column="mask" if masks else None))
        cold, warm = validate_setup(config), validate_setup(config)
        run_dir = RunDirectory(tmp_path / f"run{masks}")
        run_dir.prepare(resume=False)
        outputs = SubjectOutputs(run_dir, layout=config.output_layout, method_params=dict(config.attribution.methods),
                                 classes=tuple(config.model.classes))
        subject_pass_stage(warm, warm.subjects, outputs, max_batch=2)
        spatial, _ = split_transforms(config.data.transforms, warm.spatial_dims)
        expected, _ = _load(cold, cold.subjects, spatial, config.model.classes)
        got, _ = _load(warm, warm.subjects, spatial, config.model.classes)
        assert warm.inputs.hits == len(warm.subjects) and cold.inputs.hits == 0
        assert [s.subject_id for s in got] == [s.subject_id for s in expected]
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_array_equal(a.foreground, b.foreground)
