"""Strategy clusters: SpRAy, spectral relevance analysis of the attribution maps.

Lapuschkin et al. (2019, Nat. Commun. 10:1096, "Unmasking Clever Hans predictors")
cluster the downsampled attribution maps of one class: distinct clusters are distinct
decision strategies, and a cluster that looks at a watermark rather than the horse is a
Clever Hans strategy. Here the maps of each class are L2-normalised (so clusters differ by
*where* the model looks, not how strongly), joined in a symmetric k-nearest-neighbour
graph, and split by spectral clustering (von Luxburg 2007, Stat. Comput. 17:395) into a
number of clusters chosen by the largest eigengap of the normalised Laplacian (or given).
The affinity is sparse, but the eigengap's dense Laplacian and its eigenproblem grow with the
square and the cube of the maps, so a class with more than ``spray_max_maps`` maps is
clustered on that many, drawn evenly in manifest order (`evenly_spaced`), and its result
says how many of how many.
Each cluster's agreement with every group column and with the label is the adjusted
mutual information (Vinh et al. 2010, JMLR 11:2837): strategies that follow the site
rather than the label are a signature finding.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.linalg import eigh
from scipy.sparse.csgraph import laplacian
from skimage.transform import resize
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.neighbors import kneighbors_graph
from threadpoolctl import threadpool_limits

from xaudit.analysis.bias.findings import Finding
from xaudit.analysis.bias.inputs import group_strings
from xaudit.analysis.stats import evenly_spaced
from xaudit.core.jsonable import to_jsonable
from xaudit.core.pages import take_rows
from xaudit.config.bias import BiasParams


@dataclass
class SprayCluster:
    """One strategy: its size, representative subject and composition."""

    index: int
    size: int
    representative: str
    representative_index: int
    label_counts: dict[str, int]
    group_counts: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)


@dataclass
class SprayClassResult:
    """Clusters of one class's maps. ``mean_maps`` ``(k, D)`` are for the lead to write."""

    class_name: str
    n: int
    n_clusters: int
    chosen_by: str
    eigenvalues: list[float]
    ami_label: float | None
    ami_groups: dict[str, float | None]
    clusters: list[SprayCluster]
    assignments: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, dtype=int))
    members: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, dtype=int))
    mean_maps: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))
    n_class: int | None = None  # maps of the class in all; > n when the class was subsampled

    @property
    def subsampled(self) -> bool:
        return self.n_class is not None and self.n_class > self.n

    def to_dict(self) -> dict[str, Any]:
        keep = ("class_name", "n", "n_clusters", "chosen_by", "eigenvalues", "ami_label", "ami_groups", "clusters")
        out = {k: getattr(self, k) for k in keep}
        if self.subsampled:  # only then: a small cohort's result is as it always was
            out["n_class"] = self.n_class
        return to_jsonable(out)


@dataclass
class SprayResult:
    """Per-class clusterings, findings and notes."""

    classes: list[SprayClassResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature_tests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"classes": [c.to_dict() for c in self.classes], "notes": self.notes,
                            "signature_tests": self.signature_tests, "findings": [f.id for f in self.findings]})


