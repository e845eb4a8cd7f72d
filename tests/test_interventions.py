"""Counterfactual interventions: the image operations, the statistics, and known answers end to end.

The end-to-end cohorts are fully confounded (every healthy subject from site A, every lesion
subject from site B), so accuracy within a class cannot be compared across sites; the
models' decision rules are known (`known_nets`), so the right verdict is known too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import expit

from conftest import write_nifti
from xaudit.analysis.stats import newcombe_difference, wilson_interval
from xaudit.analysis.interventions import Sample, run_interventions
from xaudit.analysis.interventions import operations as ops
from xaudit.config.interventions import InterventionsParams

SHAPE = (16, 16, 16)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _body(shape=SHAPE) -> np.ndarray:
    grid = np.indices(shape)
    centre = np.array(shape).reshape(-1, 1, 1, 1) / 2
    return (((grid - centre) / (np.array(shape).reshape(-1, 1, 1, 1) / 2.6)) ** 2).sum(0) < 1


def _image(label: int, site: str, rng, gain_b: float = 1.0, marker_b: bool = False, noise_b: float = 0.05,
           field_b: float = 0.0):
    body = _body()
    img = body * (1.0 + 0.1 * rng.standard_normal(SHAPE)) + (noise_b if site == "B" else 0.05) * rng.standard_normal(SHAPE)
    if label:
        img[7:9, 7:9, 7:9] += 2.0
    if site == "B":
        img[body] *= gain_b
        field = 1.0 + field_b * np.linspace(-1, 1, SHAPE[0])[:, None, None] * np.ones(SHAPE)
        img[body] *= field[body]  # a receive-coil bias field along the first axis
        if marker_b:
            img[:2, :2, :2] += 3.0
    return img.astype(np.float32)


def confounded_cohort(root: Path, n: int = 12, seed: int = 0, **signature) -> Path:
    """Healthy subjects all from site A, lesion subjects all from site B; site B may carry a
    foreground gain (``gain_b``), a marker outside the head (``marker_b``) or more noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        site = "B" if label else "A"
        sid = f"sub-{i:03d}"
        write_nifti(root / "images" / f"{sid}.nii.gz", _image(label, site, rng, **signature), AFFINE)
        write_nifti(root / "masks" / f"{sid}.nii.gz", _body().astype(np.float32), AFFINE)
        rows.append({"subject_id": sid, "image": f"images/{sid}.nii.gz", "mask": f"masks/{sid}.nii.gz",
                     "label": ["healthy", "lesion"][label], "site": site})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def _samples(n=16, seed=0, **signature) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % 2
        site = "B" if label else "A"
        out.append(Sample(f"s{i}", ["healthy", "lesion"][label], {"site": site},
                          _image(label, site, rng, **signature)[None], _body()))
    return out


# --- intervals ------------------------------------------------------------------------------

def test_wilson_interval_leaves_the_edge_and_matches_published_values():
    low, high = wilson_interval(6, 6, 0.95)
    assert high == 1.0 and 0.60 < low < 0.62  # a percentile bootstrap of 6/6 gives [1, 1]
    assert wilson_interval(0, 10, 0.95)[0] == 0.0 and 0.27 < wilson_interval(0, 10, 0.95)[1] < 0.28
    assert np.isnan(wilson_interval(0, 0, 0.95)[0])


def test_newcombe_difference_matches_newcombe_1998():
    low, high = newcombe_difference(56, 70, 48, 80, 0.95)  # Newcombe (1998) Table II, example (a)
    assert abs(low - 0.0524) < 1e-3 and abs(high - 0.3339) < 1e-3
    low, high = newcombe_difference(5, 6, 6, 6, 0.95)  # 83% vs 100% at n=6: no difference shown
    assert low < 0 < high


# --- operations -----------------------------------------------------------------------------

def test_transplant_keeps_the_anatomy_and_takes_the_donors_background():
    rng = np.random.default_rng(0)
    a, b = _samples(2)
    out = ops.transplant_background(a.image, a.foreground, b.image + 5.0, b.foreground, rng)
    np.testing.assert_array_equal(out[:, a.foreground], a.image[:, a.foreground])
    np.testing.assert_array_equal(out[:, ~a.foreground], b.image[:, ~b.foreground] + 5.0)


