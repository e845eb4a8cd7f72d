"""`interrogate_run`: invert and maximise a finished run's network, measure retention.

    run dir ─► config, model, manifest, predictions ─► chosen subjects (class x group)
            ─► per layer: batched inversion ─► native NIfTI + figures + retention rows
            ─► activation maximisation of named / top-rule channels
            ─► retention table, finding, plot ─► interrogate/*.json

Everything is written under ``<run>/interrogate/`` with atomic writes; the returned dict
is what goes into ``audit.json`` under ``"interrogation"``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from xaudit.core.ids import safe_file_id
from xaudit.data import build_transforms, infer_spatial_dims, load_manifest
from xaudit.data.loading import native_grid
from xaudit.data.native import resample_between_grids, write_volume, write_volume_like
from xaudit.errors import ConfigError, DataError
from xaudit.report.figures_interrogation import inversion_figure, maximisation_figure, retention_figure
from xaudit.analysis.interrogate.inversion import invert
from xaudit.analysis.interrogate.layers import ChannelTarget, LayerTrace, auto_layers, check_layers, resolve_channels, trace_layers
from xaudit.analysis.interrogate.maximisation import maximise
from xaudit.analysis.interrogate.optimise import TimeBudget
from xaudit.config.interrogate import InterrogateParams
from xaudit.analysis.interrogate.retention import region_correlations, region_masks, retention_finding, retention_table
from xaudit.analysis.interrogate.subjects import SubjectInput, batches_by_shape, choose_subjects, load_inputs, read_predictions
from xaudit.models.loading import load_model, resolve_device
from xaudit.core import versions
from xaudit.core.jsonable import to_jsonable
from xaudit.core.outputs import load_record, write_bytes, write_json
from xaudit.core.provenance import load_run_config

log = logging.getLogger("xaudit")
FOLDER = "interrogate"


def interrogate_run(run_dir: Path, params: InterrogateParams | None = None, device: str | torch.device = "auto") -> dict:
    """Interrogate the network of a finished run at several depths.

    Args:
        run_dir: a finished run (``config.resolved.yaml``, ``predictions.csv``).
        params: the ``interrogate:`` section; None takes the run config's section when it
            has one, else the defaults.
        device: "auto", "cpu", "cuda[:k]" or a `torch.device`.

    Returns:
        JSON-able dict: layers, subjects, inversion and maximisation records, the retention
        table, findings (same shape as the bias findings), notes and artifact paths.

    Raises:
        ConfigError: a TorchScript model (hooks are needed), unknown layers/channels/group.
        DataError, OutputError: unusable run directory or data; unwritable output.
    """
    started = time.perf_counter()
    setup = _prepare(Path(run_dir), params, device)
    params = setup.params
    generator = torch.Generator().manual_seed(params.seed)
    batches = batches_by_shape(setup.inputs)
    # the first optimiser built in a process imports torch internals (seconds on a busy CPU): not optimisation time
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    jobs = len(setup.layers) * len(batches) + len({t.layer for t in setup.targets})
    budget = TimeBudget(params.time_budget_s, jobs)
    out = setup.run_dir / FOLDER
    t_opt = time.perf_counter()
    inversion, rows, kept = _invert_layers(setup, batches, budget, generator, out)
    maxima, max_runs = _maximise_channels(setup, batches[0], budget, generator, out)
    optimisation_s = time.perf_counter() - t_opt
    figures = _inversion_figures(setup.inputs, kept, out)
    stopped = any(r["stopped_early"] for r in [*inversion.values(), *max_runs.values()])
    if stopped:
        setup.notes.append(f"the time budget ({params.time_budget_s:g} s) stopped some optimisations before"
                           f" {params.steps} steps; see steps per layer")
    result = _assemble(params, setup, inversion, maxima, max_runs, rows, out, figures)
    result["time"] = {"budget_s": params.time_budget_s, "optimisation_s": round(optimisation_s, 3),
                      "elapsed_s": round(time.perf_counter() - started, 3), "stopped_early": stopped}
    result = to_jsonable(result)  # NaN (an empty ROI) -> None: strict JSON for audit.json
    write_json(out / "interrogation.json", result)
    log.info("interrogate: %d layers, %d subjects, %d channels in %.1f s",
             len(setup.layers), len(setup.inputs), len(maxima), optimisation_s)
    return result


@dataclass
class _Setup:
    """A finished run made ready to interrogate."""

    run_dir: Path
    params: InterrogateParams
    device: torch.device
    spatial_dims: int
    group_column: str | None
    inputs: list[SubjectInput]
    model: torch.nn.Module
    trace: LayerTrace
    layers: list[str]
    targets: list[ChannelTarget]
    notes: list[str] = field(default_factory=list)


def _prepare(run_dir: Path, params: InterrogateParams | None, device) -> _Setup:
    """Params, subjects (chosen and preprocessed), model, its layers and channels to maximise."""
    config = load_run_config(run_dir)
    # without explicit params: the run config's `interrogate:` section when it has one
    params = params or getattr(config, "interrogate", None) or InterrogateParams()
    if config.model.torchscript is not None:
        raise ConfigError("`xaudit interrogate` needs forward hooks, which a TorchScript model does not offer;"
                          " configure the model as `model.monai` or `model.factory` to interrogate it")
    device = resolve_device(device) if isinstance(device, str) else device
    subjects = load_manifest(config.data, config.model.classes, check_files=False, problems=[])
    spatial_dims = _spatial_dims(run_dir, config, subjects)
    group_column = _group_column(params, config.data.group_columns)
    notes: list[str] = []
    chosen = choose_subjects(read_predictions(run_dir), subjects, config.model.classes, group_column,
                             params.per_cell, params.max_subjects)
    if not chosen:
        raise DataError(f"{run_dir}: predictions.csv names none of the manifest's subjects; nothing to interrogate")
    inputs = load_inputs(chosen, build_transforms(config.data.transforms, spatial_dims), spatial_dims, notes)
    _check_records(run_dir, inputs, notes)
    model = load_model(config.model, device).module
    trace = trace_layers(model, inputs[0].image[None].to(device))
    if params.layers:
        layers = check_layers(params.layers, trace, spatial_dims)
    else:
        layers = auto_layers(model, trace, spatial_dims, params.auto_layers)
    targets = _channel_targets(params, run_dir, model, trace, spatial_dims, notes)
    return _Setup(run_dir, params, device, spatial_dims, group_column, inputs, model, trace, layers, targets, notes)


def _spatial_dims(run_dir: Path, config, subjects) -> int:
    """From the run's provenance; else inferred as the run did."""
    try:
        raw = yaml.safe_load((run_dir / "config.resolved.yaml").read_text(encoding="utf-8")) or {}
        dims = (raw.get("provenance") or {}).get("spatial_dims")
        if dims in (2, 3):
            return int(dims)
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return infer_spatial_dims(config.data, config.model, subjects[0].images[0])


