"""`run_interventions`: every configured intervention on every pair of group values.

The stage hands over the loaded subjects (images before intensity normalisation, their
foregrounds, group values, classes) and a ``predict`` callable (images -> probabilities,
normalising and batching as the model expects); this module decides which subject gets
which property of which group value, calls ``predict`` and pools the results
(`xaudit.analysis.interventions.effects`). A custom intervention is a callable

    f(image, foreground, references, reference_foregrounds) -> image

with ``image`` ``(C, *spatial)`` float32 before intensity normalisation, ``foreground``
``(*spatial)`` bool, ``references`` / ``reference_foregrounds`` lists of the reference
group value's images and foregrounds; it returns an image of ``image``'s shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
from dataclasses import dataclass

import numpy as np

from xaudit.analysis.interventions import operations as ops
from xaudit.analysis.interventions.effects import InterventionsResult, Trial, summarise_trials

Predict = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Sample:
    """One loaded subject: its image before intensity normalisation and its foreground."""

    subject_id: str
    class_name: str
    groups: dict[str, str]
    image: np.ndarray
    foreground: np.ndarray


@dataclass
class _Site:
    """The samples of one group value and the properties the interventions impose."""

    samples: list[Sample]
    landmarks: np.ndarray
    noise_sd: float
    smoothness: float
    field: np.ndarray | None = None  # the mean bias-field coefficients, when every member has them


def _properties(samples: list[Sample], fields: dict) -> dict[str, tuple]:
    """Per subject: foreground landmarks, background noise sd, smoothness variance, bias field."""
    return {s.subject_id: (ops.foreground_landmarks(s.image, s.foreground), ops.background_noise_sd(s.image, s.foreground),
                           ops.smoothness_variance(s.image, s.foreground), fields.get(s.subject_id)) for s in samples}


def _site(members: list[Sample], props: dict[str, tuple]) -> _Site:
    landmarks, noise, smooth, own = zip(*(props[s.subject_id] for s in members))
    same = all(f is not None for f in own) and len({f.shape for f in own}) == 1  # same channels
    return _Site(members, np.mean(landmarks, axis=0), _median(list(noise)), _median(list(smooth)),
                 np.mean(own, axis=0) if same else None)


def _sites(samples: list[Sample], column: str, props: dict[str, tuple]) -> dict[str, _Site]:
    values = sorted({s.groups.get(column, "") for s in samples} - {""})
    return {v: _site([s for s in samples if s.groups.get(column) == v], props) for v in values}


def held_columns(samples: list[Sample], column: str, columns: list[str]) -> list[str]:
    """The other group columns that cross ``column`` (a value of theirs occurs at two of its values).

    Moving a property between values of ``column`` keeps these fixed (donors and reference
    statistics come from subjects with the recipient's values of them), so a site effect is
    not read as a sex effect; a column nested in ``column`` or identical to it (a scanner per
    site) cannot be held fixed and is not.
    """
    held = []
    for other in columns:
        if other == column:
            continue
        spread: dict[str, set[str]] = {}
        for s in samples:
            if s.groups.get(column) and s.groups.get(other):
                spread.setdefault(s.groups[other], set()).add(s.groups[column])
        if any(len(v) >= 2 for v in spread.values()):
            held.append(other)
    return held


def _strata(samples: list[Sample], column: str, held: list[str], props) -> dict[str, dict[tuple, _Site]]:
    """Group value -> the recipient's values of the held columns -> its subjects there."""
    out: dict[str, dict[tuple, list[Sample]]] = {}
    for s in samples:
        if s.groups.get(column):
            out.setdefault(s.groups[column], {}).setdefault(tuple(s.groups.get(h, "") for h in held), []).append(s)
    return {v: {k: _site(m, props) for k, m in by.items()} for v, by in out.items()}


def _median(values: list[float]) -> float:
    """The median of the finite values, NaN when none is (without numpy's all-NaN warning)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def _references(sites: dict[str, _Site], source: str, k: int) -> list[str]:
    others = sorted((v for v in sites if v != source), key=lambda v: (-len(sites[v].samples), v))
    return others[:k]


def run_interventions(samples: list[Sample], columns: list[str], predict: Predict, params,
                      custom: dict[str, Callable] | None = None) -> InterventionsResult:
    """Apply the interventions, score the decisions before and after.

    Args:
        samples: the loaded subjects (at most ``subjects_per_cell`` per value x class).
        columns: the group columns to move properties between.
        predict: list of images -> ``(n, K)`` probabilities.
        params: `xaudit.config.interventions.InterventionsParams`.
        custom: name -> the user's intervention callable.

    Returns:
        An `InterventionsResult`.
    """
    custom = custom or {}
    names = [*params.methods, *custom]
    if len(samples) < 2:
        return InterventionsResult(skipped="fewer than two labelled subjects with a group value could be loaded")
    before = dict(zip([s.subject_id for s in samples], predict([s.image for s in samples])))
    trials, ran, not_run, notes = [], [], {}, []
    classes_by_value: dict[str, dict[str, set[str]]] = {}
    rng = np.random.default_rng(params.seed)
    fields = ({s.subject_id: ops.bias_field(s.image, s.foreground) for s in samples}
              if "bias_field_matching" in names else {})
    props = _properties(samples, fields)
    aliases = same_grouping(samples, columns)
    for column in columns:
        if column in aliases:
            first, rename = aliases[column]
            notes.append(f"{column}: the loaded subjects group exactly as by {first}; its trials are {first}'s, renamed.")
            trials += [dataclasses.replace(t, column=column, source=rename[t.source], reference=rename[t.reference])
                       for t in trials if t.column == first]
            classes_by_value[column] = {rename[v]: c for v, c in classes_by_value.get(first, {}).items()}
            continue
        sites = _sites(samples, column, props)
        held = held_columns(samples, column, columns)
        strata = _strata(samples, column, held, props)
        if held:
            notes.append(f"{column}: properties move between subjects with the same {', '.join(held)}.")
        classes_by_value[column] = {v: {s.class_name for s in site.samples} for v, site in sites.items()}
        if len(sites) < 2:
            notes.append(f"{column}: fewer than two values among the loaded subjects; nothing to move between them.")
            continue
        for name in names:
            count = 0
            fn = fields if name == "bias_field_matching" else custom.get(name)
            for chunk in _chunks(_jobs(name, column, sites, strata, params, fn, rng), params.batch_size):
                for (meta, _), after in zip(chunk, predict([image for _, image in chunk])):
                    trials.append(Trial(*meta, before[meta[-1]], after))
                count += len(chunk)
            if not count and name not in ran:
                not_run.setdefault(name, _why_none(name, column, sites, params))
            elif count and name not in ran:
                ran.append(name)
                not_run.pop(name, None)
    return summarise_trials(trials, params, classes_by_value, ran, not_run, notes)


def same_grouping(samples: list[Sample], columns: list[str]) -> dict[str, tuple[str, dict[str, str]]]:
    """Columns that split the samples exactly as an earlier column does (a scanner per site):
    ``{column: (earlier column, {earlier value: this value})}``.

    Moving a property between their values is the same experiment on the same subjects, so
    it runs once: measured, a third of the demo's interventions stage was the scanner column
    repeating the site column.
    """
    aliases: dict[str, tuple[str, dict[str, str]]] = {}
    for k, column in enumerate(columns):
        values = [s.groups.get(column) or "" for s in samples]
        for first in columns[:k]:
            if first in aliases:
                continue
            pairs = {(s.groups.get(first) or "", v) for s, v in zip(samples, values)}
            forward = {a: b for a, b in pairs}
            if len(forward) == len(pairs) == len({b for _, b in pairs}) and "" not in forward and "" not in forward.values():
                aliases[column] = (first, forward)
                break
    return aliases


def _chunks(jobs: Iterator, size: int) -> Iterator[list]:
    """Lists of at most ``size`` jobs: intervened images exist only one batch at a time."""
    chunk = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jobs(name, column, sites, strata, params, fn, rng) -> Iterator[tuple[tuple, np.ndarray]]:
    """``(trial metadata without outputs, intervened image)`` for every subject and reference,
    the reference's subjects taken from the recipient's stratum of the held columns."""
    for source in sites:
        for stratum, site in strata[source].items():
            for reference in _references(sites, source, params.max_references):
                ref = strata.get(reference, {}).get(stratum)
                if ref is not None:
                    yield from _pair_jobs(name, column, source, site, reference, ref, params, fn, rng)
            if name == "background_transplant":
                yield from _transplants(column, source, site, source, site, rng, within=True)


def _pair_jobs(name, column, source, site, reference, ref, params, fn, rng) -> Iterator[tuple[tuple, np.ndarray]]:
    def meta(s: Sample) -> tuple:
        return column, name, source, reference, s.class_name, None, s.subject_id

    if name == "background_transplant":
        yield from _transplants(column, source, site, reference, ref, rng)
    elif name == "intensity_harmonisation":
        for s in site.samples:
            yield meta(s), ops.standardise_intensities(s.image, s.foreground, ref.landmarks, params.harmonisation)
    elif name == "noise_matching":
        if ref.noise_sd >= params.min_noise_ratio * site.noise_sd > 0:
            for s in site.samples:
                yield meta(s), ops.add_noise(s.image, ops.background_noise_sd(s.image, s.foreground), ref.noise_sd, rng)
    elif name == "resolution_matching":
        sigma = ops.blur_sigma(site.smoothness, ref.smoothness)
        if np.isfinite(sigma) and sigma >= params.min_blur_sigma:
            for s in site.samples:
                yield meta(s), ops.blur(s.image, site.smoothness, ref.smoothness)
    elif name == "bias_field_matching":
        for s in site.samples:
            own = fn.get(s.subject_id)
            if own is not None and ref.field is not None and own.shape == ref.field.shape:
                yield meta(s), ops.swap_bias_field(s.image, s.foreground, own, ref.field)
    else:
        yield from _custom(fn, column, name, source, site, reference, ref)


def _why_none(name, column, sites, params) -> str:
    """Why an intervention produced no image for any pair of values of ``column``."""
    if name == "noise_matching":
        sds = ", ".join(f"{v} {site.noise_sd:.3g}" for v, site in sites.items())
        return f"the background noise sd differs by less than x{params.min_noise_ratio} between {column} values: {sds}"
    if name == "resolution_matching":
        sigmas = ", ".join(f"{v} {np.sqrt(max(site.smoothness, 0)):.2f}" for v, site in sites.items())
        return (f"the smoothness differs by less than a {params.min_blur_sigma}-voxel blur between {column} "
                f"values (kernel sd in voxels: {sigmas})")
    if name == "background_transplant":
        return f"no donor on the same grid at another {column} value"
    if name == "bias_field_matching":
        return "over a tenth of the foreground intensities are non-positive (no log for a multiplicative field)"
    return f"no pair of {column} values to apply it to"


def _transplants(column, source, site, reference, ref, rng, within: bool = False) -> Iterator:
    """Each subject on the background of a donor at ``reference``: one of its own class
    (not within a site) and one of another class, chosen in turn."""
    for k, s in enumerate(site.samples):
        kinds = (("other class", [d for d in ref.samples if d.class_name != s.class_name]),) if within else (
            ("same class", [d for d in ref.samples if d.class_name == s.class_name]),
            ("other class", [d for d in ref.samples if d.class_name != s.class_name]))
        for donor_kind, donors in kinds:
            donors = [d for d in donors if d.image.shape == s.image.shape]
            if not donors:
                continue
            donor = donors[k % len(donors)]
            yield ((column, "background_transplant", source, reference, s.class_name, donor_kind, s.subject_id),
                   ops.transplant_background(s.image, s.foreground, donor.image, donor.foreground, rng))


def _custom(fn, column, name, source, site, reference, ref) -> Iterator:
    refs, ref_fgs = [r.image for r in ref.samples], [r.foreground for r in ref.samples]
    for s in site.samples:
        out = np.asarray(fn(s.image.copy(), s.foreground.copy(), refs, ref_fgs), dtype=np.float32)
        if out.shape != s.image.shape or not np.all(np.isfinite(out)):
            raise ValueError(f"custom intervention {name!r} returned an image of shape {out.shape} (finite: "
                             f"{bool(np.all(np.isfinite(out)))}) for subject {s.subject_id!r}; expected a finite "
                             f"image of shape {s.image.shape}")
        yield (column, name, source, reference, s.class_name, None, s.subject_id), out