def test_standardisation_reaches_the_reference_landmarks_and_keeps_a_small_lesion():
    samples = _samples(4, gain_b=1.3)
    healthy_a, lesion_b = samples[0], samples[1]
    reference = ops.foreground_landmarks(healthy_a.image, healthy_a.foreground)
    out = ops.standardise_intensities(lesion_b.image, lesion_b.foreground, reference)
    np.testing.assert_allclose(ops.foreground_landmarks(out, lesion_b.foreground), reference, atol=0.02)
    blob = out[0, 7:9, 7:9, 7:9].mean()
    assert blob > 2.5  # the lesion (3.9 before, 1.3 x brighter site) keeps its contrast: ~3 on A's scale
    np.testing.assert_array_equal(out[:, ~lesion_b.foreground], lesion_b.image[:, ~lesion_b.foreground])


def test_noise_and_smoothness_estimates_recover_what_was_planted():
    rng = np.random.default_rng(1)
    s = _samples(1)[0]
    assert abs(ops.background_noise_sd(s.image, s.foreground) - 0.05) < 0.005
    noisier = ops.add_noise(s.image, 0.05, 0.15, rng)
    assert abs(ops.background_noise_sd(noisier, s.foreground) - 0.15) < 0.015
    assert ops.smoothness_variance(s.image, s.foreground) == 0.0
    blurred = s.image.copy()
    blurred[0] = ndimage.gaussian_filter(blurred[0], 1.0)
    assert 0.6 < ops.smoothness_variance(blurred, s.foreground) < 1.3  # planted sigma^2 = 1


# --- the statistics on arrays, with known decision rules -----------------------------------

def _rule(statistic, threshold):
    def predict(images):
        z = 50.0 * (np.array([statistic(i) for i in images]) - threshold)
        p = expit(z)
        return np.stack([1 - p, p], axis=1)
    return predict


def _blob(image):
    return ndimage.uniform_filter(image[0], 2).max()


def test_a_model_on_a_global_gain_flips_under_harmonisation():
    samples = _samples(16, gain_b=1.3)
    means = [s.image.mean() for s in samples]
    predict = _rule(np.mean, (np.mean(means[::2]) + np.mean(means[1::2])) / 2)
    result = run_interventions(samples, ["site"], predict, InterventionsParams())
    harmonised = [c for c in result.cells if c.intervention == "intensity_harmonisation"]
    assert {(c.source, c.reference) for c in harmonised} == {("A", "B"), ("B", "A")}
    assert all(c.flips == c.n == 8 and c.flip_rate.low > 0.6 for c in harmonised)
    finding = next(f for f in result.findings if f.id == "interventions.intensity_harmonisation.site")
    assert finding.severity == "critical" and finding.points_to == "signature"
    assert result.moved and result.summary()["signature_tests"] >= 4


def _tilt(image):
    """Mean of the first half minus the second along the first axis: reads a bias field."""
    return image[0, :8].mean() - image[0, 8:].mean()


def test_the_bias_field_fit_is_the_least_squares_fit_also_when_rank_deficient():
    """The normal equations where they are well conditioned, lstsq's minimum-norm answer where a
    flat foreground makes monomials collinear: the same coefficients as lstsq either way."""
    from xaudit.analysis.interventions.operations import _least_squares, _monomials

    rng = np.random.default_rng(4)
    full = np.zeros((12, 14, 10), bool)
    full[2:10, 3:12, 2:9] = True
    flat = np.zeros((12, 14, 10), bool)
    flat[2:10, 3:12, 5] = True  # one axial plane: z, z^2, xz... are collinear with the rest
    for fg in (full, flat):
        design = np.c_[np.ones(int(fg.sum())), _monomials(fg, 2)]
        values = rng.standard_normal(len(design))
        expected = np.linalg.lstsq(design, values, rcond=None)[0]
        np.testing.assert_allclose(_least_squares(design, values), expected, atol=1e-9)


def test_a_model_on_a_bias_field_flips_when_the_field_is_swapped():
    samples = _samples(16, field_b=0.3)
    tilts = [_tilt(s.image) for s in samples]
    result = run_interventions(samples, ["site"], _rule(_tilt, (np.mean(tilts[::2]) + np.mean(tilts[1::2])) / 2),
                               InterventionsParams())
    swapped = [c for c in result.cells if c.intervention == "bias_field_matching"]
    assert swapped and all(c.flips == c.n for c in swapped)
    assert any(f.id == "interventions.bias_field_matching.site" and f.points_to == "signature" for f in result.findings)
    lesion = run_interventions(samples, ["site"], _rule(_blob, 2.0), InterventionsParams())
    assert not lesion.findings  # the field swap keeps the lesion