def _group_column(params: InterrogateParams, group_columns: list[str]) -> str | None:
    if params.group_column is None:
        return group_columns[0] if group_columns else None
    if params.group_column not in group_columns:
        from xaudit.errors import choices_message

        raise ConfigError("`interrogate.group_column`: "
                          + choices_message("group column", params.group_column, group_columns))
    return params.group_column


def _check_records(run_dir: Path, inputs: list[SubjectInput], notes: list[str]) -> None:
    """The run recorded each input's affine; a different one now means changed preprocessing."""
    for item in inputs:
        path = run_dir / "subjects" / f"{item.subject.safe_id}.npz"
        if not path.is_file():
            continue
        recorded = load_record(path).get("input_affine")
        same = recorded is not None and recorded.shape == item.affine.shape and np.allclose(recorded, item.affine, atol=1e-4)
        if recorded is not None and not same:
            notes.append(f"subject {item.subject.subject_id}: the input grid differs from the run's record;"
                         " the preprocessing (or its code) changed since the run")


def _channel_targets(params, run_dir: Path, model, trace, spatial_dims: int, notes: list[str]) -> list[ChannelTarget]:
    """Named channels, or the features of the top rules (skipped with a note when unusable)."""
    if params.channels is not None:
        targets = resolve_channels(params.channels, model, trace, spatial_dims)
    else:
        names = _rule_features(run_dir / "rules.json", params.top_rules, params.max_channels, notes)
        try:
            targets = resolve_channels(names, model, trace, spatial_dims)
        except ConfigError as exc:
            notes.append(f"activation maximisation skipped: the rule features cannot be mapped to conv channels ({exc})")
            return []
    unique = {(t.layer, t.channel): t for t in reversed(targets)}  # the first name of a channel wins
    return sorted(unique.values(), key=lambda t: (trace.depth(t.layer), t.channel))


