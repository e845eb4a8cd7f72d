"""The pictures of the subject pages, drawn in worker processes while the other stages run.

A subject page shows each method's map over the subject's own scan (`render_pictures`). At
about 25 ms a picture these are most of the report's time (80 subjects x 4 methods: 8 s of
the demo's 13 s report), and they need nothing the dataset-level stages compute: only the
maps on disk and the records. So `finish_run` starts them as soon as the records are read
(`xaudit.report.subject_pages.start_pictures`), in ``cpu_count - 1`` worker processes (at
least one, at most four), and the report collects them at the end
(`SubjectPictures.pictures`). A picture a worker has not started is drawn by the report
itself; a worker that fails or dies costs nothing but time: its pictures are drawn in the
report's process, and so are all the rest once a worker leaves a subject unanswered for `WAIT_S`.

The workers (`xaudit.core.workers.worker_pool`: forked on Linux, at the lowest priority, dead
with the run) get jobs of paths and the record's small arrays, and never touch the model,
torch or the run directory: they return PNG bytes and the report's process writes every file
(atomically, as all outputs).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xaudit.core.bids import attribution_file
from xaudit.core.workers import cpu_count, stop_pool, worker_pool
from xaudit.core.pages import release_pages
from xaudit.report.figures_grids import planes_png
from xaudit.report.figures_maps import PERCENTILE, MapRow
from xaudit.report.format import fmt_num
from xaudit.report.sections_common import maps_usable
from xaudit.report.volumes import SubjectScan

log = logging.getLogger("xaudit")

MAX_WORKERS = 4
RELEASE_EVERY = 64  # jobs between two releases of the file-mapped maps' pages (`xaudit.core.pages`)
WAIT_S = 60.0  # for one subject's pictures (~0.1 s of work); a worker past it is stuck or starved: the report draws the rest


@dataclass(frozen=True)
class MapSource:
    """Where one method's map of a subject is: its attribution volume, else the record's downsampled one."""

    method: str
    volume: Path
    fallback: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None  # (image, map, affine) of the record


@dataclass(frozen=True)
class PictureJob:
    """One subject's pictures to draw: everything a worker needs, as paths and small arrays."""

    subject: object  # its `xaudit.data.manifest.Subject`
    dims: int
    sources: tuple[MapSource, ...]


@dataclass(frozen=True)
class Picture:
    """One method's picture of a subject (``png`` None: it could not be drawn, ``text`` says why)."""

    method: str
    png: bytes | None
    text: str


def render_pictures(job: PictureJob) -> list[Picture]:
    """Each source's map in three planes through its peak and three MIPs, over the subject's scan."""
    scan = SubjectScan(job.subject, job.dims)
    return [_picture(scan, source) for source in job.sources]


def _picture(scan: SubjectScan, source: MapSource) -> Picture:
    native = scan.over(source.volume)
    if native is not None:
        outline = np.any(np.stack(list(native.rois.values())), axis=0).astype(np.float32) if native.rois else None
        row = MapRow(scan.subject.subject_id, native.anatomy, native.attribution, native.affine, outline)
        where = f"at the resolution of the scan ({'x'.join(str(s) for s in native.anatomy.shape)} voxels)"
    elif source.fallback is not None:
        image, amap, affine = source.fallback
        row, where = MapRow(scan.subject.subject_id, image, amap, affine), "downsampled (no attribution volume in attributions/)"
    else:
        return Picture(source.method, None, f"No {source.method} map of this subject could be read.")
    png, vmax = planes_png(row)
    panels = "the cut" if scan.dims == 2 else ("coronal, sagittal and axial cuts through the peak of |attribution|, then "
                                          "maximum-intensity projections over the whole field of view")
    caption = (f"{source.method}, {where}: {panels}; red for the target class, blue against it, colour limits "
               f"±{fmt_num(vmax)} (the {PERCENTILE:g}th percentile of |attribution|)"
               + ("; ROI masks outlined in green." if row.outline is not None else "."))
    return Picture(source.method, png, caption)