def test_a_lesion_model_holds_under_every_intervention():
    samples = _samples(16, gain_b=1.3, noise_b=0.1)
    result = run_interventions(samples, ["site"], _rule(_blob, 2.0), InterventionsParams())
    assert set(result.ran) >= {"background_transplant", "intensity_harmonisation", "noise_matching"}
    assert "resolution_matching" in result.not_run
    assert not result.findings and not result.moved
    noise = [c for c in result.cells if c.intervention == "noise_matching"]
    assert {(c.source, c.reference) for c in noise} == {("A", "B")}  # only the quieter site gets noise
    assert result.summary()["flips"] == 0


def test_a_user_intervention_is_applied_and_its_output_checked():
    samples = _samples(12)
    seen = []

    def darken(image, foreground, references, reference_foregrounds):
        seen.append(len(references))
        return image * 0.0

    result = run_interventions(samples, ["site"], _rule(_blob, 2.0), InterventionsParams(methods=[]), {"darken": darken})
    assert result.ran == ["darken"] and seen and all(k == 6 for k in seen)
    lesion = next(c for c in result.cells if c.class_name == "lesion")
    assert lesion.flips == lesion.n  # a blanked image has no lesion left
    with pytest.raises(ValueError, match="custom intervention 'bad'"):
        run_interventions(samples, ["site"], _rule(_blob, 2.0), InterventionsParams(methods=[]),
                          {"bad": lambda image, *rest: image[:, :2]})


# --- end to end: fully confounded cohorts, known models, verdicts and exit codes -----------

def _audit(tmp_path, rule: str, threshold: float, fail_on: str | None = None, **signature):
    from typer.testing import CliRunner

    from conftest import make_config
    from xaudit.cli import app

    manifest = confounded_cohort(tmp_path / "c", **signature)
    config = make_config(tmp_path, manifest, methods={"saliency": {}},
                         model={"factory": {"function": "known_nets:build", "args": {"rule": rule, "threshold": threshold}},
                                "classes": ["healthy", "lesion"], "layer": "features.0"},
                         data__transforms={"intensity": "none"}, quality={"subjects": 0}, features={"layers": ["features.0"]},
                         interventions={"subjects_per_cell": 6, "bootstrap": 100})
    args = ["run", str(config), "-q", "--device", "cpu"] + (["--fail-on-findings", fail_on] if fail_on else [])
    result = CliRunner().invoke(app, args)
    audit = json.loads((tmp_path / "run" / "audit.json").read_text())
    return result, audit


def _mean_threshold(gain_b: float) -> float:
    """Midway between the two sites' mean intensities (site A healthy, site B lesion)."""
    body = _body().mean()
    return float((body * 1.0 + body * gain_b + 8 * 2.0 * gain_b / _body().size) / 2)


@pytest.mark.slow
def test_a_global_in_brain_signature_is_called_signature_from_interventions(tmp_path):
    result, audit = _audit(tmp_path, "mean", _mean_threshold(1.3), fail_on="warning", gain_b=1.3)
    assert result.exit_code == 1, result.output
    assert audit["verdict"]["verdict"] == "signature", audit["verdict"]["sentence"]
    fired = [f for f in audit["findings"] if f["check"] == "interventions" and f["severity"] != "info"]
    assert any(f["id"] == "interventions.intensity_harmonisation.site" and f["points_to"] == "signature" for f in fired)
    assert "intensity harmonisation" in audit["verdict"]["sentence"]
    assert audit["interventions"]["summary"]["moved"] is True
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Interventions" in html and "intensity harmonisation" in html


@pytest.mark.slow
@pytest.mark.parametrize("signature", [{}, {"gain_b": 1.3, "noise_b": 0.1}], ids=["sites_identical", "signature_ignored"])
def test_a_lesion_model_is_not_called_signature_in_a_confounded_design(tmp_path, signature):
    import jsonschema

    import xaudit

    result, audit = _audit(tmp_path, "blob", 2.0, **signature)
    assert result.exit_code == 0, result.output
    verdict = audit["verdict"]
    assert verdict["verdict"] == "consistent_with_pathology", verdict["sentence"]
    assert verdict["sentence"].startswith("Consistent with pathology") and "background transplant" in verdict["sentence"]
    assert not [f for f in audit["findings"] if f["check"] == "interventions"]
    schema = json.loads((Path(xaudit.__file__).parent / "schemas" / "audit.schema.json").read_text())
    jsonschema.validate(audit, schema)


@pytest.mark.slow
def test_a_marker_outside_the_head_is_found_by_the_background_transplant(tmp_path):
    _, audit = _audit(tmp_path, "corner", 1.5, marker_b=True)
    assert audit["verdict"]["verdict"] == "signature"
    assert any(f["id"] == "interventions.background_transplant.site" and f["points_to"] == "signature"
               for f in audit["findings"])