def _rule_features(path: Path, top_rules: int, max_channels: int, notes: list[str]) -> list[str]:
    if not path.is_file():
        notes.append("no rules.json in the run: no channels to maximise (name them in `interrogate.channels`)")
        return []
    try:
        rules = json.loads(path.read_text(encoding="utf-8")).get("rules", [])
    except (OSError, ValueError, AttributeError):
        notes.append(f"{path} is not readable JSON: no channels to maximise")
        return []
    names: list[str] = []
    for rule in sorted(rules, key=lambda r: r.get("rank", 0))[:top_rules]:
        names.extend(c["feature"] for c in rule.get("conditions", []) if "feature" in c)
    if not names:
        notes.append("rules.json has no rules with features: no channels to maximise (name them in `interrogate.channels`)")
    return list(dict.fromkeys(names))[:max_channels]


def _invert_layers(setup: _Setup, batches, budget: TimeBudget, generator, out: Path):
    """Invert every batch at every layer; write native NIfTI; collect retention rows."""
    params = setup.params
    records, rows = {}, []
    kept: dict[str, dict[str, np.ndarray]] = {}
    for depth, layer in enumerate(setup.layers):
        runs, losses, paths = [], {}, {}
        for batch in batches:
            x0 = torch.stack([item.image for item in batch]).to(setup.device)
            fg = torch.from_numpy(np.stack([item.foreground for item in batch])).to(setup.device)
            inv = invert(setup.model, layer, x0, params, budget.next_deadline(), generator, fg)
            images, starts = inv.images.float().cpu().numpy(), inv.starts.float().cpu().numpy()
            runs.append(inv.run)
            for i, item in enumerate(batch):
                sid = item.subject.subject_id
                losses[sid] = {"initial": float(inv.representation_loss_initial[i]),
                               "final": float(inv.representation_loss_final[i])}
                folder = out / "inversions" / safe_file_id(layer)
                paths[sid] = _write_native(images[i], item, folder, setup.spatial_dims, run_root=out.parent)
                rows += _retention_rows(item, images[i], starts[i], layer, depth, params)
                kept.setdefault(item.subject.safe_id, {})[layer] = images[i][0]
        records[layer] = {
            "depth": depth, "steps": min(r.steps for r in runs), "stopped_early": any(r.stopped_early for r in runs),
            "seconds": round(sum(r.seconds for r in runs), 3), "representation_loss": losses,
            "representation_loss_initial_mean": float(np.mean([v["initial"] for v in losses.values()])),
            "representation_loss_final_mean": float(np.mean([v["final"] for v in losses.values()])),
            "runs": [r.to_dict() for r in runs], "volumes": paths,
        }
        log.info("interrogate: %s inverted in %.1f s (%d steps), loss %.3g -> %.3g", layer, records[layer]["seconds"],
                 records[layer]["steps"], records[layer]["representation_loss_initial_mean"],
                 records[layer]["representation_loss_final_mean"])
    return records, rows, kept


def _retention_rows(item: SubjectInput, image: np.ndarray, start: np.ndarray, layer: str, depth: int, params) -> list[dict]:
    """One row per region: the inversion's correlation with the original, and the start's."""
    regions = region_masks(item.foreground, item.rois, params.border_width, params.restrict_to_foreground)
    # the start's own correlation is the floor a region comes back to when the layer discards it
    baseline = region_correlations(item.image.numpy(), start, regions)
    return [
        {"subject_id": item.subject.subject_id, "layer": layer, "depth": depth, "region": region, **values,
         "start_pearson": baseline[region]["pearson"]}
        for region, values in region_correlations(item.image.numpy(), image, regions).items()
    ]


def _write_native(image: np.ndarray, item: SubjectInput, folder: Path, spatial_dims: int, run_root: Path) -> str:
    """Resample ``(C, *S)`` onto the subject's stored grid; channel k > 0 goes to ``c<k>/``
    (a folder, not a name suffix, so it cannot collide with another subject's id)."""
    native_affine, native_shape, reference = native_grid(item.subject.images[0], spatial_dims)
    first = None
    for c in range(image.shape[0]):
        channel = torch.from_numpy(np.ascontiguousarray(image[c]))
        volume = resample_between_grids(channel, item.affine, native_affine, native_shape)
        path = write_volume_like(volume.numpy(), reference, (folder / f"c{c}" if c else folder) / f"{item.subject.safe_id}.nii.gz")
        first = first or path
    return str(Path(first).relative_to(run_root))


