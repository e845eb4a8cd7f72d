"""Running mean maps per (class, group value) cell, without holding every map in memory.

The report shows what the model looks at on average for, say, lesion subjects of site A
versus site B. Attribution maps are streamed subject by subject (and shard by shard), so
the mean is accumulated as a float64 sum and a count per key; shards merge by adding.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from xaudit.errors import DataError


class MeanMapAccumulator:
    """Online mean of equally shaped maps per key.

    Example:
        >>> acc = MeanMapAccumulator()
        >>> acc.add(("lesion", "site=A"), np.ones((2, 2)))
        >>> acc.means()[("lesion", "site=A")].sum()
        4.0
    """

    def __init__(self) -> None:
        self._sums: dict[Hashable, np.ndarray] = {}
        self._counts: dict[Hashable, int] = {}

    @property
    def counts(self) -> dict[Hashable, int]:
        """Number of maps added per key."""
        return dict(self._counts)

    def keys(self) -> list[Hashable]:
        """The keys seen so far, in insertion order."""
        return list(self._sums)

    def add(self, key: Hashable, map: np.ndarray) -> None:  # noqa: A002 (public name in the API)
        """Add one map under ``key``.

        Raises:
            DataError: when the map's shape differs from earlier maps of the key, or it is
                not finite.
        """
        values = np.asarray(map, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise DataError(f"mean map {key!r}: the added map has NaN or inf values.")
        self._add_sum(key, values, 1)

    def merge(self, other: MeanMapAccumulator) -> MeanMapAccumulator:
        """Add every sum and count of ``other`` into this accumulator; returns self."""
        for key, total in other._sums.items():
            self._add_sum(key, total, other._counts[key])
        return self

    def means(self) -> dict[Hashable, np.ndarray]:
        """Key -> mean map (float64)."""
        return {key: total / self._counts[key] for key, total in self._sums.items()}

    def _add_sum(self, key: Hashable, total: np.ndarray, count: int) -> None:
        if key not in self._sums:
            self._sums[key] = np.array(total, dtype=np.float64, copy=True)
            self._counts[key] = count
            return
        if self._sums[key].shape != total.shape:
            raise DataError(
                f"mean map {key!r}: maps must all have shape {self._sums[key].shape}. "
                f"Got {total.shape} instead."
            )
        self._sums[key] += total
        self._counts[key] += count