@pytest.mark.parametrize("kind", ["zscore", "zscore_nonzero", "minmax"])
def test_the_split_preprocessing_equals_the_runs(tmp_path, kind):
    """Spatial transforms, then the intensity normalisation alone (of a batch), give the model's input."""
    import torch

    from conftest import make_cohort
    from xaudit.config import TransformsConfig
    from xaudit.data import build_transforms, load_manifest, load_subject
    from xaudit.config import DataConfig
    from xaudit.stages.interventions import split_transforms

    manifest = make_cohort(tmp_path / "c", n=2)
    tcfg = TransformsConfig(orientation="RAS", spatial_size=[12, 12, 12], intensity=kind)
    subject = load_manifest(DataConfig(manifest=manifest), ["healthy", "lesion"])[0]
    full = load_subject(subject, build_transforms(tcfg, 3), 3).tensor
    spatial, intensity = split_transforms(tcfg, 3)
    raw = load_subject(subject, spatial, 3).tensor
    assert not torch.allclose(raw, full)
    torch.testing.assert_close(intensity(torch.stack([raw, raw + 1.0]))[0], torch.as_tensor(full), rtol=1e-5, atol=1e-5)
    assert split_transforms(tcfg.model_copy(update={"intensity": "none"}), 3)[1] is None


