"""The scripts users write today: per volume, nibabel load, one call per method, nibabel save.

`run_peer` is the "peer" xaudit is measured against: one Captum call per method, written
the way a careful user would, with Captum's batching knobs (``internal_batch_size``,
``nt_samples_batch_size``, ``perturbations_per_eval``) set to the limit's best batch size.
`run_monai` is the same loop with ``monai.visualize`` (batch size 1, as it requires; it
has no integrated gradients). Both explain the predicted class and save every map as
gzip NIfTI with the image's affine.

Usage (standalone):
    python benchmarks/peer_script.py IMAGE.nii.gz [...] -o OUT [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.common import MODES, build_model, noise_stdev  # noqa: E402


def captum_map(name: str, params: dict, model, layer, x: torch.Tensor, target: int, batch: int) -> torch.Tensor:
    """One Captum call for one volume ``(1, 1, *spatial)``; returns the map ``(1, 1, *spatial)``."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency

    if name == "saliency":
        return Saliency(model).attribute(x, target=target, abs=False)
    if name == "integrated_gradients":
        return IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=params.get("steps", 32),
            method="gausslegendre", internal_batch_size=batch,
        )
    if name == "smoothgrad":
        return NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=params.get("samples", 16), nt_samples_batch_size=batch,
            stdevs=noise_stdev(x, params.get("noise_level", 0.1)), target=target, abs=False,
        )
    if name == "gradcam":
        cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="trilinear")
    if name == "occlusion":
        window = params.get("window", 8)
        stride = params.get("stride") or window
        return Occlusion(model).attribute(
            x, sliding_window_shapes=(1, window, window, window), strides=(1, stride, stride, stride),
            baselines=0.0, target=target, perturbations_per_eval=batch,
        )
    raise ValueError(f"the peer script has no method {name!r}")


def run_peer(images: list[Path], model, layer, methods: dict, out_dir: Path, batch: int, zscore: bool = False,
             device: str = "cpu") -> dict:
    """Every method for every volume, one volume at a time.

    Returns:
        Seconds spent: ``shared`` (load + prediction) and one entry per method (its
        Captum call and the save of its map), summed over the volumes.
    """
    seconds = {"shared": 0.0, **{name: 0.0 for name in methods}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in images:
        t0 = time.perf_counter()
        image = nib.load(str(path))
        x = torch.from_numpy(np.asarray(image.dataobj, dtype=np.float32))[None, None].to(device)
        if zscore:  # what the demo's model was trained with (MONAI NormalizeIntensity)
            x = (x - x.mean()) / x.std()
        with torch.no_grad():
            target = int(model(x).argmax(1))
        seconds["shared"] += time.perf_counter() - t0
        for name, params in methods.items():
            t0 = time.perf_counter()
            attribution = captum_map(name, params, model, layer, x, target, batch)
            volume = attribution.detach()[0, 0].float().cpu().numpy()
            nib.save(nib.Nifti1Image(volume, image.affine, image.header), str(out_dir / f"{path.name.split('.')[0]}_{name}.nii.gz"))
            seconds[name] += time.perf_counter() - t0
    return seconds


def monai_map(name: str, params: dict, model, layer_name: str, x: torch.Tensor, target: int, batch: int):
    """MONAI's ``monai.visualize`` for one volume (batch size 1, as it requires); None if it has no such method."""
    from monai.visualize import GradCAM, OcclusionSensitivity, SmoothGrad, VanillaGrad

    if name == "saliency":
        return VanillaGrad(model)(x, index=target)
    if name == "smoothgrad":
        return SmoothGrad(model, stdev_spread=params.get("noise_level", 0.1), n_samples=params.get("samples", 16),
                          magnitude=False, verbose=False)(x, index=target)
    if name == "gradcam":
        return GradCAM(nn_module=model, target_layers=layer_name)(x, class_idx=target)
    if name == "occlusion":
        window = params.get("window", 8)
        stride = params.get("stride") or window
        occ = OcclusionSensitivity(model, mask_size=window, n_batch=batch, verbose=False, mode=0.0,
                                   overlap=1.0 - stride / window, activate=False)
        occluded, _ = occ(x)
        return occluded[..., target]
    return None  # no integrated gradients in monai.visualize


def run_monai(images: list[Path], model, layer_name: str, methods: dict, out_dir: Path, batch: int,
              zscore: bool = False, device: str = "cpu") -> dict:
    """Like `run_peer`, with monai.visualize instead of Captum; methods MONAI lacks are skipped."""
    seconds = {"shared": 0.0}
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in images:
        t0 = time.perf_counter()
        image = nib.load(str(path))
        x = torch.from_numpy(np.asarray(image.dataobj, dtype=np.float32))[None, None].to(device)
        if zscore:
            x = (x - x.mean()) / x.std()
        with torch.no_grad():
            target = int(model(x).argmax(1))
        seconds["shared"] += time.perf_counter() - t0
        for name, params in methods.items():
            t0 = time.perf_counter()
            attribution = monai_map(name, params, model, layer_name, x, target, batch)
            if attribution is None:
                continue
            volume = torch.as_tensor(attribution).detach()[0, 0].float().cpu().numpy()
            nib.save(nib.Nifti1Image(volume, image.affine, image.header), str(out_dir / f"{path.name.split('.')[0]}_{name}.nii.gz"))
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the seconds as one JSON line")
    parser.add_argument("--checkpoint", help="load this state_dict into the mode's network")
    parser.add_argument("--zscore", action="store_true", help="z-score each volume (the demo models' input)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--monai", action="store_true", help="monai.visualize instead of Captum (no integrated gradients)")
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    model = build_model(**mode.model_args, checkpoint=args.checkpoint).to(args.device)
    if args.monai:
        seconds = run_monai(args.images, model, mode.layer, mode.methods, args.out, args.batch, args.zscore, args.device)
    else:
        seconds = run_peer(args.images, model, model.get_submodule(mode.layer), mode.methods, args.out, args.batch,
                           args.zscore, args.device)
    print(json.dumps(seconds) if args.json else {k: round(v, 3) for k, v in seconds.items()})


if __name__ == "__main__":
    main()
