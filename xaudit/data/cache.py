"""The model inputs the per-subject pass prepared, kept for the dataset-level stages that reuse them.

The rules' feature maps and the quality checks run the model again on subjects the pass just
loaded and preprocessed; reading and resampling them anew cost 1.3 s of the demo's 33 s run.
The pass offers each subject's input here, and `InputCache.load` gives it back, or loads it
when it was not kept. Memory stays bounded: entries are kept first come, first kept, until
`MAX_BYTES` (or a tenth of the memory available, if less) is held, so a 10,000-subject run
keeps its first few hundred and the stages load the rest as before.
"""

from __future__ import annotations

import psutil

from xaudit.data.loading import LoadedImage, load_subject
from xaudit.data.manifest import Subject

MAX_BYTES = 64 * 2**20


class InputCache:
    """Preprocessed inputs by subject id, up to a byte budget (first come, first kept)."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = min(MAX_BYTES, psutil.virtual_memory().available // 10) if max_bytes is None else max_bytes
        self._items: dict[str, LoadedImage] = {}
        self.held_bytes = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, subject_id: str, loaded: LoadedImage) -> bool:
        """Keep ``loaded`` (on the CPU) if the budget allows; True when kept."""
        size = loaded.tensor.numel() * loaded.tensor.element_size()
        if subject_id in self._items or self.held_bytes + size > self.max_bytes:
            return False
        self._items[subject_id] = LoadedImage(tensor=loaded.tensor.detach().cpu(), affine=loaded.affine)
        self.held_bytes += size
        return True

    def load(self, subject: Subject, transforms, spatial_dims: int) -> LoadedImage:
        """The subject's input as the pass prepared it, else `load_subject` (which raises DataError)."""
        kept = self._items.get(subject.subject_id)
        if kept is not None:
            self.hits += 1
            return LoadedImage(tensor=kept.tensor.clone(), affine=kept.affine)
        return load_subject(subject, transforms, spatial_dims)

    def clear(self) -> None:
        self._items.clear()
        self.held_bytes = 0