def _maximise_channels(setup: _Setup, batch: list[SubjectInput], budget: TimeBudget, generator, out: Path):
    """One maximisation batch per layer; NIfTI on the first subject's input grid, one figure per layer."""
    maxima, runs = [], {}
    reference = torch.stack([item.image for item in batch]).to(setup.device)
    affine = batch[0].affine
    for layer in dict.fromkeys(t.layer for t in setup.targets):
        group = [t for t in setup.targets if t.layer == layer]
        channels = [t.channel for t in group]
        result = maximise(setup.model, layer, channels, reference, setup.params, budget.next_deadline(), generator)
        images = result.images.float().cpu().numpy()
        runs[layer] = result.run.to_dict()
        shown = {}
        for k, target in enumerate(group):
            path = out / "maximisation" / safe_file_id(layer) / f"ch{target.channel}.nii.gz"
            write_volume(images[k][0], affine, path)
            shown[target.name] = images[k][0]
            maxima.append({
                "name": target.name, "layer": layer, "channel": target.channel,
                "activation_initial": float(result.activation_initial[k]),
                "activation_final": float(result.activation_final[k]),
                "activation_real_mean": float(result.activation_real[k]), "volume": str(path.relative_to(out.parent)),
                "started_from": None if result.starts[k] is None else batch[result.starts[k]].subject.subject_id,
            })
        figure = out / "figures" / f"maximisation_{safe_file_id(layer)}.png"
        write_bytes(figure, maximisation_figure(shown))
        for entry in maxima[-len(group):]:
            entry["figure"] = str(figure.relative_to(out.parent))
    return maxima, runs


def _inversion_figures(inputs: list[SubjectInput], kept: dict, out: Path) -> list[str]:
    paths = []
    for item in inputs:
        safe = item.subject.safe_id
        cell = ", ".join(v for v in (item.cell["class"], item.cell["group"]) if v)
        title = f"{item.subject.subject_id} ({cell})"
        path = out / "figures" / f"inversion_{safe}.png"
        write_bytes(path, inversion_figure(item.image[0].numpy(), kept.get(safe, {}), title))
        paths.append(str(path.relative_to(out.parent)))
    return paths


def _subsets(inputs: list[SubjectInput]) -> dict[str, list[str]]:
    subsets = {"all": [i.subject.subject_id for i in inputs]}
    for item in inputs:
        if item.cell["group"]:
            subsets.setdefault(item.cell["group"], []).append(item.subject.subject_id)
    return subsets


def _assemble(params, setup: _Setup, inversion, maxima, max_runs, rows, out: Path, figures) -> dict:
    """Retention table, finding, plot and JSON files; the result dict."""
    subsets = _subsets(setup.inputs)
    layers, notes = setup.layers, setup.notes
    table = retention_table(rows, layers, subsets)
    finding = retention_finding(table, layers, params)
    findings = [finding.to_dict()] if finding is not None else []
    if not any(i.rois for i in setup.inputs):
        notes.append("the manifest names no ROI (data.roi_columns): the foreground stands in for the pathology")
    if params.restrict_to_foreground:
        notes.append("restrict_to_foreground: background and border were held fixed, so their retention is not measured")
    regions = list(dict.fromkeys(r["region"] for r in rows))
    retention = {"schema_version": versions.INTERROGATION, "layers": layers, "regions": regions, "subsets": list(subsets),
                 "border_width": params.border_width, "table": table, "per_subject": rows, "findings": findings}
    write_json(out / "retention.json", retention)
    plot = out / "retention.png"
    write_bytes(plot, retention_figure(table, layers, list(subsets)))
    rel = lambda p: str(p.relative_to(out.parent))  # noqa: E731 - local shorthand
    return {
        "schema_version": versions.INTERROGATION,
        "params": params.model_dump(mode="json"),
        "device": str(setup.device),
        "spatial_dims": setup.spatial_dims,
        "layers": [{"name": name, "depth": d, "shape": list(setup.trace.shapes[name])} for d, name in enumerate(layers)],
        "subjects": [{"subject_id": i.subject.subject_id, **i.cell} for i in setup.inputs],
        "group_column": setup.group_column,
        "inversion": inversion,
        "maximisation": maxima,
        "maximisation_runs": max_runs,
        "retention": {"regions": regions, "subsets": list(subsets), "table": table},
        "findings": findings,
        "notes": notes,
        "artifacts": {"interrogation": rel(out / "interrogation.json"), "retention": rel(out / "retention.json"),
                      "retention_plot": rel(plot), "inversions": rel(out / "inversions"), "figures": figures},
    }

