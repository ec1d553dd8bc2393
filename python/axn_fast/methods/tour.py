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
from typing import Any, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._validation import as_float32_array, as_ids, check_float, check_int
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.search.budget import check_budget, first_round, round_sizes
from axn_fast.search.index import Index
from axn_fast.search.ledger import ScoreLedger
from axn_fast.search.normalization import NormalizationLike, as_normalization
from axn_fast.search.protocol import VectorIndex
from axn_fast.search.results import SearchResult

LOSSES = ("kl", "mse")
DEFAULT_LR = {"kl": 0.1, "mse": 1e-3}
#: The learning rates the TOUR paper chose from per dataset (the default first, so that it wins ties).
LR_GRID = {"kl": (0.1, 0.5, 1.0), "mse": (1e-3, 1e-2, 1e-4)}


def _softmax(x: NDArray[np.float64]) -> NDArray[np.float64]:
    z = np.exp(x - x.max())
    return z / z.sum()


def tour_loss_and_grad(u: ArrayLike, V_A: ArrayLike, a: ArrayLike, loss: str) -> Tuple[float, NDArray[np.float64]]:
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
        item_emb: (n_items, d) item embeddings (e.g. from a dual encoder), or any
            :class:`~axn_fast.search.protocol.VectorIndex` over them; each round
            retrieves through its ``search`` (the C++ kernel for an array).
        loss: ``"kl"`` or ``"mse"``.
        lr: learning rate of the one gradient step per round; default 0.1 for KL, 1e-3 for MSE.
        normalization: optional :class:`~axn_fast.search.normalization.ScoreNormalization` or
            (alpha, beta): the loss compares ``s`` with ``beta * (a - alpha)``, the CE scores
            brought to the embedding space's scale as for AXN (AXN paper, A.4); rankings and
            returned scores are unchanged.
    """

    def __init__(self, item_emb: Union[ArrayLike, VectorIndex], *, loss: str = "kl", lr: Optional[float] = None,
                 normalization: NormalizationLike = None) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if isinstance(item_emb, VectorIndex):
            self.index: VectorIndex = item_emb
        else:
            self.index = Index(as_float32_array(item_emb, "item_emb", ndim=(2,), allow_empty=False))
        self.n_items, self.dim = self.index.n_items, self.index.dim
        self.loss = loss
        self.lr = DEFAULT_LR[loss] if lr is None else check_float(lr, "lr", minimum=0.0)
        self.normalization = as_normalization(normalization)

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, u0: ArrayLike, k: int = 10, rounds: int = 5,
               init: Optional[ArrayLike] = None, lr: Optional[float] = None) -> SearchResult:
        """Search for query ``q`` starting from its embedding ``u0`` (d,).

        lr: learning rate of this search (default: the one given at construction).

        init: ranked candidate ids, best first; the first ``budget/rounds`` distinct ones
            form round 1, and when there are fewer, the rest are the top items under ``u0``
            (the same meaning as for AXN and ADACUR). Without it, round 1 is the top
            items under ``u0``.
        """
        rounds = check_int(rounds, "rounds", minimum=1)
        step = self.lr if lr is None else check_float(lr, "lr", minimum=0.0)
        budget, k = check_budget(budget, k, self.n_items, rounds=rounds)
        u = as_float32_array(u0, "u0", ndim=(1,), dim=self.dim).astype(np.float64)
        init_ids = None if init is None else as_ids(init, "init", self.n_items)
        sizes = round_sizes(budget, rounds)
        acc = ScoreLedger(q, ce, k)
        rows = np.zeros((0, self.dim), dtype=np.float32)
        for r, n_r in enumerate(sizes):
            t0 = time.perf_counter()
            u32 = u.astype(np.float32)
            if r == 0:
                new = first_round(n_r, init_ids,
                                  lambda chosen, need: self.index.search(u32, need, exclude=chosen)[1])
            else:
                new = self.index.search(u32, n_r, exclude=acc.all_ids)[1]
                new = new[new >= 0]
            t1 = time.perf_counter()
            acc.score(new, seconds_search=t1 - t0)
            rows = np.concatenate([rows, self.index.vectors_of(new)])
            targets = acc.all_scores.astype(np.float64)
            if self.normalization is not None:
                targets = self.normalization.targets(targets, dtype=np.float64)
            _, grad = tour_loss_and_grad(u, rows, targets, self.loss)
            u = u - step * grad
            fit = rows.astype(np.float64) @ u - targets
            acc.rounds[-1].fit_rmse = float(np.sqrt(np.mean(fit * fit)))
            acc.rounds[-1].seconds_solve = time.perf_counter() - t1
        return acc.result(u=u.astype(np.float32))

    @property
    def item_emb(self) -> NDArray[np.float32]:
        """(n_items, d) float32 item embeddings (fetched from the index)."""
        return self.index.vectors_of(np.arange(self.n_items))
