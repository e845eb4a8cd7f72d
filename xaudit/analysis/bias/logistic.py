"""Batched L2 logistic regression: many binary problems on one design matrix at once.

A permutation test refits the same probe hundreds of times on the same features with
permuted labels and folds. Fitting them one ``sklearn.linear_model.LogisticRegression`` at
a time costs milliseconds of overhead each; here all problems share the feature matrix
and are solved together by Newton's method (iteratively reweighted least squares; e.g.
Hastie, Tibshirani & Friedman 2009, sec. 4.4.1) with backtracking, on the objective
sklearn minimises:

    C * sum_i s_i * (log(1 + exp(z_i)) - y_i z_i) + ||w||^2 / 2,   z = X w + b,

with per-row weights ``s`` (zero leaves a row out: that is how folds are expressed) and an
unpenalised intercept ``b``. Intended for few features (the Hessian is ``(d+1)^2`` per
problem); `xaudit.analysis.bias.probes` falls back to sklearn beyond `MAX_FEATURES`.
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
    design = np.c_[x, np.ones(len(x))]
    chunk = max(1, MAX_ELEMENTS // max(design.size, 1))
    weights_of_w = np.ones((len(y), x.shape[1])) if penalty is None else np.asarray(penalty, dtype=float)
    return np.concatenate([
        _newton(design, y[s:s + chunk], c * weights[s:s + chunk], max_iter, tol, weights_of_w[s:s + chunk])
        for s in range(0, len(y), chunk)
    ])


def decision_function(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``(B, n)`` decision values z = X w + b of each problem's coefficients."""
    return coef[:, :-1] @ x.T + coef[:, -1:]


def _loss(design, y, s, w, penalty) -> np.ndarray:
    z = w @ design.T
    return (s * (np.logaddexp(0.0, z) - y * z)).sum(axis=1) + 0.5 * (penalty * w ** 2).sum(axis=1)


def _newton(design: np.ndarray, y: np.ndarray, s: np.ndarray, max_iter: int, tol: float,
            feature_penalty: np.ndarray) -> np.ndarray:
    b, d = len(y), design.shape[1]
    penalty = np.c_[feature_penalty, np.zeros(b)]  # the intercept is not penalised, as in sklearn
    w = np.zeros((b, d))
    loss = _loss(design, y, s, w, penalty)
    for _ in range(max_iter):
        p = expit(w @ design.T)
        grad = (s * (p - y)) @ design + penalty * w
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
