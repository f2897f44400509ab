"""Bidirectional decoding (BID; Liu, Hamid, Xie, Lee, Du, Finn 2024, arXiv 2408.17355): pick one
of N sampled chunks.

Scores follow the authors' reference sampler (YuejiangLIU/bid_diffusion,
``sampler/multi.py::bidirectional_sampler``); lower is better:

* backward coherence: ``sum_h w_h * ||c_h - Y_h||_2 / sum_h w_h`` -- weighted mean per-step
  Euclidean distance to the previous plan's overlapping actions (``weights`` is 0 outside the
  overlap);
* pruning: only the ``ceil(N / num_mode)`` most coherent candidates stay in the race (the
  others score ``+inf``);
* forward contrast (``forward=True``): ``+ mean distance to the k_pos nearest other kept
  candidates`` (k_pos = kept // 2, at least 1) ``- mean distance to the k_neg nearest weak
  samples`` (k_neg = kept // 2, at least 1; only with ``weak``); distances between chunks are
  the mean over steps of the per-step Euclidean distance.

Without a previous plan (all weights 0) the backward term is 0 and nothing is pruned.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bid_scores", "bid_select", "chunk_distance"]


def chunk_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over steps of the per-step L2 distance: ``a (..., H, A)``, ``b (..., H, A)`` -> ``(...)``."""
    return np.linalg.norm(a - b, axis=-1).mean(axis=-1)


def _check(name: str, x: np.ndarray, ndim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values")
    return x


def bid_scores(
    candidates: np.ndarray,
    prefix: np.ndarray | None,
    weights: np.ndarray | None,
    weak: np.ndarray | None = None,
    *,
    forward: bool = True,
    num_mode: int = 3,
) -> np.ndarray:
    """Scores ``(B, N)``, lower is better (pruned candidates: ``+inf``).

    Args:
        candidates: ``(B, N, H, A)`` samples of the strong policy.
        prefix: ``(B, H, A)`` previous plan aligned to the candidates' steps, or None.
        weights: ``(B, H)`` backward-coherence weights (>= 0), or None (no previous plan).
        weak: ``(B, M, H, A)`` samples of a weak policy for the negative term, or None.
        forward: include the forward-contrast terms.
        num_mode: keep ``ceil(N / num_mode)`` candidates after the backward ranking.
    """
    c = _check("candidates", candidates, 4)
    b, n, h, a = c.shape
    if n < 1:
        raise ValueError("need at least one candidate")
    if isinstance(num_mode, bool) or not isinstance(num_mode, int) or num_mode < 1:
        raise ValueError(f"num_mode must be a positive int, got {num_mode!r}")
    if (prefix is None) != (weights is None):
        raise ValueError("prefix and weights must be given together")
    backward = np.zeros((b, n))
    has_prior = np.zeros(b, dtype=bool)
    if prefix is not None:
        y = _check("prefix", prefix, 3)
        w = _check("weights", weights, 2)
        if y.shape != (b, h, a):
            raise ValueError(f"prefix must be {(b, h, a)}, got {y.shape}")
        if w.shape != (b, h):
            raise ValueError(f"weights must be {(b, h)}, got {w.shape}")
        if np.any(w < 0):
            raise ValueError("weights must be >= 0")
        wsum = w.sum(-1)  # (B,)
        has_prior = wsum > 0
        dist = np.linalg.norm(c - y[:, None], axis=-1)  # (B, N, H)
        safe = np.where(has_prior, wsum, 1.0)
        backward = (dist * w[:, None, :]).sum(-1) / safe[:, None]
        backward[~has_prior] = 0.0
    scores = backward.copy()
    n_keep = math.ceil(n / num_mode)
    kept = np.ones((b, n), dtype=bool)
    for i in range(b):
        if has_prior[i] and n_keep < n:
            order = np.argsort(backward[i], kind="stable")
            kept[i] = False
            kept[i, order[:n_keep]] = True
    if forward:
        wk = None
        if weak is not None:
            wk = _check("weak", weak, 4)
            if wk.shape[0] != b or wk.shape[2:] != (h, a) or wk.shape[1] < 1:
                raise ValueError(f"weak must be (B={b}, M>=1, {h}, {a}), got {wk.shape}")
        for i in range(b):
            idx = np.flatnonzero(kept[i])
            ck = c[i, idx]  # (K, H, A)
            k = len(idx)
            if k > 1:
                pair = chunk_distance(ck[:, None], ck[None, :])  # (K, K)
                np.fill_diagonal(pair, np.inf)
                k_pos = max(1, k // 2)
                pos = np.sort(pair, axis=1)[:, :k_pos].mean(1)
                scores[i, idx] += pos
            if wk is not None:
                neg_d = chunk_distance(ck[:, None], wk[i][None, :])  # (K, M)
                k_neg = max(1, min(k // 2, wk.shape[1]))
                neg = np.sort(neg_d, axis=1)[:, :k_neg].mean(1)
                scores[i, idx] -= neg
    scores[~kept] = np.inf
    return scores


def bid_select(
    candidates: np.ndarray,
    prefix: np.ndarray | None,
    weights: np.ndarray | None,
    weak: np.ndarray | None = None,
    *,
    forward: bool = True,
    num_mode: int = 3,
) -> np.ndarray:
    """Index ``(B,)`` of the best candidate per batch row (ties: lowest index)."""
    s = bid_scores(candidates, prefix, weights, weak, forward=forward, num_mode=num_mode)
    return np.argmin(s, axis=1)
