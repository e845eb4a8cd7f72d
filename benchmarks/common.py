"""What every benchmarked system shares: the modes, the synthetic cohort, the seeded model, the limit.

The model is built by `build_model`, which is also the ``model.factory`` of the xaudit
configs (``benchmarks.common:build_model``), so xaudit, the peer script and MONAI all
run exactly the same network with the same weights. The cohort is gzip NIfTI on an
oblique, anisotropic grid, so xaudit's native-space code path is the one users hit.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

#: voxel-to-world affine of every synthetic volume: rotated 15 degrees about z, anisotropic, shifted
OBLIQUE_AFFINE = np.array(
    [
        [1.2 * np.cos(np.pi / 12), -1.0 * np.sin(np.pi / 12), 0.0, -38.0],
        [1.2 * np.sin(np.pi / 12), 1.0 * np.cos(np.pi / 12), 0.0, -31.5],
        [0.0, 0.0, 1.5, -45.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@dataclass(frozen=True)
class Mode:
    """One benchmark size: data, network and method parameters shared by every system."""

    name: str
    size: int
    volumes: int
    arch: str
    widen_factor: float
    methods: dict
    rss_sizes: tuple[int, int]
    rss_methods: dict = field(default_factory=lambda: {"saliency": {}})
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    monai_volumes: int = 4
    probe_reps: int = 2
    layer: str = "layer4"

    @property
    def model_args(self) -> dict:
        return {"arch": self.arch, "widen_factor": self.widen_factor}


MODES = {
    # the target workload: a MONAI 3D ResNet-18 at 64^3 (about 70 minutes on 2 CPU cores,
    # 2.3 s per forward+backward sample there; 4 volumes time each system, 32 and 256 the RSS)
    "full": Mode(
        name="full", size=64, volumes=4, arch="resnet18", widen_factor=1.0,
        methods={
            "saliency": {}, "integrated_gradients": {"steps": 32}, "gradcam": {},
            "smoothgrad": {"samples": 16, "noise_level": 0.1}, "occlusion": {"window": 16},
        },
        rss_sizes=(32, 256), batch_sizes=(1, 2, 4, 8), monai_volumes=2,
    ),
    # the same pipeline, small enough to finish in minutes on 2 shared CPU cores
    "quick": Mode(
        name="quick", size=32, volumes=4, arch="resnet18", widen_factor=0.25,
        methods={
            "saliency": {}, "integrated_gradients": {"steps": 8}, "gradcam": {},
            "smoothgrad": {"samples": 8, "noise_level": 0.1}, "occlusion": {"window": 16},
        },
        rss_sizes=(8, 32), batch_sizes=(1, 4, 16), monai_volumes=1, probe_reps=1,
    ),
    # issue 16's workload for the whole audit (benchmarks/audit_speed.py): 80 volumes of 40^3,
    # the demo's small BatchNorm DenseNet, the demo's methods plus SmoothGrad
    "audit": Mode(
        name="audit", size=40, volumes=80, arch="densenet", widen_factor=1.0,
        methods={
            "integrated_gradients": {"steps": 16}, "smoothgrad": {"samples": 8, "noise_level": 0.1},
            "saliency": {}, "gradcam": {},
        },
        rss_sizes=(8, 32), layer="features.denseblock2",
    ),
    # only checks that the harness runs end to end (tests); its numbers mean nothing
    "micro": Mode(
        name="micro", size=16, volumes=4, arch="tiny", widen_factor=1.0,
        methods={
            "saliency": {}, "integrated_gradients": {"steps": 2}, "gradcam": {},
            "smoothgrad": {"samples": 2, "noise_level": 0.1}, "occlusion": {"window": 8},
        },
        rss_sizes=(2, 4), batch_sizes=(1, 4), monai_volumes=2,
    ),
}


def build_model(arch: str = "resnet18", widen_factor: float = 1.0, seed: int = 0, num_classes: int = 2,
                checkpoint: str | None = None) -> torch.nn.Module:
    """The seeded MONAI 3D ResNet every system runs (also the xaudit ``model.factory``).

    Args:
        arch: ``resnet18``, ``resnet10``, ``tiny`` (one basic block per stage, 4-32 channels) or
            ``densenet`` (the demo's two-block MONAI DenseNet, 8 initial features; widen_factor ignored).
        widen_factor: channel multiplier of MONAI's ResNet (0.25 = a quarter of the channels).
        seed: seeds the random weights without touching the caller's RNG state.
        num_classes: logits returned.
        checkpoint: a state_dict to load instead of the seeded weights (the demo's shipped models).
    """
    from monai.networks.nets import ResNet, resnet10, resnet18

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        common = {"spatial_dims": 3, "n_input_channels": 1, "num_classes": num_classes, "widen_factor": widen_factor}
        if arch == "resnet18":
            net = resnet18(**common)
        elif arch == "resnet10":
            net = resnet10(**common)
        elif arch == "densenet":  # the demo's small 3D BatchNorm CNN (configs/demo.yaml), seeded random weights
            from monai.networks.nets import DenseNet

            net = DenseNet(spatial_dims=3, in_channels=1, out_channels=num_classes, init_features=8, growth_rate=8,
                           block_config=(2, 2), bn_size=2)
        elif arch == "tiny":
            net = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 16, 32], conv1_t_size=3, **common)
        else:
            raise ValueError(f"arch must be resnet18, resnet10, tiny or densenet. Got {arch!r} instead.")
    if checkpoint:
        net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return net.eval()


def synthetic_volume(size: int, label: int, site: str, rng: np.random.Generator) -> np.ndarray:
    """An ellipsoid "body" with texture, a bright blob for label 1, a corner artefact at site B."""
    grid = np.indices((size, size, size), dtype=np.float32) / (size - 1) - 0.5
    body = ((grid / np.array([0.42, 0.38, 0.4], np.float32).reshape(3, 1, 1, 1)) ** 2).sum(0) < 1
    volume = np.where(body, 100.0, 5.0).astype(np.float32)
    volume += rng.normal(0, 8, volume.shape).astype(np.float32)
    if label:
        centre = rng.uniform(-0.15, 0.15, 3).astype(np.float32).reshape(3, 1, 1, 1)
        volume += 60.0 * (((grid - centre) ** 2).sum(0) < 0.1**2)
    if site == "B":
        volume[: size // 8, : size // 8, : size // 8] += 80.0
    return volume


def write_cohort(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` gzip NIfTI volumes of ``size``^3 on `OBLIQUE_AFFINE` and their manifest; returns the manifest."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label, site = i % 2, "AB"[(i // 2) % 2]
        path = root / f"sub-{i:04d}.nii.gz"
        image = nib.Nifti1Image(synthetic_volume(size, label, site, rng), OBLIQUE_AFFINE)
        image.set_sform(OBLIQUE_AFFINE, 1)
        image.set_qform(OBLIQUE_AFFINE, 1)
        nib.save(image, str(path))
        rows.append([f"sub-{i:04d}", path.name, label, site])
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "image", "label", "site"])
        writer.writerows(rows)
    return manifest


def read_manifest(manifest: Path) -> list[Path]:
    """The image paths of a manifest written by `write_cohort`."""
    with manifest.open() as handle:
        return [manifest.parent / row["image"] for row in csv.DictReader(handle)]


def noise_stdev(x: torch.Tensor, noise_level: float) -> float:
    """SmoothGrad's noise sigma as xaudit defines it: a fraction of the input's range."""
    return float(noise_level * (x.max() - x.min()))


#: methods served by one forward+backward of the input itself: together they need a single pass,
#: whose forward also gives the prediction
GRADIENT_ON_INPUT = ("saliency", "input_x_gradient", "gradcam", "gradcam_plus_plus")


def pass_rate(model, size: int, batch: int, backward: bool, reps: int) -> float:
    """Samples/s of forward(+backward to the input) at one batch size, over ``reps`` passes."""
    shape = (size,) * 3 if isinstance(size, int) else tuple(size)  # a cube, or the demo's 40x48x40
    device = next(model.parameters()).device
    x = torch.randn(batch, 1, *shape, generator=torch.Generator().manual_seed(1)).to(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        if backward:
            xx = x.clone().requires_grad_(True)
            torch.autograd.grad(model(xx)[:, 0].sum(), xx)
        else:
            with torch.no_grad():
                model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return batch * len(times) / sum(times)


def sweep_limit(model, mode: Mode) -> dict:
    """Throughput at every batch size of the mode; the best batch size of each pass kind."""
    pass_rate(model, mode.size, 1, True, 1)  # warm-up
    fb = {b: pass_rate(model, mode.size, b, True, 2) for b in mode.batch_sizes}
    fwd = {b: pass_rate(model, mode.size, b, False, 2) for b in mode.batch_sizes}
    best_fb, best_fwd = max(fb, key=fb.get), max(fwd, key=fwd.get)
    return {"fb_samples_per_s": fb, "fwd_samples_per_s": fwd, "best_batch_fb": best_fb, "best_batch_fwd": best_fwd}


def probe(model, mode: Mode, sweep: dict, label: str) -> dict:
    """A short re-measurement of the best rates, taken between system runs (the load drifts)."""
    return {
        "label": label, "time": time.time(), "load": os.getloadavg()[0],
        "fb": pass_rate(model, mode.size, sweep["best_batch_fb"], True, mode.probe_reps),
        "fwd": pass_rate(model, mode.size, sweep["best_batch_fwd"], False, mode.probe_reps),
    }


def occlusion_windows(size: int, params: dict, ndim: int = 3) -> int:
    """Captum's window count: ``ceil((L - w) / s) + 1`` per axis."""
    w = min(params.get("window", 8), size)
    s = params.get("stride") or w
    return (-(-(size - w) // s) + 1) ** ndim


def method_passes(name: str, params: dict, size: int) -> tuple[int, int]:
    """(forward+backward, forward-only) passes a method needs per volume, prediction excluded.

    Gausslegendre IG points exclude the baseline, and the completeness check's two
    forwards are not needed for the map, so IG needs ``steps`` passes.
    """
    if name == "integrated_gradients":
        return params.get("steps", 32), 0
    if name in ("smoothgrad", "vargrad"):
        return params.get("samples", 16), 0
    if name == "occlusion":
        return 0, occlusion_windows(size, params)
    return (0 if name in GRADIENT_ON_INPUT else 1), 0  # the shared input pass is counted once


def limit_seconds(methods: dict, size: int, fb_rate: float, fwd_rate: float) -> float:
    """Seconds per volume at the limit: every method's passes, the gradient-on-input methods'
    single shared forward+backward, and one prediction forward unless that pass gives it."""
    shared = any(n in GRADIENT_ON_INPUT for n in methods)
    fb = sum(method_passes(n, p, size)[0] for n, p in methods.items()) + (1 if shared else 0)
    fwd = sum(method_passes(n, p, size)[1] for n, p in methods.items()) + (0 if shared else 1)
    return fb / fb_rate + fwd / fwd_rate


def rates_around(probes: list[dict], before: int, after: int) -> tuple[float, float]:
    """Mean of the probes taken just before and just after a system run."""
    pair = probes[before], probes[after]
    return sum(p["fb"] for p in pair) / 2, sum(p["fwd"] for p in pair) / 2
