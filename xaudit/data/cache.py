"""The model inputs the per-subject pass prepared, kept for the dataset-level stages that reuse them.

The rules' feature maps, the quality checks and the interventions run the model again on
subjects the pass just loaded and preprocessed; reading and resampling them anew cost about
2 s of the demo's 30 s run. The pass offers each subject's input here (with the image before
its intensity step, which the interventions work on, and its foreground), and `InputCache.load`
/ `InputCache.before_intensity` give them back, or load them when they were not kept. Memory
stays bounded: entries are kept first come, first kept, until `MAX_SUBJECTS` are or
`MAX_BYTES` (or a tenth of the memory available, if less) is held. A big cohort gains little
from it anyway (the stages sample a bounded number of subjects spread over the cohort, and the
first few hundred kept are rarely among them), so its memory must not grow with the cohort: a
10,000-subject run keeps the same 256 as a 1,000-subject one and loads the rest as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch

from xaudit.data.foreground import preprocessed_foreground
from xaudit.data.loading import LoadedImage, load_subject
from xaudit.data.manifest import Subject

MAX_BYTES = 64 * 2**20
MAX_SUBJECTS = 256


@dataclass(frozen=True)
class _Kept:
    loaded: LoadedImage
    foreground: torch.Tensor


def _bytes(*tensors: torch.Tensor | None) -> int:
    unique = {id(t): t for t in tensors if t is not None}
    return sum(t.numel() * t.element_size() for t in unique.values())


class InputCache:
    """Preprocessed inputs by subject id, up to a byte budget (first come, first kept)."""

    def __init__(self, max_bytes: int | None = None, max_subjects: int = MAX_SUBJECTS):
        self.max_bytes = min(MAX_BYTES, psutil.virtual_memory().available // 10) if max_bytes is None else max_bytes
        self.max_subjects = max_subjects
        self._items: dict[str, _Kept] = {}
        self.held_bytes = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, subject_id: str, loaded: LoadedImage, foreground: torch.Tensor) -> bool:
        """Keep ``loaded`` and its foreground (on the CPU) if the budget allows; True when kept."""
        size = _bytes(loaded.tensor, loaded.before_intensity, foreground)
        full = self.held_bytes + size > self.max_bytes or len(self._items) >= self.max_subjects
        if subject_id in self._items or full:
            return False
        cpu = loaded.tensor.detach().cpu()
        before = loaded.before_intensity
        before = cpu if before is loaded.tensor else (None if before is None else before.detach().cpu())
        self._items[subject_id] = _Kept(LoadedImage(cpu, loaded.affine, before), foreground.detach().cpu())
        self.held_bytes += size
        return True

    def load(self, subject: Subject, transforms, spatial_dims: int) -> LoadedImage:
        """The subject's input as the pass prepared it, else `load_subject` (which raises DataError)."""
        kept = self._items.get(subject.subject_id)
        if kept is None:
            return load_subject(subject, transforms, spatial_dims)
        self.hits += 1
        return LoadedImage(tensor=kept.loaded.tensor.clone(), affine=kept.loaded.affine)

    def before_intensity(self, subject: Subject, spatial, spatial_dims: int) -> tuple[LoadedImage, torch.Tensor]:
        """The subject's image before the intensity step and its foreground (bool ``(*spatial)``),
        as the pass saw them, else loaded with the ``spatial`` preprocessing (raises DataError).

        The pass's foreground is reused only where it came from the subject's mask file; an
        estimated one is estimated again from this image, as it would be without the cache.
        """
        kept = self._items.get(subject.subject_id)
        if kept is None or kept.loaded.before_intensity is None:
            loaded = load_subject(subject, spatial, spatial_dims)
            return loaded, preprocessed_foreground(subject, loaded, spatial_dims)
        self.hits += 1
        loaded = LoadedImage(tensor=kept.loaded.before_intensity.clone(), affine=kept.loaded.affine)
        fg = kept.foreground.clone() if subject.mask is not None else preprocessed_foreground(subject, loaded, spatial_dims)
        return loaded, fg
