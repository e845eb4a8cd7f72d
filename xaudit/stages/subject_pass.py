"""The per-subject pass: predictions, features and attribution maps, streamed in batches.

Images stream through a DataLoader (never the whole dataset in memory); each batch gets
one forward pass that yields logits, features and the concept layer's activation and
gradient, then every configured method. Writing (native-space resampling, gzip NIfTI,
the per-subject record) runs on background threads so the device keeps computing. A
subject's record is written after its volumes: its presence marks the subject done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import closing, nullcontext
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from xaudit.attribution.base import SharedPass
from xaudit.core.prefetch import prefetched
from xaudit.core.progress import ProgressFactory, log_progress
from xaudit.attribution.dataset_mean import dataset_mean_input, needs_dataset_mean
from xaudit.attribution.engine import MethodRun, choose_targets, estimate_max_batch, make_context, tune_max_batch
from xaudit.data.cache import InputCache
from xaudit.data.loading import LoadedImage, load_subject
from xaudit.data.manifest import Subject
from xaudit.data.native import downsample_volumes
from xaudit.errors import OutputError, XauditError, reason_of
from xaudit.models.features import FeatureSpec, capture
from xaudit.models.strided_conv import choose_layers
from xaudit.data.foreground import atlas_on_grid, preprocessed_foreground
from xaudit.stages.subject_outputs import SubjectOutputs, write_subject

log = logging.getLogger("xaudit")


@dataclass
class PassSettings:
    """Everything the per-subject pass needs besides data and model."""

    spatial_dims: int
    classes: list[str]
    target: str
    methods: list[MethodRun]
    feature_spec: FeatureSpec
    concept_layer: torch.nn.Module | None
    layer_name: str | None
    max_batch: int
    seed: int
    downsample: int
    batch_size: int
    num_workers: int
    on_error: str
    baseline_mean: torch.Tensor | None = None
    atlas: str | None = None
    amp: str = "off"


@dataclass
class PassResult:
    done: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    feature_widths: list[int] | None = None
    method_seconds: dict[str, float] = field(default_factory=dict)  # each method's compute, all batches


class SubjectDataset(Dataset):
    """Loads and preprocesses one subject per item; failures become items, not crashes."""

    def __init__(self, subjects: list[Subject], transforms, spatial_dims: int, atlas=None,
                 keep_before_intensity: bool = False):
        self.keep_before_intensity = keep_before_intensity  # for the interventions (`xaudit.data.cache`)
        self.subjects = subjects
        self.transforms = transforms
        self.spatial_dims = spatial_dims
        self.atlas = atlas

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> dict:
        subject = self.subjects[index]
        try:
            loaded = load_subject(subject, self.transforms, self.spatial_dims, before_intensity=self.keep_before_intensity)
            foreground = preprocessed_foreground(subject, loaded, self.spatial_dims)
            item = {"index": index, "image": loaded.tensor, "affine": loaded.affine, "foreground": foreground,
                    "before_intensity": loaded.before_intensity}
            if self.atlas is not None:
                item["regions"] = atlas_on_grid(self.atlas, loaded, self.spatial_dims)
            return item
        except XauditError as exc:
            return {"index": index, "error": str(exc), "stage": "load"}
        except Exception as exc:  # noqa: BLE001 - isolate any per-subject failure
            return {"index": index, "error": reason_of(exc), "stage": "load"}


def _as_list(batch):
    return batch


def subject_pass_stage(setup, subjects: list[Subject], outputs: SubjectOutputs, max_batch: int,
                       progress: ProgressFactory = log_progress) -> PassResult:
    """The per-subject stage: every subject's predictions, features, maps and record.

    Args:
        setup: the validated `xaudit.stages.validate.Setup` (model, transforms, methods).
        subjects: the subjects still to do (a shard's, less those already done).
        outputs: where each subject's volumes and record go.
        max_batch: input-sized samples per forward+backward (`choose_max_batch`).
        progress: ``progress(label, total)`` -> a `xaudit.core.progress.Step` (bar and/or log lines).

    Returns:
        `PassResult`: ids done, failures, feature widths.
    """
    config = setup.config
    settings = PassSettings(
        spatial_dims=setup.spatial_dims, classes=config.model.classes, target=config.attribution.target,
        methods=setup.methods, feature_spec=setup.feature_spec, concept_layer=setup.layer,
        layer_name=config.model.layer, max_batch=max_batch, seed=config.attribution.seed,
        downsample=config.attribution.downsample, batch_size=config.data.batch_size,
        num_workers=config.data.num_workers, on_error=config.data.on_error,
        atlas=str(config.attribution.atlas) if config.attribution.atlas else None, amp=config.attribution.amp,
    )
    if needs_dataset_mean(setup.methods):
        mean = dataset_mean_input(setup.subjects, setup.transforms, setup.spatial_dims)
        settings.baseline_mean = None if mean is None else mean.to(setup.device)
    with progress("subjects", len(subjects)) as step:
        return run_subject_pass(subjects, setup.transforms, setup.model.module, setup.device, outputs, settings,
                                step.advance, inputs=setup.inputs)


def memory_cap(setup) -> int:
    """Input-sized samples one forward+backward may hold (`estimate_max_batch`; ``attribution.max_batch`` caps it)."""
    config = setup.config
    sample = torch.zeros((1, *setup.input_shape), device=setup.device)
    return estimate_max_batch(setup.model.module, sample, setup.device, config.attribution.memory_fraction,
                              config.attribution.max_batch)


def choose_max_batch(setup, tune: bool, cap: int | None = None) -> tuple[int, dict[int, float] | None]:
    """Samples per forward+backward: ``attribution.max_batch`` if set, else the memory cap
    (``cap``, or `memory_cap`), tuned for throughput when ``tune`` (there is work to do).

    Returns:
        (batch size, samples/s by batch size tried, or None when not tuned).
    """
    cap = memory_cap(setup) if cap is None else cap
    if not tune or setup.config.attribution.max_batch is not None:
        return cap, None
    return tune_batch(setup, cap, setup.config.attribution.amp)


def choose_strided_gradients(setup, cap: int | None = None, batch: int = 4) -> dict[str, dict]:
    """Strided convolutions whose input gradient runs faster as a stride-1 one
    (`xaudit.models.strided_conv.choose_layers`, timed on ``batch`` random inputs, fewer if
    the memory cap, ``cap`` or `memory_cap`, allows fewer), logged; none for TorchScript,
    which refuses the hooks."""
    if setup.model.scripted:
        return {}
    try:
        batch = min(batch, memory_cap(setup) if cap is None else cap)
        sample = torch.randn((batch, *setup.input_shape), generator=torch.Generator().manual_seed(0)).to(setup.device)
        choice = choose_layers(setup.model.module, sample)
    except (RuntimeError, ValueError, TypeError) as exc:  # the subjects' own passes will say what is wrong
        log.warning("strided convolutions not timed (%s: %s); PyTorch's gradients used", type(exc).__name__, exc)
        return {}
    for name, entry in choice.items():
        log.info("%s: input gradient %.1f ms (PyTorch) vs %.1f ms (space-to-depth): %s", name, entry["pytorch_ms"],
                 entry["space_to_depth_ms"], "space-to-depth used" if entry["used"] else "PyTorch's kept")
    return choice


def tune_batch(setup, cap: int, amp: str) -> tuple[int, dict[int, float]]:
    """The fastest batch size within the memory cap (`tune_max_batch`), logged."""
    sample = torch.randn((1, *setup.input_shape), generator=torch.Generator().manual_seed(0)).to(setup.device)
    try:
        best, rates = tune_max_batch(setup.model.module, sample, cap, autocast_dtype(amp, setup.device))
    except (RuntimeError, ValueError, TypeError) as exc:  # the subjects' own passes will say what is wrong
        log.warning("batch size not tuned (%s: %s); using %d", type(exc).__name__, exc, cap)
        return cap, {}
    if rates:
        log.info("batch size %d (forward+backward samples/s by batch size: %s; memory allows %d)", best,
                 ", ".join(f"{b}: {r:.3g}" for b, r in rates.items()), cap)
    return best, rates


def run_subject_pass(
    subjects: list[Subject],
    transforms,
    model: torch.nn.Module,
    device: torch.device,
    outputs: SubjectOutputs,
    settings: PassSettings,
    advance: Callable[[int], None] = lambda n: None,
    inputs: InputCache | None = None,
) -> PassResult:
    """Run predictions, features and attributions for every subject; write per-subject artifacts.

    ``inputs``: offered every audited subject's preprocessed input, for the dataset-level stages.

    Returns:
        The ids done and the failures (``subject_id``, ``row``, ``stage``, ``reason``).

    Raises:
        SubjectError-derived XauditError: with ``on_error: fail``, the first failure.
        OutputError: the output cannot be written (disk full, permissions): always fatal.
    """
    result = PassResult()
    loader = DataLoader(
        SubjectDataset(subjects, transforms, settings.spatial_dims, settings.atlas, keep_before_intensity=inputs is not None),
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        collate_fn=_as_list,
        persistent_workers=False,
    )
    pending: list[tuple[Subject, Future]] = []
    batches = loader if settings.num_workers else prefetched(loader)  # worker processes load ahead themselves
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="xaudit-writer") as writer, \
            (nullcontext() if settings.num_workers else closing(batches)):
        for items in batches:
            for item in items:
                if "error" in item:
                    _fail(result, subjects[item["index"]], item["stage"], item["error"], settings)
                    advance(1)
            for group in _group_by_shape([i for i in items if "error" not in i]):
                batch_subjects = [subjects[i["index"]] for i in group]
                try:
                    records = _process_batch(group, batch_subjects, model, device, settings, result)
                except XauditError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one batch's failure fails its subjects only
                    for s in batch_subjects:
                        _fail(result, s, "attribution", reason_of(exc), settings)
                    advance(len(batch_subjects))
                    continue
                for item, subject, record in zip(group, batch_subjects, records):
                    if "method_failure" in record:
                        _fail(result, subject, "attribution", record["method_failure"], settings)
                        advance(1)
                        continue
                    if inputs is not None:
                        inputs.offer(subject.subject_id, LoadedImage(item["image"], item["affine"], item["before_intensity"]),
                                     item["foreground"])
                    pending.append((subject, writer.submit(write_subject, outputs, subject, record, settings.spatial_dims)))
                pending = _drain(pending, result, settings, advance, keep=2 * settings.batch_size)
        _drain(pending, result, settings, advance, keep=0)
    return result


def _drain(pending, result: PassResult, settings: PassSettings, advance, keep: int):
    """Wait for finished (or all but ``keep``) writes; record failures."""
    still = []
    for n, (subject, future) in enumerate(pending):
        if future.done() or n < len(pending) - keep:
            try:
                future.result()
                result.done.append(subject.subject_id)
            except OutputError:
                raise
            except Exception as exc:  # noqa: BLE001
                _fail(result, subject, "write", reason_of(exc), settings)
            advance(1)
        else:
            still.append((subject, future))
    return still


def _fail(result: PassResult, subject: Subject, stage: str, reason: str, settings: PassSettings) -> None:
    from xaudit.errors import SubjectError

    reason = " ".join(str(reason).split())[:500]
    if settings.on_error == "fail":
        raise SubjectError(subject.subject_id, stage, reason)
    log.warning("subject %s failed in %s: %s", subject.subject_id, stage, reason)
    result.failed.append({"subject_id": subject.subject_id, "row": subject.row, "stage": stage, "reason": reason})


def _group_by_shape(items: list[dict]) -> list[list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for item in items:
        groups.setdefault(tuple(item["image"].shape), []).append(item)
    return list(groups.values())


def _process_batch(group, batch_subjects, model, device, settings: PassSettings, result: PassResult) -> list[dict]:
    x = torch.stack([i["image"] for i in group]).to(device)
    labels = torch.tensor([s.label for s in batch_subjects], dtype=torch.long)
    precision = autocast_dtype(settings.amp, x.device)
    started = time.perf_counter()
    with _autocast(x.device, precision):
        forward = _forward_pass(model, x, labels, settings)
    shared_s = time.perf_counter() - started
    if result.feature_widths is None:
        result.feature_widths = forward["widths"]
    targets = forward["targets"]
    fg = torch.stack([i["foreground"] for i in group]).to(device)
    with _autocast(x.device, precision):
        masked = _masked_probs(model, x, fg)
    regions = torch.stack([i["regions"] for i in group]).to(device) if "regions" in group[0] else None
    ctx = make_context(
        settings.concept_layer, settings.layer_name, settings.max_batch, settings.seed,
        settings.baseline_mean, [s.subject_id for s in batch_subjects], foreground=fg, regions=regions,
        logits=forward["logits_tensor"],
    )
    maps, stats, regions = {}, {}, {}
    for run in settings.methods:
        started = time.perf_counter()
        with _autocast(x.device, precision if type(run.method).supports_amp else None):
            out = run.method.from_shared(forward["shared"])
            # a method served by the shared pass would cost that pass on its own (the quality stage's estimate)
            cost = shared_s if out is not None else 0.0
            out = out or run.method.attribute(model, x, targets, ctx)
        maps[run.name] = out.maps.detach().float().sum(dim=1).cpu()  # channels summed: one map per subject
        result.method_seconds[run.name] = result.method_seconds.get(run.name, 0.0) + cost + time.perf_counter() - started
        stats[run.name] = {k: v.detach().float().cpu() for k, v in out.stats.items()}
        regions[run.name] = out.region_weights
    small_image = downsample_volumes(x[:, 0].float().cpu(), settings.downsample)
    records = []
    for j, item in enumerate(group):
        record = {
            "probs": forward["probs"][j], "logits": forward["logits"][j], "target": targets[j].item(),
            "features": forward["features"][j], "concept_acts": forward["concept_acts"][j],
            "concept_grads": forward["concept_grads"][j], "affine": item["affine"],
            "foreground": item["foreground"].numpy(), "image_small": small_image[j],
            "maps": {m: maps[m][j] for m in maps},
            "stats": {m: {k: float(v[j]) for k, v in stats[m].items()} for m in stats},
            "regions": {m: (regions[m][j] if regions[m] is not None else None) for m in regions},
            "downsample": settings.downsample,
        }
        record.update({k: v[j] for k, v in masked.items()})
        failure = non_finite_reason(maps, stats, j)
        if failure:
            record["method_failure"] = failure
        records.append(record)
    return records


def non_finite_reason(maps: dict, stats: dict, j: int) -> str | None:
    """Why sample ``j``'s maps cannot be used (a method's numerical failure), or None.

    A NaN or inf in a map is the method's failure on that subject, not bad data: the
    subject fails in the attribution stage with this reason instead of reaching the
    dataset-level checks (which would refuse the whole run).
    """
    for method, stack in maps.items():
        bad = int((~torch.isfinite(stack[j])).sum())
        if bad:
            extra = "".join(f"; {k} {float(v[j]):.3g}" for k, v in stats.get(method, {}).items())
            return (f"method `{method}` gave a non-finite map ({bad} of {stack[j].numel()} voxels NaN or inf{extra}): "
                    "a numerical failure of the method on this subject")
    return None


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``attribution.amp`` on a device, or None for float32."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _forward_pass(model, x, labels, settings: PassSettings) -> dict:
    """The shared forward+backward: logits, features, and for each sample's target the
    gradient w.r.t. the input and the concept layer (saliency, Grad-CAM and TCAV reuse it)."""
    input_grad = any(type(run.method).uses_input_gradient for run in settings.methods)
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), capture(model, settings.feature_spec, settings.concept_layer) as store:
        logits = model(x)
        targets = choose_targets(settings.target, settings.classes, logits.detach(), labels)
        concept = store["concept"] if store.get("concept_calls") == 1 else None
        with_concept = concept is not None and concept.requires_grad
        wrt = ([x] if input_grad else []) + ([concept] if with_concept else [])
        score = logits.gather(1, targets.view(-1, 1)).sum()
        grads = list(torch.autograd.grad(score, wrt)) if wrt else []
    shared = SharedPass(inputs=x.detach(), input_grads=grads.pop(0).detach() if input_grad else None)
    if with_concept:
        concept_grad = grads.pop(0)
        shared.layer_acts, shared.layer_grads = concept.detach(), concept_grad.detach()
        acts = concept.detach()
        concept_acts = acts.flatten(2).mean(2) if acts.ndim > 2 else acts
        concept_grads = concept_grad.flatten(2).sum(2) if concept_grad.ndim > 2 else concept_grad
    else:
        concept_acts = concept_grads = torch.zeros(x.shape[0], 0)
    features = [f for f in store["features"] if f is not None]
    widths = [f.shape[1] for f in features]
    feats = torch.cat(features, dim=1) if features else torch.zeros(x.shape[0], 0)
    logits = logits.detach().float()
    return {
        "logits_tensor": logits,
        "logits": logits.cpu().numpy(), "probs": torch.softmax(logits, 1).cpu().numpy(), "targets": targets,
        "features": feats.cpu().numpy(), "widths": widths, "shared": shared,
        "concept_acts": concept_acts.float().cpu().numpy(), "concept_grads": concept_grads.float().cpu().numpy(),
    }


def _masked_probs(model, x, fg) -> dict:
    """Probabilities with the foreground blanked, and with the background blanked."""
    with torch.no_grad():
        mask = fg.unsqueeze(1).to(x.dtype)
        fill = x.amin(dim=tuple(range(1, x.ndim)), keepdim=True)  # the darkest value: "nothing here"
        both = model(torch.cat([x * (1 - mask) + fill * mask, x * mask + fill * (1 - mask)]))  # one forward
        no_fg, no_bg = both[: len(x)], both[len(x):]
    return {
        "probs_fg_blanked": torch.softmax(no_fg.float(), 1).cpu().numpy(),
        "probs_bg_blanked": torch.softmax(no_bg.float(), 1).cpu().numpy(),
    }
