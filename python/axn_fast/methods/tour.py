"""TOUR (Sung et al., 2023): test-time optimisation of the query embedding by gradient steps.

As run in the AXN paper (Appendix B.2): the budget of CE calls is spread over R
rounds like AXN; after each round, one gradient step on the query embedding ``u``
reduces the disagreement between approximate scores ``s = V_A u`` and exact CE
scores ``a`` of every item A scored so far; the next round retrieves the top
items not yet scored under the updated ``u``.

Losses (``g`` is the gradient with respect to ``u``):

* ``"kl"`` (TOUR-CE): ``KL(softmax(a) || softmax(s))``; ``g = V_Aᵀ (softmax(s) - softmax(a))``.
  Paper learning rate 0.1.
* ``"mse"`` (TOUR-MSE): ``½ ‖s - a‖²`` on the raw scores; ``g = V_Aᵀ (s - a)``.
  Paper learning rate 1e-3.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from axn_fast.search.budget import check_budget, round_sizes
from axn_fast.search.ledger import ScoreLedger
from axn_fast.search.topk import top_ids
from axn_fast._validation import as_float32_array, as_ids, check_float, check_int
from axn_fast.search.results import SearchResult

LOSSES = ("kl", "mse")
DEFAULT_LR = {"kl": 0.1, "mse": 1e-3}


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def tour_loss_and_grad(u: np.ndarray, V_A: np.ndarray, a: np.ndarray, loss: str):
    """Loss and its gradient with respect to ``u`` (d,), for items ``V_A`` (m, d) with exact scores ``a`` (m,).

    Computed in float64.
    """
    u = np.asarray(u, dtype=np.float64)
    V_A = np.asarray(V_A, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    s = V_A @ u
    if loss == "kl":
        p, qs = _softmax(a), _softmax(s)
        log_p = a - a.max() - np.log(np.exp(a - a.max()).sum())
        log_q = s - s.max() - np.log(np.exp(s - s.max()).sum())
        value = float(np.sum(p * (log_p - log_q)))
        grad = V_A.T @ (qs - p)
    elif loss == "mse":
        r = s - a
        value = 0.5 * float(r @ r)
        grad = V_A.T @ r
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return value, grad


class TOUR:
    """TOUR-CE (``loss="kl"``) or TOUR-MSE (``loss="mse"``) over fixed item embeddings.

    Args:
        item_emb: (n_items, d) item embeddings (e.g. from a dual encoder).
        loss: ``"kl"`` or ``"mse"``.
        lr: learning rate of the one gradient step per round; default 0.1 for KL, 1e-3 for MSE.
        normalization: optional (alpha, beta) (or an object with ``.alpha``/``.beta``): the loss
            compares ``s`` with ``beta * (a - alpha)``, the CE scores brought to the embedding
            space's scale as for AXN (AXN paper, A.4); rankings and returned scores are unchanged.
    """

    def __init__(self, item_emb, *, loss: str = "kl", lr: Optional[float] = None, normalization=None):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.item_emb = as_float32_array(item_emb, "item_emb", ndim=(2,), allow_empty=False)
        self.n_items, self.dim = self.item_emb.shape
        self.loss = loss
        self.lr = DEFAULT_LR[loss] if lr is None else check_float(lr, "lr", minimum=0.0)
        if normalization is not None and hasattr(normalization, "alpha"):
            normalization = (normalization.alpha, normalization.beta)
        if normalization is not None:
            if len(normalization) != 2:
                raise ValueError(f"normalization must be (alpha, beta), got {normalization!r}")
            alpha = check_float(normalization[0], "normalization alpha")
            beta = check_float(normalization[1], "normalization beta")
            if beta <= 0:
                raise ValueError(f"normalization beta must be > 0, got {beta}")
            normalization = (alpha, beta)
        self.normalization = normalization

    def search(self, q, ce, budget: int, *, u0, k: int = 10, rounds: int = 5, init=None) -> SearchResult:
        """Search for query ``q`` starting from its embedding ``u0`` (d,).

        init: optional ranked ids whose first ``budget/rounds`` items form round 1; by
            default round 1 is the top items under ``u0``.
        """
        rounds = check_int(rounds, "rounds", minimum=1)
        budget, k = check_budget(budget, k, self.n_items, rounds=rounds)
        u = as_float32_array(u0, "u0", ndim=(1,), dim=self.dim).astype(np.float64)
        sizes = round_sizes(budget, rounds)
        acc = ScoreLedger(q, ce, k)
        for r, n_r in enumerate(sizes):
            t0 = time.perf_counter()
            if r == 0 and init is not None:
                init = as_ids(init, "init", self.n_items)
                new = init[np.sort(np.unique(init, return_index=True)[1])][:n_r]
                if new.size < n_r:
                    raise ValueError(f"init must hold at least {n_r} distinct ids (budget/rounds), got {new.size}")
            else:
                new = top_ids((self.item_emb @ u.astype(np.float32)), n_r, acc.all_ids if r else None)
            t1 = time.perf_counter()
            acc.score(new, seconds_search=t1 - t0)
            ids, targets = acc.all_ids, acc.all_scores.astype(np.float64)
            if self.normalization is not None:
                targets = self.normalization[1] * (targets - self.normalization[0])
            _, grad = tour_loss_and_grad(u, self.item_emb[ids], targets, self.loss)
            u = u - self.lr * grad
            fit = self.item_emb[ids].astype(np.float64) @ u - targets
            acc.rounds[-1].fit_rmse = float(np.sqrt(np.mean(fit * fit)))
            acc.rounds[-1].seconds_solve = time.perf_counter() - t1
        return acc.result(u=u.astype(np.float32))