def cohort_dims(cohort) -> int:
    """2 or 3: the spatial dimensions of the cohort's images."""
    return cohort.images_small.ndim - 1 if cohort.images_small.dtype != object else len(cohort.input_shapes[0])


class SubjectPictures:
    """The subject pages' pictures, drawn ahead in worker processes, or here when asked for first.

    Args:
        cohort: the run's `xaudit.data.cohort.Cohort`.
        run_dir: the `xaudit.core.outputs.RunDirectory` (the attribution volumes).
        layout: the run's ``output_layout``.
        workers: worker processes (started on the first `ahead`); default `background_workers`, 0 for none.
    """

    def __init__(self, cohort, run_dir, layout: str, workers: int | None = None):
        self.cohort, self.run_dir, self.layout = cohort, run_dir, layout
        self.workers = background_workers() if workers is None else workers
        self._futures: dict[int, Future] = {}
        self._executor: ProcessPoolExecutor | None = None
        self._usable: dict[str, bool] = {}  # method -> its records' maps can be drawn (a scan of every map)
        self._dims = cohort_dims(cohort) if cohort.n else 0
        self._jobs = 0

    def job(self, i: int, methods: list[str]) -> PictureJob:
        """Subject ``i``'s job for ``methods``, its paths resolved here (in the report's process)."""
        cohort, subject = self.cohort, self.cohort.subjects[i]
        affine = cohort.input_affines[i] if len(cohort.input_affines) else None
        for m in methods:
            if m not in self._usable:
                self._usable[m] = maps_usable(cohort, m)
        sources = tuple(MapSource(m, Path(attribution_file(self.run_dir, self.layout, subject, m)),
                                  (cohort.images_small[i], cohort.maps[m][i], affine) if self._usable[m] else None)
                        for m in methods)
        self._jobs += 1
        if self._jobs % RELEASE_EVERY == 0:  # the pages read for the jobs so far leave the resident set
            release_pages(cohort.images_small, *cohort.maps.values())
        return PictureJob(subject, self._dims, sources)

    def ahead(self, picks, methods: list[str]) -> None:
        """Start drawing ``methods`` of the subjects ``picks`` (those not started yet) in the workers."""
        if self.workers <= 0:
            return
        if self._executor is None:
            self._executor = worker_pool(self.workers, background=True)
            if self._executor is None:
                self.workers = 0
                return
        for i in (int(k) for k in picks):
            if i in self._futures:
                continue
            try:
                self._futures[i] = self._executor.submit(render_pictures, self.job(i, list(methods)))
            except Exception as exc:  # noqa: BLE001 - a broken pool: the pictures are drawn here
                log.debug("subject pictures: no background worker (%s: %s)", type(exc).__name__, exc)
                self.workers = 0
                return

    def pictures(self, i: int, methods: list[str]) -> dict[str, Picture]:
        """Subject ``i``'s pictures of ``methods``: the workers' if drawn (or being drawn), else drawn now."""
        got: dict[str, Picture] = {}
        future = self._futures.pop(i, None)
        if future is not None and not future.cancel():  # a job not started yet is drawn below, here
            try:
                got = {p.method: p for p in future.result(timeout=WAIT_S)}
            except TimeoutError:
                log.debug("subject pictures: no answer from the workers in %.0f s; the rest are drawn here", WAIT_S)
                self.close()
                self.workers = 0
            except Exception as exc:  # noqa: BLE001 - a worker died or failed: drawn here instead
                log.debug("subject pictures: a worker failed on subject %d (%s: %s)", i, type(exc).__name__, exc)
        missing = [m for m in methods if m not in got]
        if missing:
            got.update({p.method: p for p in render_pictures(self.job(i, missing))})
        return {m: got[m] for m in methods}

    def close(self) -> None:
        """Stop the workers; pictures not collected yet are dropped (and their workers killed)."""
        if self._executor is not None:
            stop_pool(self._executor, now=bool(self._futures))
            self._executor = None
        self._futures.clear()

    def __enter__(self) -> "SubjectPictures":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def background_workers() -> int:
    """Worker processes for the pictures: one core is left to the stages running meanwhile."""
    return max(1, min(MAX_WORKERS, cpu_count() - 1))
