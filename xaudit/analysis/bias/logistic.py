"""Batched L2 logistic regression: many binary problems on one design matrix at once.

A permutation test refits the same probe hundreds of times on the same features with
permuted labels and folds. Fitting them one ``sklearn.linear_model.LogisticRegression`` at
a time costs milliseconds of overhead each; here all problems share the feature matrix
and are solved together by Newton's method (iteratively reweighted least squares; e.g.
Hastie, Tibshirani & Friedman 2009, sec. 4.4.1) with backtracking, on the objective
sklearn minimises:

    C * sum_i s_i * (log(1 + exp(z_i)) - y_i z_i) + ||w||^2 / 2,   z = X w + b,

with per-row weights ``s`` (zero leaves a row out: that is how folds are expressed) and an
unpenalised intercept ``b``. The Hessian is ``(k+1)^2`` per problem, ``k`` the smaller of the
features and the rows: with more than `MAX_FEATURES` features and fewer than half as many
rows (a wide layer's channels over a few dozen subjects) the same fits are solved in each
problem's row space (`_fit_wide`), since the L2 optimum lies in the span of the rows (the representer
theorem; Hastie, Tibshirani & Friedman 2009, sec. 18.3.5). Callers use sklearn when both
the features and the rows exceed `MAX_FEATURES`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

MAX_FEATURES = 64
MAX_ELEMENTS = 4_000_000  # problems x rows x features per chunk: bounds memory at ~32 MB


def balanced_weights(y: np.ndarray, train: np.ndarray) -> np.ndarray:
    """sklearn's ``class_weight="balanced"`` per problem: n_train / (2 n_class) on training rows.

    Args:
        y: ``(B, n)`` 0/1 labels.
        train: ``(B, n)`` bool, the training rows of each problem.

    Returns:
        ``(B, n)`` weights, zero outside training.
    """
    n_train = train.sum(axis=1, keepdims=True).astype(float)
    n_pos = (train & (y == 1)).sum(axis=1, keepdims=True)
    n_neg = n_train - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        w_pos = np.where(n_pos > 0, n_train / (2 * n_pos), 0.0)
        w_neg = np.where(n_neg > 0, n_train / (2 * n_neg), 0.0)
    return np.where(train, np.where(y == 1, w_pos, w_neg), 0.0)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, c: float = 1.0, max_iter: int = 100, tol: float = 1e-8,
    penalty: np.ndarray | None = None,
) -> np.ndarray:
    """Fit B weighted L2 logistic regressions sharing the features ``x``.

    Args:
        x: ``(n, d)`` features (standardise them first; the penalty is not scale-free).
        y: ``(B, n)`` 0/1 labels per problem.
        weights: ``(B, n)`` non-negative row weights per problem.
        c: inverse regularisation strength (sklearn's ``C``).
        max_iter: Newton steps at most.
        tol: stop when every step's largest coordinate is below this.
        penalty: ``(B, d)`` per-problem weights of the squared coefficients (default 1).
            Fitting on features standardised per problem is this with the squared
            per-problem scales as weights: the same solution in raw coordinates.

    Returns:
        ``(B, d + 1)`` coefficients; the last column is the intercept.
    """
    rows_used = int((np.asarray(weights) > 0).sum(axis=1).max(initial=0))
    if x.shape[1] > max(2 * rows_used, MAX_FEATURES):  # wide: each problem's row space halves it at least
        return _fit_wide(x, y, weights, c, max_iter, tol, penalty)
    design = np.c_[x, np.ones(len(x))]
    chunk = max(1, MAX_ELEMENTS // max(design.size, 1))
    weights_of_w = np.ones((len(y), x.shape[1])) if penalty is None else np.asarray(penalty, dtype=float)
    return np.concatenate([
        _newton(design, y[s:s + chunk], c * weights[s:s + chunk], max_iter, tol, weights_of_w[s:s + chunk])
        for s in range(0, len(y), chunk)
    ])


def _fit_wide(x, y, weights, c, max_iter, tol, penalty) -> np.ndarray:
    """`fit_logistic` when the problems have far more features ``d`` than rows in use ``m``.

    Each problem keeps only its own rows (weight > 0), padded to ``m`` with rows of weight 0.
    With those rows ``X = Q L^(1/2) V^T`` (``Q``, ``L``: the eigenvectors and eigenvalues of the
    Gram matrix ``X X^T``), every ``w = V beta`` plus a part orthogonal to the rows, which
    changes no ``z`` and only adds to the penalty: the optimum has none, and ``beta`` solves
    the same problem on the ``m`` features ``Q L^(1/2)`` with the same penalty ``||beta||^2``;
    then ``w = X^T Q L^(-1/2) beta``. A per-problem penalty ``sum p_j w_j^2`` is the isotropic
    one on ``u = sqrt(p) w`` over the features ``x / sqrt(p)``. Tested equal to sklearn's fits.
    (The Gram matrix, not an SVD of ``X``: measured 1 s against 31 s at 20,000 features.)
    """
    n, d = x.shape
    penalty = np.ones((len(y), d)) if penalty is None else np.asarray(penalty, dtype=float)
    if not (penalty > 0).all():
        raise ValueError("penalty weights must be positive when there are more features than rows")
    weights = np.asarray(weights)
    rows = [np.flatnonzero(row > 0) for row in weights]
    m = max(len(r) for r in rows)
    if m == 0:
        return np.zeros((len(y), d + 1))
    chunk = max(1, MAX_ELEMENTS // (m * d))
    out = []
    for s in range(0, len(y), chunk):
        part = range(s, min(s + chunk, len(y)))
        shrink = 1.0 / np.sqrt(penalty[s:s + len(part)])
        xs, ys, ws = np.zeros((len(part), m, d)), np.zeros((len(part), m)), np.zeros((len(part), m))
        for j, b in enumerate(part):
            k = len(rows[b])
            xs[j, :k], ys[j, :k], ws[j, :k] = x[rows[b]] * shrink[j], y[b, rows[b]], weights[b, rows[b]]
        lam, q = np.linalg.eigh(xs @ xs.transpose(0, 2, 1))
        keep = lam > lam.max(axis=1, keepdims=True) * m * np.finfo(float).eps  # the rows' rank
        root = np.sqrt(np.where(keep, lam, 0.0))
        design = np.concatenate([q * root[:, None, :], (ws > 0)[..., None].astype(float)], axis=2)
        beta = _newton(design, ys, c * ws, max_iter, tol, np.ones((len(part), m)))
        alpha = np.einsum("bmr,br->bm", q, np.where(keep, beta[:, :-1], 0.0) / np.where(keep, root, 1.0))
        out.append(np.c_[np.einsum("bm,bmd->bd", alpha, xs) * shrink, beta[:, -1]])
    return np.concatenate(out)


def decision_function(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``(B, n)`` decision values z = X w + b of each problem's coefficients."""
    return coef[:, :-1] @ x.T + coef[:, -1:]


def _z(design: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(B, n)``: each problem's ``design @ w``; ``design`` is shared ``(n, k)`` or per problem ``(B, n, k)``."""
    return w @ design.T if design.ndim == 2 else np.einsum("bnk,bk->bn", design, w)


def _loss(design, y, s, w, penalty) -> np.ndarray:
    z = _z(design, w)
    return (s * (np.logaddexp(0.0, z) - y * z)).sum(axis=1) + 0.5 * (penalty * w ** 2).sum(axis=1)


def _newton(design: np.ndarray, y: np.ndarray, s: np.ndarray, max_iter: int, tol: float,
            feature_penalty: np.ndarray) -> np.ndarray:
    """``(B, k)`` coefficients; ``design`` ``(n, k)`` shared by the problems or ``(B, n, k)`` each its own."""
    b, d = len(y), design.shape[-1]
    penalty = np.c_[feature_penalty, np.zeros(b)]  # the intercept is not penalised, as in sklearn
    w = np.zeros((b, d))
    loss = _loss(design, y, s, w, penalty)
    for _ in range(max_iter):
        p = expit(_z(design, w))
        residual = s * (p - y)
        grad = (residual @ design if design.ndim == 2 else np.einsum("bn,bnk->bk", residual, design)) + penalty * w
        curvature = s * p * (1 - p)
        hess = (curvature[:, :, None] * design).transpose(0, 2, 1) @ design  # batched X^T diag(c) X
        hess[:, np.arange(d), np.arange(d)] += penalty + 1e-12  # 1e-12: an unused intercept stays solvable
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        t = np.ones(b)
        for _ in range(30):  # backtracking: halve the steps of problems whose loss rose
            trial = w - t[:, None] * step
            new = _loss(design, y, s, trial, penalty)
            worse = new > loss + 1e-12 * np.abs(loss)
            if not worse.any():
                break
            t = np.where(worse, t / 2, t)
        w, loss = trial, new
        if np.max(np.abs(t[:, None] * step)) < tol:
            break
    return w