def downsample_map(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Area-averaged (anti-aliased) resize of a spatial map to ``shape``, for SpRAy."""
    return resize(np.asarray(a, dtype=float), shape, order=1, anti_aliasing=True, preserve_range=True)


def knn_affinity(x: np.ndarray, neighbors: int) -> sparse.csr_matrix:
    """Sparse symmetric 0/1 affinity of the k-nearest-neighbour graph (connected if either is).

    Sparse: a dense ``(n, n)`` affinity and its copies were most of SpRAy's memory (2,000 maps:
    32 MB each); the clustering and the Laplacian take it as it is.
    """
    graph = kneighbors_graph(x, n_neighbors=neighbors, include_self=False)
    return graph.maximum(graph.T).tocsr()


def eigengap_clusters(affinity: np.ndarray, max_clusters: int) -> tuple[int, list[float]]:
    """Number of clusters at the largest gap among the smallest Laplacian eigenvalues.

    Returns:
        ``(k, eigenvalues)`` with k in [1, max_clusters] and the ``max_clusters + 1``
        smallest eigenvalues of the symmetric normalised Laplacian.
    """
    lap = laplacian(affinity, normed=True)
    lap = lap.toarray() if sparse.issparse(lap) else np.array(lap, dtype=float)
    top = min(max_clusters, lap.shape[0] - 1)
    # lap is symmetric: its transpose is the Fortran-ordered array LAPACK overwrites without a copy
    values = eigh(lap.T, eigvals_only=True, subset_by_index=[0, top], overwrite_a=True, check_finite=False)
    gaps = np.diff(values)
    return int(np.argmax(gaps)) + 1, [float(v) for v in values]


def spray(
    maps: np.ndarray, classes: np.ndarray, labels: np.ndarray, groups: dict[str, np.ndarray],
    class_names: list[str], params: BiasParams, subject_ids: np.ndarray | None = None,
) -> SprayResult:
    """Cluster each class's attribution maps and compare the clusters with groups and label.

    Args:
        maps: ``(n, D)`` downsampled, flattened attribution maps.
        classes: ``(n,)`` the class each map explains (clustered per class).
        labels: ``(n,)`` true classes (-1 unknown): AMI with the label measures whether
            strategies separate correct from wrong decisions when ``classes`` are predictions.
        groups: group column -> ``(n,)`` values.
        class_names: the class names.
        params: ``spray_clusters``, ``spray_max_clusters``, ``spray_neighbors``, ``spray_max_maps``,
            ``spray_ami``, ``spray_ami_margin``, ``min_group_size``, ``seed``.
        subject_ids: ``(n,)`` ids for the representatives (default: row numbers).

    Returns:
        A `SprayResult`; ``signature_tests`` counts the class x group comparisons.
    """
    result = SprayResult()
    ids = np.arange(len(maps)).astype(str) if subject_ids is None else np.asarray(subject_ids).astype(str)
    for c, name in enumerate(class_names):
        members = np.flatnonzero(classes == c)
        if len(members) < 2 * params.min_group_size:
            if len(members):
                result.notes.append(f"SpRAy {name}: {len(members)} maps < {2 * params.min_group_size}; not clustered.")
            continue
        n_class = len(members)
        members = members[evenly_spaced(n_class, params.spray_max_maps)]
        cls = _cluster_class(maps, members, labels, groups, class_names, name, params, ids)
        if len(members) < n_class:
            cls.n_class = n_class
            result.notes.append(f"SpRAy {name}: clustered {len(members):,} of {n_class:,} maps, drawn evenly in "
                                f"manifest order (bias.spray_max_maps = {params.spray_max_maps:,}); cluster sizes "
                                "and AMI are those of the subsample.")
        result.classes.append(cls)
        result.signature_tests += sum(v is not None for v in cls.ami_groups.values())
        result.findings += _findings(cls, params)
    return result


def _cluster_class(maps, members, labels, groups, class_names, name, params, ids) -> SprayClassResult:
    # only the clustered rows, once, in float32 (the maps' dtype): 2,000 maps of 16^3 are 32 MB
    unit = np.asarray(take_rows(maps, members), dtype=np.float32)  # a copy of the rows: normalised in place
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    np.divide(unit, norms, out=unit, where=norms > 0)
    unit[(norms == 0)[:, 0]] = 0.0
    n = len(members)
    neighbors = min(n - 1, params.spray_neighbors or max(5, int(round(np.sqrt(n)))))
    affinity = knn_affinity(unit, neighbors)
    k, eigenvalues = eigengap_clusters(affinity, params.spray_max_clusters)
    chosen_by = "eigengap"
    if params.spray_clusters is not None:
        k, chosen_by = min(params.spray_clusters, n - 1), "given"
    assignments = np.zeros(n, dtype=int)
    if k > 1:
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", UserWarning)  # "graph is not fully connected" is expected
            model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=params.seed)
            assignments = model.fit_predict(affinity)
    known = labels[members] >= 0
    ami_label = _ami(labels[members][known], assignments[known])
    ami_groups, group_values = {}, {}
    for column, raw in groups.items():
        values, has = group_strings(np.asarray(raw)[members])
        group_values[column] = (values, has)
        ami_groups[column] = _ami(values[has], assignments[has])
    clusters, means = [], []
    for j in range(k):
        inside = np.flatnonzero(assignments == j)
        centroid = unit[inside].mean(axis=0)
        rep = inside[int(np.argmin(np.linalg.norm(unit[inside] - centroid, axis=1)))]
        lab = labels[members][inside]
        clusters.append(SprayCluster(
            j, len(inside), str(ids[members[rep]]), int(members[rep]),
            {class_names[v] if v >= 0 else "unknown": int(np.sum(lab == v)) for v in np.unique(lab)},
            {col: {str(v): int(np.sum(vals[inside][has[inside]] == v)) for v in np.unique(vals[inside][has[inside]])}
             for col, (vals, has) in group_values.items()},
        ))
        means.append(take_rows(maps, members[inside]).mean(axis=0, dtype=float))
    return SprayClassResult(name, n, k, chosen_by, eigenvalues, ami_label, ami_groups, clusters,
                            assignments, members, np.stack(means))


def _ami(truth: np.ndarray, clusters: np.ndarray) -> float | None:
    """AMI, or None when the reference has fewer than two values (nothing to agree with)."""
    if len(np.unique(truth)) < 2:
        return None
    if len(np.unique(clusters)) < 2:
        return 0.0
    return float(adjusted_mutual_info_score(truth, clusters))


def _findings(cls: SprayClassResult, params: BiasParams) -> list[Finding]:
    out = []
    label = cls.ami_label or 0.0
    for column, ami in cls.ami_groups.items():
        if ami is None or ami < params.spray_ami or ami - label < params.spray_ami_margin:
            continue
        out.append(Finding(
            id=f"spray.{column}.{cls.class_name}", check="spray", severity="warning", column=column,
            title=(f"the attribution maps of class {cls.class_name} form {cls.n_clusters} strategies that follow "
                   f"{column} (AMI {ami:.2f} vs {label:.2f} with the label)"),
            message=(f"Spectral clustering of {cls.n} {cls.class_name} maps gives {cls.n_clusters} clusters "
                     f"({cls.chosen_by}); they agree with {column} (adjusted mutual information {ami:.2f}) far "
                     f"more than with the true label ({label:.2f}). The model looks at different places "
                     f"depending on {column}. Representatives: "
                     + ", ".join(c.representative for c in cls.clusters) + "."),
            evidence={"ami_group": ami, "ami_label": cls.ami_label, "n_clusters": cls.n_clusters,
                      "clusters": [c.to_dict() for c in cls.clusters]},
            threshold={"spray_ami": params.spray_ami, "spray_ami_margin": params.spray_ami_margin},
            points_to="signature",
        ))
    return out
