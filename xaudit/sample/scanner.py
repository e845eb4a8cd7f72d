"""Scanner signatures of the sample cohort's sites: gain, bias field, ghost and noise.

Each site images the same anatomy differently, the way multi-site MRI does (Glocker et al.,
"Machine learning with multi-site imaging data: an empirical study on the impact of
scanner effects", arXiv:1910.04597, 2019). The effects follow MRI physics loosely:
a smooth multiplicative bias field (Sled et al., N3, IEEE TMI 17, 1998), an N/2 Nyquist
ghost along the phase-encoding axis, and Rician magnitude noise (Gudbjartsson and Patz,
MRM 34, 1995). The ghost is what a small CNN latches onto as a shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xaudit.sample.cohort import smooth_random_field

# Anterior-posterior: the usual phase-encoding direction of axial brain scans.
PHASE_AXIS = 1


@dataclass(frozen=True)
class ScannerProfile:
    """One site's acquisition signature.

    Attributes:
        site: site name as written to the manifest.
        scanner: scanner model as written to the manifest.
        gain: global intensity scale (receiver gain / scaling of the stored values).
        noise: Rician noise standard deviation, relative to white matter before gain.
        bias: standard deviation of the log bias field.
        ghost: amplitude of the N/2 ghost, relative to the image.
    """

    site: str
    scanner: str
    gain: float
    noise: float
    bias: float
    ghost: float


SITES: dict[str, ScannerProfile] = {
    # the controls' site, like a public healthy-volunteer dataset: clean 3T images
    "site_A": ScannerProfile("site_A", "vendorX_3T", gain=1.0, noise=0.02, bias=0.05, ghost=0.0),
    # the patients' hospital: an older 1.5T scanner, noisier, with an N/2 ghost. Tuned
    # (sample_data/README.md) so a small CNN reliably prefers it over the lesions.
    "site_B": ScannerProfile("site_B", "vendorY_1.5T", gain=1.4, noise=0.06, bias=0.08,
                             ghost=0.3),
}


def apply_scanner(image: np.ndarray, profile: ScannerProfile, voxel_mm: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Image a noise-free subject with a site's scanner.

    Args:
        image: noise-free intensities (template scale).
        profile: the site's signature.
        voxel_mm: voxel size in millimetres (sets the bias field's smoothness).
        rng: random generator.

    Returns:
        float32 magnitude image, non-negative.
    """
    bias = np.exp(profile.bias * smooth_random_field(image.shape, voxel_mm, 80.0, rng))
    signal = image * bias
    if profile.ghost > 0:
        # Nyquist ghost: a faint copy shifted by half the field of view (even/odd echo
        # mismatch in EPI-like readouts); it lands mostly in the background.
        shift = image.shape[PHASE_AXIS] // 2
        signal = signal + profile.ghost * np.roll(signal, shift, axis=PHASE_AXIS)
    real = signal + profile.noise * rng.standard_normal(image.shape)
    imaginary = profile.noise * rng.standard_normal(image.shape)
    magnitude = np.sqrt(real**2 + imaginary**2)
    return (profile.gain * magnitude).astype(np.float32)