def test_the_model_sees_each_intervened_image_normalised_as_in_the_run():
    """The predictor applies the run's intensity normalisation to every image, on plain tensors."""
    from types import SimpleNamespace

    import torch
    from monai.data import MetaTensor, get_track_meta

    from xaudit.config import TransformsConfig
    from xaudit.stages.interventions import _predictor, split_transforms

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return torch.stack([x.mean(dim=(1, 2, 3, 4)), -x.mean(dim=(1, 2, 3, 4))], 1)

    _, intensity = split_transforms(TransformsConfig(intensity="zscore"), 3)
    setup = SimpleNamespace(model=SimpleNamespace(module=Recorder()), device=torch.device("cpu"),
                            config=SimpleNamespace(model=SimpleNamespace(classes=["a", "b"])))
    rng = np.random.default_rng(0)
    images = [(3.0 + 2.0 * rng.standard_normal((1, 6, 6, 6))).astype(np.float32) for _ in range(5)]
    probabilities = _predictor(setup, intensity, batch_size=2)(images)
    assert probabilities.shape == (5, 2) and get_track_meta()
    batch = torch.cat(seen)
    assert not any(isinstance(b, MetaTensor) for b in seen)
    for image, given in zip(images, batch):
        torch.testing.assert_close(given, torch.as_tensor((image - image.mean()) / image.std()), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("nonzero", [False, True])
@pytest.mark.parametrize("shape", [(3, 2, 9, 8, 7), (4, 1, 12, 10)])
def test_the_batch_zscore_is_monais_normalisation(nonzero, shape):
    """`zscore_batch` gives what MONAI's NormalizeIntensity(channel_wise=True) gives each image,
    also for a constant channel (sd 0), an all-zero channel and padding zeros (nonzero)."""
    import torch
    from monai.transforms import NormalizeIntensity

    from xaudit.data.loading import zscore_batch

    rng = np.random.default_rng(3)
    batch = (5.0 + 3.0 * rng.standard_normal(shape)).astype(np.float32)
    batch[..., :2] = 0.0  # padding
    batch[0, 0] = 7.5  # a constant channel
    batch[-1, -1] = 0.0  # nothing non-zero
    x = torch.from_numpy(batch)
    got = zscore_batch(x, nonzero=nonzero)
    assert got.dtype == torch.float32 and torch.equal(x, torch.from_numpy(batch))  # the input is untouched
    monai = NormalizeIntensity(nonzero=nonzero, channel_wise=True)
    for image, out in zip(x, got):
        torch.testing.assert_close(out, torch.as_tensor(monai(image.clone())).as_tensor(), rtol=1e-5, atol=1e-5)
    # a constant float32 does not represent exactly: 0 in any batch (MONAI divides by rounding error)
    odd = torch.full(shape[1:], 0.1)
    for batch in (odd[None], torch.stack([odd, x[1]])):
        assert zscore_batch(batch, nonzero=nonzero)[0].abs().max() < 1e-5


def test_a_site_effect_is_not_read_as_a_sex_effect():
    """Sex crosses site: moving properties between sexes holds the site fixed (and the other way
    round); a scanner column identical to site cannot be held fixed and is not."""
    from xaudit.analysis.interventions.trials import held_columns

    rng = np.random.default_rng(3)
    samples = []
    for i in range(32):
        label, site, sex = i % 2, "AB"[(i // 2) % 2], "FM"[(i // 4) % 2]
        samples.append(Sample(f"s{i}", ["healthy", "lesion"][label], {"site": site, "scanner": f"x{site}", "sex": sex},
                              _image(label, site, rng, gain_b=1.3)[None], _body()))
    assert held_columns(samples, "site", ["site", "scanner", "sex"]) == ["sex"]
    assert held_columns(samples, "sex", ["site", "scanner", "sex"]) == ["site", "scanner"]
    means = [s.image.mean() for s in samples]
    at_b = [s.groups["site"] == "B" for s in samples]
    threshold = (np.mean([m for m, b in zip(means, at_b) if b]) + np.mean([m for m, b in zip(means, at_b) if not b])) / 2
    result = run_interventions(samples, ["site", "sex"], _rule(np.mean, threshold), InterventionsParams())
    columns = {f.column for f in result.findings if f.severity != "info"}
    assert "site" in columns and "sex" not in columns, [f.title for f in result.findings]


def test_linear_harmonisation_keeps_every_contrast_within_the_anatomy():
    """A patient's histogram mapped onto another site's keeps the lesion's contrast (relative to
    the brain's spread) exactly; the piecewise landmark map only approximately."""
    samples = _samples(4, gain_b=1.3, noise_b=0.15)
    healthy_a, lesion_b = samples[0], samples[1]
    reference = ops.foreground_landmarks(healthy_a.image, healthy_a.foreground)
    fg, blob = lesion_b.foreground, (slice(None), slice(7, 9), slice(7, 9), slice(7, 9))

    def contrast(img):
        brain = img[0][fg]
        return (img[blob].mean() - np.median(brain)) / (np.percentile(brain, 75) - np.percentile(brain, 25))

    linear = ops.standardise_intensities(lesion_b.image, fg, reference, "linear")
    assert contrast(linear) == pytest.approx(contrast(lesion_b.image), rel=1e-4)
    q = ops.foreground_landmarks(linear, fg)[0]
    assert q[2] == pytest.approx(reference[0, 2], abs=1e-4) and (q[3] - q[1]) == pytest.approx(reference[0, 3] - reference[0, 1], rel=1e-3)


def test_an_intervention_that_ran_for_one_column_is_not_listed_as_not_run():
    """Noise differs between sites, not between sexes: noise matching ran (for site)."""
    rng = np.random.default_rng(5)
    samples = [Sample(f"s{i}", ["healthy", "lesion"][i % 2], {"site": "AB"[(i // 2) % 2], "sex": "FM"[(i // 4) % 2]},
                      _image(i % 2, "AB"[(i // 2) % 2], rng, noise_b=0.15)[None], _body()) for i in range(16)]
    result = run_interventions(samples, ["site", "sex"], _rule(_blob, 2.0), InterventionsParams())
    assert "noise_matching" in result.ran and "noise_matching" not in result.not_run


def test_a_column_that_groups_as_the_site_does_reuses_its_trials():
    samples = _samples(16, gain_b=1.3)
    for s in samples:
        s.groups["scanner"] = {"A": "vendorX", "B": "vendorY"}[s.groups["site"]]
    means = [s.image.mean() for s in samples]
    rule = _rule(np.mean, (np.mean(means[::2]) + np.mean(means[1::2])) / 2)
    images = {"site": 0, "both": 0}

    def counting(key):
        def predict(batch):
            images[key] += len(batch)
            return rule(batch)
        return predict

    alone = run_interventions(samples, ["site"], counting("site"), InterventionsParams())
    both = run_interventions(samples, ["site", "scanner"], counting("both"), InterventionsParams())
    assert images["both"] == images["site"]  # the scanner column ran no model pass of its own
    rename = {"A": "vendorX", "B": "vendorY"}
    site_cells = {(c.intervention, c.source, c.reference, c.class_name, c.flips, c.n) for c in alone.cells}
    scanner_cells = {(c.intervention, rename[c.source], rename[c.reference], c.class_name, c.flips, c.n)
                     for c in alone.cells}
    assert {(c.intervention, c.source, c.reference, c.class_name, c.flips, c.n) for c in both.cells
            if c.column == "scanner"} == scanner_cells
    assert {(c.intervention, c.source, c.reference, c.class_name, c.flips, c.n) for c in both.cells
            if c.column == "site"} == site_cells
    assert any("scanner: the loaded subjects group exactly as by site" in n for n in both.notes)
